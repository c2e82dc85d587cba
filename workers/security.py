"""Message signing for a cluster that spans hosts (docs/CLUSTER.md, "Signed task messages"): with
CELERY_SECURITY_* set, every task message this process sends is signed with its key (Celery's `auth`
serializer, JSON inside) and a worker runs only messages signed by a certificate in its store."""

from __future__ import annotations

from typing import Any

from app.errors import ConfigurationError
from app.settings import Settings

#: Serializers left enabled besides `auth` (registered by setup_security itself): JSON, for results,
#: events and remote control, which Celery does not sign; accept_content keeps unsigned tasks out.
ALLOWED_SERIALIZERS = ["json"]


def setup_signing(app: Any, settings: Settings) -> None:
    """Sign and verify task messages when CELERY_SECURITY_* are set; a file that cannot be read stops
    start-up with the variable's name."""
    if not settings.message_signing:
        return
    for name, path in (
        ("CELERY_SECURITY_KEY", settings.celery_security_key),
        ("CELERY_SECURITY_CERTIFICATE", settings.celery_security_certificate),
    ):
        if path is None or not path.is_file():
            raise ConfigurationError(
                f"{name}: no file {path}", hint="give the path of a PEM file this process can read"
            )
    try:
        app.setup_security(allowed_serializers=ALLOWED_SERIALIZERS)
    except Exception as exc:  # a bad PEM, a wrong password, an expired or duplicate certificate
        raise ConfigurationError(
            f"message signing could not be set up: {exc.__class__.__name__}: {exc}",
            hint="check CELERY_SECURITY_KEY, _KEY_PASSWORD, _CERTIFICATE and _CERT_STORE (PEM, RSA, unexpired)",
        ) from None
