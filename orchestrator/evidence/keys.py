"""Key material of signing environments, read from the repo (public keys) and from the
environment variable of the job (private key). Every problem is a UsageError (exit 2) that
names the file or the variable, never the key itself."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.core.config import EnvironmentConfig
from orchestrator.core.errors import UsageError

if TYPE_CHECKING:  # cryptography is imported only where an environment signs
    from orchestrator.core import signing

PEM_MARK = "-----BEGIN"


@dataclass(frozen=True)
class Signer:
    """The private key of one environment, checked against its committed public key."""

    env: str
    key: signing.PrivateKey
    keyid: str


def public_keys(env: EnvironmentConfig, project_dir: Path) -> tuple[signing.PublicKey, ...] | None:
    """The environment's public key, then its previous keys; None where it does not sign."""
    if env.signing is None:
        return None
    paths = [env.signing.public_key, *env.signing.previous_keys]
    return tuple(_read_public_key(env, project_dir / path) for path in paths)


def _read_public_key(env: EnvironmentConfig, path: Path) -> signing.PublicKey:
    from orchestrator.core import signing

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(
            f"{env.source}: the public key {path} of {env.name!r} cannot be read "
            f"({exc.strerror or exc}). Create it with `orchestrator keys generate {env.name}` "
            "and commit it."
        ) from None
    try:
        return signing.load_public_key(data)
    except signing.KeyMaterialError as exc:
        raise UsageError(
            f"{env.source}: {path} (signing key of {env.name!r}) is {exc}; expected the PEM "
            "file that `orchestrator keys generate` writes."
        ) from None


def load_signer(
    env: EnvironmentConfig, environ: Mapping[str, str], project_dir: Path
) -> Signer | None:
    """The private key from `signing.key_env`, or a UsageError naming that variable.

    Called before a run writes anything: a signing environment never writes unsigned
    evidence, and never evidence signed by a key its public key does not vouch for."""
    if env.signing is None:
        return None
    from orchestrator.core import signing

    variable = env.signing.key_env
    where = f"{env.name!r} signs its ledger and audit trail (signing.key_env in {env.source})"
    key = read_private_key(variable, environ, project_dir, where)
    keys = public_keys(env, project_dir) or ()
    if not signing.same_key(key, keys[0]):
        raise UsageError(
            f"{where}, but the private key in {variable} does not match its public key "
            f"{env.signing.public_key}: it is not {env.name}'s key. Nothing was written."
        )
    return Signer(env.name, key, signing.keyid(keys[0]))


def read_private_key(
    variable: str, environ: Mapping[str, str], project_dir: Path, where: str
) -> signing.PrivateKey:
    """The Ed25519 private key in `variable` (PEM text, or the path of a PEM file), or a
    UsageError that starts with `where` and names the variable, never the key."""
    from orchestrator.core import signing

    value = (environ.get(variable) or "").strip()
    if not value:
        raise UsageError(
            f"{where}, but the variable {variable} is not set. Set {variable} to its private "
            "key (PEM text, or the path of a PEM file); nothing was written."
        )
    if value.startswith(PEM_MARK):
        data = value.encode()
    else:
        path = Path(value)
        path = path if path.is_absolute() else project_dir / path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"{where}, but the variable {variable} names a file that cannot be read "
                f"({path}: {exc.strerror or exc}). It must hold the private key as PEM text "
                "or the path of a PEM file; nothing was written."
            ) from None
    try:
        return signing.load_private_key(data)
    except signing.KeyMaterialError as exc:
        raise UsageError(
            f"{where}, but the variable {variable} holds {exc} (expected an unencrypted "
            "Ed25519 key in PEM form, as `orchestrator keys generate` writes); nothing was "
            "written."
        ) from None


def write_key_pair(
    name: str, out_dir: Path, private_out: Path | None, force: bool
) -> tuple[Path, bytes | None, str]:
    """Write NAME.pub (and the private key to `private_out`, mode 0600). Returns the public
    key's path, the private PEM when it is for stdout, and the key id. Nothing is written
    when a file exists and `force` is not given."""
    from orchestrator.core import signing

    public_path = out_dir / f"{name}.pub"
    for path in (public_path, private_out):
        if path is not None and path.exists() and not force:
            raise UsageError(
                f"{path} exists: keys are never overwritten without --force (a replaced "
                "public key orphans every signature made with the old one: list it under "
                "signing.previous_keys)."
            )
        if path is not None and path.is_dir():
            raise UsageError(f"{path} is a directory, not a key file.")
    private_pem, public_pem = signing.generate()
    keyid = signing.keyid(signing.load_public_key(public_pem))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if private_out is not None:
            private_out.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(private_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an existing file (--force) keeps no looser mode
                os.write(fd, private_pem)
            finally:
                os.close(fd)
        public_path.write_bytes(public_pem)
    except OSError as exc:
        raise UsageError(
            f"Cannot write the key pair: {exc.strerror or exc} ({exc.filename})."
        ) from None
    return public_path, None if private_out is not None else private_pem, keyid
