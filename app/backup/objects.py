"""The temporary objects one backup passes between its steps (docs/FORMAT.md, kind `units`):
`<id>.plan` (what needs no reading), `<id>.in<N>` (the files unit N reads), `<id>.out<N>` (what it
stored), `<id>.extra` (what a source kind adds at its end: PostgreSQL's pg_control, backup label and
WAL positions). Sealed like every object; deleted once the manifest is durable."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.repo.format import Kind, ObjectType
from app.repo.repository import Repository


def plan_name(backup_id: str) -> str:
    return f"{backup_id}.plan"


def input_name(backup_id: str, number: int) -> str:
    return f"{backup_id}.in{number:05d}"


def output_name(backup_id: str, number: int) -> str:
    return f"{backup_id}.out{number:05d}"


def extra_name(backup_id: str) -> str:
    return f"{backup_id}.extra"


def write(repo: Repository, name: str, doc: dict[str, Any]) -> None:
    repo.write_json(Kind.UNITS, name, ObjectType.UNIT_RESULT, doc)


def read(repo: Repository, name: str) -> dict[str, Any]:
    return repo.read_json(Kind.UNITS, name, ObjectType.UNIT_RESULT)


#: Objects deleted at once: each delete is a round trip (a DELETE on S3, an unlink and a directory fsync
#: locally) on the serial stretch at the end of a backup; deleted together, a local file system commits
#: their fsyncs in one journal commit.
DELETERS = 4


def delete_all(repo: Repository, backup_id: str) -> None:
    names = [info.name for info in repo.storage.list(Kind.UNITS, prefix=f"{backup_id}.")]
    if len(names) <= 1:
        for name in names:
            repo.storage.delete(Kind.UNITS, name)
        return
    with ThreadPoolExecutor(min(DELETERS, len(names)), thread_name_prefix="unit-delete") as pool:
        for done in [pool.submit(repo.storage.delete, Kind.UNITS, name) for name in names]:
            done.result()
