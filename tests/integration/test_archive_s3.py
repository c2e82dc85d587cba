"""The archive tier on S3 through moto's server (docs/ARCHIVE.md): an archive in DEEP_ARCHIVE after a
full backup of the same tree holds every file chunk in DEEP_ARCHIVE packs of its own; a restore before
the thaw fails cleanly naming the frozen packs; request, wait, restore is byte-identical; re-running
requests nothing again; garbage collection keeps each tier's copies while its backups need them."""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from app.archive.thaw import ThawOptions, thaw_packs
from app.catalog.models import Backup, Chunk, Verification
from app.errors import ThawPendingError
from app.gc.run import collect_garbage
from app.repo import manifest
from app.repo.format import Kind, ObjectType, Tier
from app.system import BackupSystem
from tests.support.cli import cli_env_for, run_cli
from tests.support.s3server import s3_client
from tests.support.system import Factory
from tests.support.trees import assert_same_tree, make_tree

pytestmark = pytest.mark.s3

COLD = {
    "backup_archive_storage_class": "DEEP_ARCHIVE",
    "backup_gc_grace_hours": 0,
    "backup_thaw_poll_seconds": 0.05,
}


class Bucket:
    def __init__(self, url: str, endpoint: str) -> None:
        self.name, _, rest = url[len("s3://") :].partition("/")
        self.prefix = rest.split("?")[0]
        self.client: Any = s3_client(endpoint)

    def storage_class(self, kind: str, name: str) -> str:
        head = self.client.head_object(Bucket=self.name, Key=f"{self.prefix}/{kind}/{name}")
        return str(head.get("StorageClass", "STANDARD"))

    def thaw(self, pack_id: str) -> None:
        self.client.restore_object(
            Bucket=self.name, Key=f"{self.prefix}/packs/{pack_id}", RestoreRequest={"Days": 1}
        )

    def packs(self) -> set[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=f"{self.prefix}/packs/"
        )
        return {item["Key"].rsplit("/", 1)[-1] for page in pages for item in page.get("Contents", [])}


def cold_packs_of(system: BackupSystem, backup_id: str) -> set[str]:
    entries = system.context.repository.read_manifest(backup_id)["entries"]
    ids = {c for _, chunk_ids in manifest.file_chunks(entries) for c in chunk_ids}
    with system.context.sessions() as session:
        rows = session.scalars(select(Chunk.pack_id).where(Chunk.id.in_(ids), Chunk.tier == Tier.COLD))
        return set(rows)


def delete_backup(system: BackupSystem, backup_id: str) -> None:
    """What retention does to a backup no rule keeps: its row `deleted`, then its manifest root."""
    with system.context.sessions() as session:
        session.execute(update(Backup).where(Backup.id == backup_id).values(state="deleted"))
        session.commit()
    system.context.storage.delete(Kind.MANIFESTS, backup_id)


def test_deep_archive_restores_after_the_thaw_and_gc_keeps_each_tier(
    make_system: Factory, s3_bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    key = secrets.token_hex(32)
    home = tmp_path / "home"
    # Requests off, no wait: what an operator sees before anyone asked for a thaw.
    system = make_system(home=home, key=key, storage=s3_bucket_url, backup_thaw_request=False,
                         backup_thaw_timeout=0, **COLD)  # fmt: skip
    bucket = Bucket(s3_bucket_url, s3_endpoint)
    src = make_tree(tmp_path / "src", big_mib=2, small=4)
    system.add_source("docs", src)
    full = system.create_full_backup("docs")
    archive = system.create_archive_backup("docs")

    cold = cold_packs_of(system, archive.id)
    assert cold and {bucket.storage_class(Kind.PACKS, p) for p in cold} == {"DEEP_ARCHIVE"}
    root = system.context.repository.read_json(Kind.MANIFESTS, archive.id, ObjectType.MANIFEST)
    own = {c[1] for c in root["entries"]["chunks"]}
    assert own and not own & cold and {bucket.storage_class(Kind.PACKS, p) for p in own} == {"STANDARD"}
    assert bucket.storage_class(Kind.MANIFESTS, archive.id) == "STANDARD"
    assert bucket.storage_class(Kind.KEYS, "keyring") == bucket.storage_class(Kind.CONFIG, "config") == "STANDARD"
    full_packs = bucket.packs() - cold - own
    assert full_packs and {bucket.storage_class(Kind.PACKS, p) for p in full_packs} == {"STANDARD"}

    with pytest.raises(ThawPendingError) as refused:
        system.restore(archive.id, tmp_path / "early")
    assert refused.value.exit_code == 23
    assert f"{len(cold)} of {len(cold)} cold pack(s) are not readable yet" in refused.value.message
    assert "BACKUP_THAW_REQUEST" in (refused.value.hint or "")
    assert sorted(cold)[0] in (refused.value.detail or "")
    assert not (tmp_path / "early").exists() or not any((tmp_path / "early").iterdir())

    # --request-only: the requests go out, nothing is written; a second run requests nothing again
    requesting = make_system(home=home, key=key, storage=s3_bucket_url, init=False, **COLD)
    first = requesting.restore(archive.id, tmp_path / "out", request_only=True)
    assert first.thaw is not None and first.thaw["requested"] == len(cold)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    again = requesting.restore(archive.id, tmp_path / "out", request_only=True)
    assert again.thaw == {**again.thaw, "requested": 0, "pending": []}

    plan = requesting.restore(archive.id, tmp_path / "out")
    assert plan.thaw is not None and plan.thaw["pending"] == []
    assert_same_tree(src, tmp_path / "out")

    # GC: the full goes, its standard packs with it; the archive still restores from its own packs
    delete_backup(requesting, full.id)
    for _ in range(2):  # mark, then sweep
        collect_garbage(requesting.context, confirm=True, actor="test")
    assert not bucket.packs() & full_packs
    assert cold <= bucket.packs()
    requesting.restore(archive.id, tmp_path / "again")
    assert_same_tree(src, tmp_path / "again")

    # and the other way round: a new full, then the archive goes with its cold packs
    newer = requesting.create_full_backup("docs")
    delete_backup(requesting, archive.id)
    for _ in range(2):
        collect_garbage(requesting.context, confirm=True, actor="test")
    assert not bucket.packs() & cold
    assert {bucket.storage_class(Kind.PACKS, p) for p in bucket.packs()} == {"STANDARD"}
    requesting.restore(newer.id, tmp_path / "full")
    assert_same_tree(src, tmp_path / "full")


def test_the_wait_ends_when_someone_else_thaws_the_packs(
    make_system: Factory, s3_bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """With requests off, the wait polls until the packs are readable (here an operator restores them
    by hand once the first poll has seen them frozen), reporting progress."""
    system = make_system(storage=s3_bucket_url, **COLD)
    bucket = Bucket(s3_bucket_url, s3_endpoint)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=2))
    archive = system.create_archive_backup("docs")
    cold = sorted(cold_packs_of(system, archive.id))
    seen: list[tuple[int, int]] = []
    first_round = threading.Event()

    def progress(readable: int, total: int) -> None:
        seen.append((readable, total))
        first_round.set()

    def operator() -> None:
        first_round.wait(30)
        for pack_id in cold:
            bucket.thaw(pack_id)

    hand = threading.Thread(target=operator)
    hand.start()
    try:
        report = thaw_packs(
            system.context.storage,
            cold,
            ThawOptions(request=False, timeout=60, poll_seconds=0.05),
            progress=progress,
        )
    finally:
        hand.join()
    assert report.requested == [] and report.pending == []
    assert seen[0] == (0, len(cold)) and seen[-1] == (len(cold), len(cold))


def test_object_lock_keeps_an_archive_from_retention_and_gc_until_its_date(
    make_system: Factory, s3_endpoint: str, tmp_path: Path
) -> None:
    """BACKUP_ARCHIVE_OBJECT_LOCK: the archive's cold packs and root are locked in compliance mode until
    its start plus the archive years; retention skips it and GC keeps its packs, each saying why."""
    client: Any = s3_client(s3_endpoint)
    name = f"lock-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)  # locked objects outlive the test
    url = f"s3://{name}/repo?endpoint_url={s3_endpoint}&region=us-east-1"
    key, home = secrets.token_hex(32), tmp_path / "home"
    system = make_system(home=home, key=key, storage=url, backup_archive_object_lock=True, **COLD)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=2))
    archive = system.create_archive_backup("docs")
    bucket = Bucket(url, s3_endpoint)
    cold = cold_packs_of(system, archive.id)
    years = system.settings.backup_retention_archive_years
    for kind, object_name in [(Kind.MANIFESTS, archive.id), *((Kind.PACKS, p) for p in cold)]:
        head = client.head_object(Bucket=name, Key=f"{bucket.prefix}/{kind}/{object_name}")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"].year == int(archive.id[:4]) + years
    root = system.context.repository.read_json(Kind.MANIFESTS, archive.id, ObjectType.MANIFEST)
    assert root["backup"]["object_lock"]["mode"] == "COMPLIANCE"
    standard = bucket.packs() - cold
    assert standard and all(
        "ObjectLockMode" not in client.head_object(Bucket=name, Key=f"{bucket.prefix}/packs/{p}") for p in standard
    )

    # A policy that no longer keeps archives: retention skips the locked one, naming the lock.
    system.create_full_backup("docs")
    shorter = make_system(home=home, key=key, storage=url, init=False, backup_retention_archive_years=0,
                          backup_retention_daily=1, backup_retention_weekly=0, backup_retention_monthly=0,
                          backup_retention_yearly=0, backup_retention_minimum=1,
                          backup_retention_keep_within_hours=0, **COLD)  # fmt: skip
    plan, applied = shorter.apply_retention(confirm=True)
    assert archive.id in [b.id for b in plan.deletions] and archive.id not in applied.deleted
    assert any(s["backup"] == archive.id and "Object Lock" in s["why"] for s in applied.skipped)

    # GC keeps the locked cold packs of an archive deleted anyway, and says so.
    delete_backup(shorter, archive.id)
    reports = [collect_garbage(shorter.context, confirm=True, actor="test") for _ in range(2)]
    assert cold <= bucket.packs()
    assert any(f"pack {sorted(cold)[0]} kept: locked by S3 Object Lock" in p for p in reports[1].problems), [(r.marked, r.deleted, r.waiting, r.problems, r.returned) for r in reports] + [sorted(cold)]


def test_gc_deletes_the_frozen_packs_of_a_deleted_archive_without_a_thaw(
    make_system: Factory, s3_bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """A DEEP_ARCHIVE pack's index cannot be read without a retrieval; once its archive is deleted and no
    archive ran at marking, the sweep deletes it all the same instead of keeping it forever."""
    system = make_system(storage=s3_bucket_url, **COLD)
    bucket = Bucket(s3_bucket_url, s3_endpoint)
    system.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=2))
    archive = system.create_archive_backup("docs")
    cold = cold_packs_of(system, archive.id)
    assert {bucket.storage_class(Kind.PACKS, p) for p in cold} == {"DEEP_ARCHIVE"}
    delete_backup(system, archive.id)
    first = collect_garbage(system.context, confirm=True, actor="test")
    assert cold <= set(first.marked)
    second = collect_garbage(system.context, confirm=True, actor="test")
    assert cold <= set(second.deleted), second.problems
    assert not bucket.packs() & cold


def test_verify_read_data_thaws_a_deep_archive_first(
    make_system: Factory, s3_bucket_url: str, s3_endpoint: str, tmp_path: Path
) -> None:
    """`verify --read-data` of an archive in DEEP_ARCHIVE requests the thaw of its cold packs, waits,
    then reads them back whole; with requests off it stops with exit 23 before reading, and the
    scheduled incremental run leaves the frozen packs for a later run instead of waiting."""
    key, home = secrets.token_hex(32), tmp_path / "home"
    waiting = make_system(home=home, key=key, storage=s3_bucket_url, backup_thaw_request=False,
                          backup_thaw_timeout=0, **COLD)  # fmt: skip
    waiting.add_source("docs", make_tree(tmp_path / "src", big_mib=1, small=2))
    archive = waiting.create_archive_backup("docs")
    with pytest.raises(ThawPendingError):
        waiting.verify_backup(archive.id, data="all")
    with waiting.context.sessions() as session:  # the run is recorded as failed, not left running
        assert list(session.scalars(select(Verification.outcome))) == ["failed"]

    cold = cold_packs_of(waiting, archive.id)
    skipped = waiting.verify_backup(archive.id)  # the scheduled (incremental) run never waits: frozen
    assert skipped.packs_read == skipped.packs_checked - len(cold)  # packs are left for a later run

    requesting = make_system(home=home, key=key, storage=s3_bucket_url, init=False, **COLD)
    report = requesting.verify_backup(archive.id, data="all")
    assert report.damaged_packs == [] and report.packs_read == report.packs_checked > 0


def test_the_cli_refuses_a_frozen_restore_with_exit_23_then_requests_and_restores(
    s3_bucket_url: str, tmp_path: Path
) -> None:
    """`restore` of a DEEP_ARCHIVE archive as a user runs it: exit 23 naming the thaw, `--request-only`
    sends the requests and writes nothing, then the restore runs."""
    src = make_tree(tmp_path / "src", big_mib=1, small=2)
    env = cli_env_for(tmp_path / "home", backup_storage_url=s3_bucket_url, backup_archive_storage_class="DEEP_ARCHIVE",
                      backup_thaw_request="false", backup_thaw_timeout=0)  # fmt: skip
    run_cli(env, "init", ok=True)
    run_cli(env, "source", "add", "docs", "--path", str(src), ok=True)
    backup = json.loads(run_cli(env, "backup", "run", "--source", "docs", "--type", "archive", "--json", ok=True).stdout)
    out = tmp_path / "out"

    refused = run_cli(env, "restore", backup["id"], "--target", str(out))
    assert refused.returncode == 23, refused.stderr
    assert "not readable yet" in refused.stderr and "BACKUP_THAW_REQUEST" in refused.stderr
    requested = run_cli(env, "restore", backup["id"], "--target", str(out), "--request-only", "--json", ok=True)
    assert json.loads(requested.stdout)["thaw"]["requested"] > 0
    assert not out.exists() or not any(out.iterdir())
    run_cli({**env, "BACKUP_THAW_REQUEST": "true"}, "restore", backup["id"], "--target", str(out), ok=True)
    assert_same_tree(src, out)
