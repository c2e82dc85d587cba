"""The effective configuration in the audit trail (docs/AUDIT.md section 6): a fingerprint per setting,
recorded when a process (the CLI, a worker) first opens the catalog with a configuration different from
the last one its kind recorded. A secret (a key, a password, a token, a URL with a password) is recorded
only as a salted scrypt hash and reported as "set", "unset" or "changed", never by value."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.catalog import audit
from app.catalog.models import AuditEntry
from app.settings import Settings

log = logging.getLogger(__name__)

RECORDED, CHANGED = "config.recorded", "config.changed"
#: Settings that say who runs the process, not how the system is configured: never compared.
IDENTITY = frozenset({"DR_ACTOR"})
#: Memory-hard and salted, so a recorded hash does not give a weak password away cheaply; ~10 ms each.
SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES = 2**12, 8, 1, 16
SECRET_PREFIX = "scrypt:"


def _plain(value: Any) -> str | None:
    """A setting's value as the trail shows it (None for unset)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def _has_password(value: str) -> bool:
    """A URL (or several, comma-separated) that carries a password in its user part."""
    for part in value.split(","):
        url = part.partition("=")[2] if "://" not in part.split("=", 1)[0] and "=" in part else part
        if "://" not in url:
            continue
        try:
            if urlsplit(url.strip()).password:
                return True
        except ValueError:
            return True  # unparsable: treated as secret rather than recorded
    return False


def _secret_hash(name: str, value: str, salt: str) -> str:
    digest = hashlib.scrypt(
        value.encode(),
        salt=bytes.fromhex(salt) + name.encode(),
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        dklen=HASH_BYTES,
    )
    return SECRET_PREFIX + digest.hex()


def fingerprints(settings: Settings, salt: str) -> dict[str, str | None]:
    """Every setting by its variable's name: the value, or for a secret its salted hash (None: unset)."""
    result: dict[str, str | None] = {}
    for field in sorted(type(settings).model_fields):
        name = field.upper()
        if name in IDENTITY:
            continue
        raw = getattr(settings, field)
        secret = isinstance(raw, SecretStr)
        value = _plain(raw.get_secret_value() if secret else raw)
        if value is not None and (secret or _has_password(value)):
            result[name] = _secret_hash(name, value, salt)
        else:
            result[name] = value
    return result


def _is_secret(fingerprint: str | None) -> bool:
    return fingerprint is not None and fingerprint.startswith(SECRET_PREFIX)


def describe_change(old: str | None, new: str | None) -> dict[str, str | None] | str:
    """Old and new values of a setting; for a secret (either side hashed) only what happened."""
    if _is_secret(old) or _is_secret(new):
        return "set" if old is None else "unset" if new is None else "changed"
    return {"old": old, "new": new}


def last_recorded(session: Session, process: str) -> dict[str, Any] | None:
    """The detail of the newest configuration entry of this kind of process (an indexed lookup)."""
    return session.scalar(
        select(AuditEntry.detail)
        .where(AuditEntry.action.in_((RECORDED, CHANGED)), AuditEntry.object == process)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )


def record_configuration(
    session: Session, settings: Settings, process: str, actor: str | None = None
) -> AuditEntry | None:
    """Append `config.recorded` (the first time this kind of process runs) or `config.changed` (naming
    each setting that differs from the last recorded configuration); nothing when it is the same."""
    if session.get_bind().dialect.name == "postgresql":
        # The audit writers' lock, taken before reading: worker processes starting together record once.
        session.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
    last = last_recorded(session, process)
    if last is None:
        salt = secrets.token_hex(16)
        current = fingerprints(settings, salt)
        return audit.append(session, RECORDED, process, {"salt": salt, "settings": current}, actor)
    salt = str(last["salt"])
    before: dict[str, str | None] = last.get("settings", {})
    current = fingerprints(settings, salt)
    changed = {
        name: describe_change(before.get(name), current.get(name))
        for name in sorted(before.keys() | current.keys())
        if name not in IDENTITY and before.get(name) != current.get(name)
    }
    if not changed:
        return None
    log.warning("configuration of %s changed since it was last recorded: %s", process, ", ".join(changed))
    return audit.append(
        session, CHANGED, process, {"changed": changed, "salt": salt, "settings": current}, actor
    )
