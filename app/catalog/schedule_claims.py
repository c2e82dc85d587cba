"""Claims of scheduled ticks: the first claim of (job, slot) wins, so two beats run a job once."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app import clock
from app.catalog.db import transaction
from app.catalog.models import ScheduleClaim


def claim(factory: sessionmaker[Session], job: str, at_slot: str) -> bool:
    """True for the first claim of `job` in `at_slot`, False for every later one."""
    try:
        with transaction(factory) as session:
            session.add(ScheduleClaim(key=f"{job}@{at_slot}", claimed_at=clock.now()))
        return True
    except IntegrityError:
        return False
