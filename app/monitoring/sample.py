"""One metric sample: a name, its help text, the component it belongs to, labels and a value (None
when there is nothing to measure yet)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    name: str
    help: str
    component: str
    value: float | None
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
