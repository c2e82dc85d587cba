"""One alert: what a channel is asked to say about an incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

#: What an alert says about its incident.
OPEN, ESCALATE, RESOLVE, TEST = "open", "escalate", "resolve", "test"


@dataclass(frozen=True)
class Alert:
    action: str  # open | escalate | resolve | test
    key: str  # the condition key: one incident per key until it clears
    condition: str
    severity: str  # warning | critical (a resolve keeps the incident's severity)
    source: str | None
    message: str
    opened_at: datetime

    @property
    def title(self) -> str:
        verb = {OPEN: "", ESCALATE: "escalated: ", RESOLVE: "resolved: ", TEST: "test: "}[self.action]
        where = f" ({self.source})" if self.source else ""
        return f"[equisplit-dr] {verb}{self.severity.upper()} {self.condition}{where}"

    @property
    def text(self) -> str:
        if self.action == RESOLVE:
            return f"{self.title}: the condition has cleared. It was: {self.message}"
        return f"{self.title}: {self.message}"


class Channel(Protocol):
    """A way to tell people: `send` delivers one alert or raises AlertDeliveryError (naming the channel
    and the answer, never a secret)."""

    name: str

    def send(self, alert: Alert) -> None: ...
