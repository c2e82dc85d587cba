"""Connection checks of the runbook (`backup test-connection`): storage written, read back and deleted;
the catalog answering and migrated; the broker answering; each PostgreSQL source reachable and
archiving. Each probe is bounded by HEALTH_CHECK_TIMEOUT and says what failed and what to do."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import text

from app.catalog.db import require_migrated
from app.catalog.sources import list_sources
from app.context import Context
from app.errors import EquisplitError, first_line
from app.storage.url import redact_url


@dataclass
class Probe:
    name: str
    ok: bool | None  # None: not configured, nothing to check
    seconds: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "seconds": round(self.seconds, 3), "detail": self.detail}


#: The storage kind the round trip writes its probe object under (never a repository object's kind).
PROBE_KIND = "locks"


def test_connections(ctx: Context) -> list[Probe]:
    probes = [_timed("storage", lambda: _storage(ctx)), _timed("catalog", lambda: _catalog(ctx))]
    probes.append(_timed("keys", lambda: _keys(ctx)))
    probes.append(_timed("broker", lambda: _broker(ctx)))
    try:
        with ctx.sessions() as session:
            pg_sources = [
                (s.name, str(s.options.get("dsn", ""))) for s in list_sources(session) if s.kind == "postgres"
            ]
    except EquisplitError:
        pg_sources = []
    for name, dsn in pg_sources:
        probes.append(_timed(f"postgres:{name}", lambda dsn=dsn: _postgres(ctx, dsn)))  # type: ignore[misc]
    return probes


def _timed(name: str, check: Callable[[], tuple[bool | None, str]]) -> Probe:
    began = time.monotonic()
    try:
        ok, detail = check()
    except EquisplitError as exc:
        ok, detail = False, exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    except Exception as exc:  # a probe reports every failure; it never raises
        ok, detail = False, f"{exc.__class__.__name__}: {first_line(exc)}"
    return Probe(name, ok, time.monotonic() - began, detail)


def _storage(ctx: Context) -> tuple[bool, str]:
    storage = ctx.storage
    name = f"probe-{secrets.token_hex(8)}"
    payload = secrets.token_bytes(4096)
    storage.put(PROBE_KIND, name, payload)
    try:
        if storage.get(PROBE_KIND, name) != payload:
            return False, f"{storage.location}: an object read back differs from what was written"
    finally:
        storage.delete(PROBE_KIND, name)
    if storage.stat(PROBE_KIND, name) is not None:
        return False, f"{storage.location}: a deleted object is still there"
    return True, f"{storage.location}: wrote, read back and deleted a 4 KiB object"


def _catalog(ctx: Context) -> tuple[bool, str]:
    with ctx.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    require_migrated(ctx.engine)
    return True, f"{redact_url(ctx.settings.catalog_url)}: answers, schema up to date"


def _keys(ctx: Context) -> tuple[bool, str]:
    repo = ctx.repository  # WrongKeyError / RepositoryError say what is wrong
    return True, f"repository {repo.id} opens with the master key"


def _broker(ctx: Context) -> tuple[bool | None, str]:
    url = ctx.settings.celery_broker_url
    if not url:
        return None, "CELERY_BROKER_URL is not set (embedded mode: no broker)"
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss"):
        return None, f"{redact_url(url)}: only Redis brokers are probed"
    import redis

    client = redis.Redis.from_url(
        url,
        socket_timeout=ctx.settings.health_check_timeout,
        socket_connect_timeout=ctx.settings.health_check_timeout,
    )
    try:
        client.ping()
    finally:
        client.close()
    return True, f"{redact_url(url)}: PING answered"


def _postgres(ctx: Context, dsn: str) -> tuple[bool, str]:
    import psycopg

    with psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=ctx.settings.health_check_timeout,
        application_name="equisplit-dr test-connection",
    ) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version'), current_setting('archive_mode'), "
            "failed_count, last_failed_wal, last_archived_wal FROM pg_stat_archiver"
        ).fetchone()
    assert row is not None
    version, archive_mode, failed, last_failed, last_archived = row
    if archive_mode == "off":
        return False, f"PostgreSQL {version}: archive_mode is off, so no WAL is archived (docs/WAL.md)"
    detail = f"PostgreSQL {version}, archive_mode {archive_mode}, last archived {last_archived or 'none yet'}"
    if failed:
        detail += f"; archive_command has failed {failed} time(s), last on {last_failed}"
    return True, detail
