"""DSSE envelopes with Ed25519: known answers (RFC 8032, the DSSE spec, OpenSSL) and the
verdicts a verifier relies on."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from orchestrator.core import signing

# RFC 8032, section 7.1, TEST 1
RFC_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
RFC_EMPTY_SIG = (
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
    "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# `openssl pkeyutl -sign -rawin` over the PAE bytes below, with the RFC key (OpenSSL 3.0)
OPENSSL_PAE_SIG = (
    "4DHX3Zn4qpBKvEj7maE8O9u9bjXEnPLLnyXVUJ2PXJR8DSLcL3QDpFvfJOj3pB/SPHsl6Jg4boxsMb6KvuYABw=="
)
# `openssl pkey -pubout -outform DER | sha256sum`
OPENSSL_KEYID = "06e3fd8fda29bb60ab59557de61edb0aecdb231134be30e75b455f8e1b792fa9"


@pytest.fixture
def rfc_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC_SECRET))


def test_pae_is_the_dsse_spec_encoding() -> None:
    # the example of the DSSE protocol document
    assert signing.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    # lengths count bytes, not characters
    assert signing.pae("t/é", b"\xff\x00") == b"DSSEv1 4 t/\xc3\xa9 2 \xff\x00"
    assert signing.pae("", b"") == b"DSSEv1 0  0 "


def test_rfc8032_key_and_signature(rfc_key: Ed25519PrivateKey) -> None:
    assert rfc_key.public_key().public_bytes_raw().hex() == RFC_PUBLIC
    assert rfc_key.sign(b"").hex() == RFC_EMPTY_SIG


def test_envelope_known_answer(rfc_key: Ed25519PrivateKey) -> None:
    envelope = signing.sign("http://example.com/HelloWorld", b"hello world", rfc_key)
    assert envelope == {
        "payloadType": "http://example.com/HelloWorld",
        "payload": base64.b64encode(b"hello world").decode(),
        "signatures": [{"keyid": OPENSSL_KEYID, "sig": OPENSSL_PAE_SIG}],
    }
    verdict = signing.verify(json.dumps(envelope), [rfc_key.public_key()])
    assert verdict.valid and verdict.payload == b"hello world"
    assert verdict.keyids == (OPENSSL_KEYID,)


def test_any_change_to_the_envelope_breaks_it(rfc_key: Ed25519PrivateKey) -> None:
    keys = [rfc_key.public_key()]
    envelope = signing.sign("t", b'{"checksum":"aa"}', rfc_key)
    assert signing.verify(envelope, keys).valid
    forged_payload = {**envelope, "payload": base64.b64encode(b'{"checksum":"bb"}').decode()}
    assert not signing.verify(forged_payload, keys).valid
    assert not signing.verify({**envelope, "payloadType": "u"}, keys).valid
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[0] ^= 1
    bad_sig = {**envelope, "signatures": [{"keyid": "", "sig": base64.b64encode(sig).decode()}]}
    assert not signing.verify(bad_sig, keys).valid
    assert not signing.verify({**envelope, "signatures": []}, keys).valid
    other = Ed25519PrivateKey.generate().public_key()
    assert not signing.verify(envelope, [other]).valid
    assert signing.verify(envelope, [other, rfc_key.public_key()]).valid  # rotation: any key
    assert not signing.verify(envelope, keys, payload_type="other").valid


@pytest.mark.parametrize("junk", ["", "{}", "[1]", "null", b"\xff", '{"payloadType":1}'])
def test_junk_is_a_verdict_not_an_exception(junk: str | bytes) -> None:
    verdict = signing.verify(junk, [Ed25519PrivateKey.generate().public_key()])
    assert not verdict.valid and verdict.reason


def test_keyid_is_a_hint_not_a_filter(rfc_key: Ed25519PrivateKey) -> None:
    envelope = signing.sign("t", b"x", rfc_key)
    envelope["signatures"][0]["keyid"] = "someone-else"
    assert signing.verify(envelope, [rfc_key.public_key()]).valid


def test_a_second_signature_is_added_over_the_same_payload(rfc_key: Ed25519PrivateKey) -> None:
    approver = Ed25519PrivateKey.generate()
    envelope = signing.add_signature(signing.sign("t", b"plan", rfc_key), approver)
    assert len(envelope["signatures"]) == 2
    verdict = signing.verify(envelope, [rfc_key.public_key(), approver.public_key()])
    assert set(verdict.keyids) == {
        signing.keyid(rfc_key.public_key()),
        signing.keyid(approver.public_key()),
    }


def test_generated_pems_round_trip_and_junk_keys_are_refused_without_echo() -> None:
    private, public = signing.generate()
    key = signing.load_private_key(private)
    assert signing.same_key(key, signing.load_public_key(public))
    assert not signing.same_key(key, signing.load_public_key(signing.generate()[1]))
    with pytest.raises(signing.KeyMaterialError) as caught:
        signing.load_private_key(b"-----BEGIN PRIVATE KEY-----\nsecretstuff\n")
    assert "secretstuff" not in str(caught.value)
    with pytest.raises(signing.KeyMaterialError):
        signing.load_private_key(public)
    with pytest.raises(signing.KeyMaterialError):
        signing.load_public_key(private)


def test_a_remembered_verdict_never_outlives_a_change_of_text_or_keys(
    rfc_key: Ed25519PrivateKey,
) -> None:
    """Verdicts on envelope text are remembered (the gate judges the same rows twice): an
    attacker's edit of one byte, or the same text checked against another key, is judged
    anew."""
    other = Ed25519PrivateKey.generate()
    text = json.dumps(signing.sign("t/x", b'{"revision":"a"}', rfc_key))
    for _ in range(2):  # the second call is answered from memory, with the same verdict
        assert signing.verify(text, [rfc_key.public_key()], "t/x").valid
    envelope = json.loads(text)
    envelope["payload"] = base64.b64encode(b'{"revision":"b"}').decode()
    assert not signing.verify(json.dumps(envelope), [rfc_key.public_key()], "t/x").valid
    assert not signing.verify(text, [other.public_key()], "t/x").valid
    assert not signing.verify(text, [rfc_key.public_key()], "t/y").valid
    forged = json.loads(text)
    forged["signatures"][0]["sig"] = base64.b64encode(other.sign(b"x")).decode()
    assert not signing.verify(json.dumps(forged), [rfc_key.public_key()], "t/x").valid
    # a new key object each time (as a reloaded key is) gives the same key id
    assert signing.keyid(rfc_key.public_key()) == signing.keyid(rfc_key.public_key())
