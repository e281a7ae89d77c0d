"""DSSE envelopes (the in-toto signing envelope) with Ed25519 keys: sign, verify, keys.

Pure: bytes and keys in, an envelope or a verdict out; nothing here reads a file or a
variable. The signature covers PAE(payloadType, payload), never re-serialised JSON, so what
was signed is exactly the payload bytes carried (base64) in the envelope.
Spec: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md

    envelope = sign("application/vnd.example+json", b'{"a":1}', private_key)
    verdict = verify(envelope, [public_key])      # verdict.valid, verdict.payload, ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PrivateKey = Ed25519PrivateKey
PublicKey = Ed25519PublicKey


class KeyMaterialError(ValueError):
    """Key material that is not an Ed25519 key in PEM form (the message never holds it)."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's Pre-Authentication Encoding: what the signature is computed over."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def keyid(public_key: PublicKey) -> str:
    """sha256 (hex) of the key's DER SubjectPublicKeyInfo: stable, and computable by others
    (`openssl pkey -pubin -outform DER | sha256sum`)."""
    return _remembered(public_key, lambda: _der_keyid(public_key))


def _der_keyid(public_key: PublicKey) -> str:
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


# A run signs and verifies a row per revision with the same few keys: each key's id is
# computed once. Keyed by id() with the key itself held, so that id cannot be reused.
_KEYIDS: dict[int, tuple[object, str]] = {}


def _remembered(key: object, compute: Callable[[], str]) -> str:
    known = _KEYIDS.get(id(key))
    if known is not None and known[0] is key:
        return known[1]
    value = compute()
    if len(_KEYIDS) < 256:
        _KEYIDS[id(key)] = (key, value)
    return value


def sign(payload_type: str, payload: bytes, private_key: PrivateKey) -> dict[str, Any]:
    """A DSSE envelope over `payload`, with one signature by `private_key`."""
    signature = private_key.sign(pae(payload_type, payload))
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {
                "keyid": _remembered(private_key, lambda: keyid(private_key.public_key())),
                "sig": base64.b64encode(signature).decode("ascii"),
            }
        ],
    }


def add_signature(envelope: Mapping[str, Any], private_key: PrivateKey) -> dict[str, Any]:
    """The same envelope with one more signature (e.g. an approval) over the same payload."""
    payload = base64.b64decode(envelope["payload"], validate=True)
    extra = sign(envelope["payloadType"], payload, private_key)["signatures"]
    return {**envelope, "signatures": [*envelope.get("signatures", []), *extra]}


@dataclass(frozen=True)
class Verdict:
    valid: bool
    payload_type: str | None = None
    payload: bytes | None = None  # set only when valid
    keyids: tuple[str, ...] = ()  # keys (of those given) whose signature verified
    reason: str | None = None  # why not valid

    def payload_json(self) -> Any:
        return json.loads(self.payload) if self.payload is not None else None


def verify(
    envelope: Mapping[str, Any] | str | bytes,
    public_keys: Sequence[PublicKey],
    payload_type: str | None = None,
) -> Verdict:
    """Whether at least one signature of `envelope` verifies with one of `public_keys`
    (and, when given, the envelope carries `payload_type`). Never raises on bad input.
    The verdict on the same text with the same keys is remembered: the gate judges the
    predecessor's rows before the lock and again under it."""
    if not isinstance(envelope, str | bytes):
        return _verify(envelope, public_keys, payload_type)
    memo = (envelope, payload_type, tuple(keyid(key) for key in public_keys))
    verdict = _VERDICTS.get(memo)
    if verdict is None:
        if len(_VERDICTS) >= 20_000:  # a few MB of envelopes at most
            _VERDICTS.clear()
        verdict = _VERDICTS[memo] = _verify(envelope, public_keys, payload_type)
    return verdict


_VERDICTS: dict[tuple[str | bytes, str | None, tuple[str, ...]], Verdict] = {}


def _verify(
    envelope: Mapping[str, Any] | str | bytes,
    public_keys: Sequence[PublicKey],
    payload_type: str | None,
) -> Verdict:
    try:
        if isinstance(envelope, str | bytes):
            envelope = json.loads(envelope)
        assert isinstance(envelope, Mapping)
        kind = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = list(envelope["signatures"])
        if not isinstance(kind, str):
            raise TypeError("payloadType")
    except (ValueError, KeyError, TypeError, AssertionError, binascii.Error):
        return Verdict(False, reason="not a DSSE envelope")
    if payload_type is not None and kind != payload_type:
        return Verdict(False, kind, reason=f"payload type {kind!r}, expected {payload_type!r}")
    message = pae(kind, payload)
    by_id = {keyid(key): key for key in public_keys}
    good: list[str] = []
    for entry in signatures:
        try:
            sig = base64.b64decode(entry["sig"], validate=True)
            wanted = entry.get("keyid") or ""
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            continue
        # a keyid is a hint: with none (or an unknown one) every given key is tried
        candidates = [by_id[wanted]] if wanted in by_id else list(by_id.values())
        for key in candidates:
            try:
                key.verify(sig, message)
            except InvalidSignature:
                continue
            good.append(keyid(key))
            break
    if not good:
        return Verdict(False, kind, reason="no signature verifies with the given key(s)")
    return Verdict(True, kind, payload, tuple(dict.fromkeys(good)))


# -- keys --------------------------------------------------------------------------------


def generate() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair: (private key PEM, PKCS#8 unencrypted; public key PEM)."""
    private = Ed25519PrivateKey.generate()
    return private_pem(private), public_pem(private.public_key())


def private_pem(private_key: PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):  # never echo the material: it is a secret
        raise KeyMaterialError("not an unencrypted PEM private key") from None
    except Exception:  # cryptography's UnsupportedAlgorithm and friends
        raise KeyMaterialError("not a supported PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyMaterialError("not an Ed25519 private key")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except Exception:
        raise KeyMaterialError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyMaterialError("not an Ed25519 public key")
    return key


def same_key(private_key: PrivateKey, public_key: PublicKey) -> bool:
    return keyid(private_key.public_key()) == keyid(public_key)
