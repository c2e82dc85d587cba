"""E-mail over SMTP to DR_ALERT_EMAILS (SMTP_HOST, SMTP_PORT, optional STARTTLS and login)."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage

from app import clock
from app.alerts.message import Alert
from app.errors import AlertDeliveryError


class SmtpChannel:
    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: list[str],
        timeout: float,
        *,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
    ) -> None:
        self._host, self._port, self._sender, self._recipients = host, port, sender, recipients
        self._timeout, self._user, self._password, self._starttls = timeout, user, password, starttls

    def send(self, alert: Alert) -> None:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = ", ".join(self._recipients)
        mail["Subject"] = alert.title
        mail["X-Equisplit-Incident"] = alert.key
        mail.set_content(
            f"{alert.text}\n\ncondition: {alert.condition}\nkey: {alert.key}\nseverity: {alert.severity}\n"
            f"source: {alert.source or '-'}\nopened: {clock.iso(alert.opened_at)}\n"
        )
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as client:
                if self._starttls:
                    client.starttls()
                if self._user and self._password:
                    client.login(self._user, self._password)
                client.send_message(mail)
        except (smtplib.SMTPException, OSError) as exc:
            code = getattr(exc, "smtp_code", None)
            raise AlertDeliveryError(
                f"email: the SMTP server {self._host}:{self._port} did not take the message "
                f"({exc.__class__.__name__}{f' {code}' if code else ''})",
                hint="check SMTP_HOST, SMTP_PORT, SMTP_USER/SMTP_PASSWORD and DR_ALERT_EMAILS",
            ) from None
