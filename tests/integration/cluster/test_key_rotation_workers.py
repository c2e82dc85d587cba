"""A key rotation while workers run (docs/KEYS.md): a worker that sealed with the old data key seals the
next backup with the new one, without a restart, and a worker that lacks the new master key refuses to
seal rather than go on with the retired key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.repo.crypto import envelope_key_id
from app.repo.keys import MasterKey
from app.system import BackupSystem
from tests.support.cluster import Cluster
from tests.support.trees import assert_same_tree, flat_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def sealing_keys(system: BackupSystem, packs: set[str]) -> set[str]:
    """The data key ids that sealed the chunks of `packs`."""
    repo = system.context.repository
    return {
        envelope_key_id(repo.read_blob(pack, entry.offset, entry.length)).hex()
        for pack in packs
        for entry in repo.read_pack_index(pack)
    }


def pack_names(system: BackupSystem) -> set[str]:
    return {info.name for info in system.context.repository.list_packs()}


def test_a_running_worker_seals_with_the_rotated_data_key(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tasks.backup import run_backup

    # The workers read the master key from a file, which the operator replaces after the rotation.
    key_file = tmp_path / "master.key"
    MasterKey.from_hex(cluster.env.pop("BACKUP_ENCRYPTION_KEY"), origin="test").write_file(key_file)
    cluster.env["BACKUP_ENCRYPTION_KEY_FILE"] = str(key_file)
    monkeypatch.delenv("BACKUP_ENCRYPTION_KEY")
    monkeypatch.setenv("BACKUP_ENCRYPTION_KEY_FILE", str(key_file))
    src = flat_tree(tmp_path / "src", files=3, mib=1)
    cluster.start_worker("w1")
    with BackupSystem() as system:
        system.add_source("docs", src)
        old_key = system.context.repository.keyring.current_key_id.hex()
    first = run_backup.delay("docs", "full").get(timeout=120)
    assert first["state"] == "complete", cluster.logs()

    new_file = tmp_path / "new.key"
    new = MasterKey.generate()
    new.write_file(new_file)
    with BackupSystem() as system:
        before = pack_names(system)
        new_key = system.rotate_keys(
            new, new_key_origin=f"file {new_file}"
        ).repository.keyring.current_key_id.hex()
    assert new_key != old_key
    os.replace(new_file, key_file)

    (src / "changed.bin").write_bytes(os.urandom(300_000))
    second = run_backup.delay("docs", "incremental").get(timeout=120)
    assert second["state"] == "complete", cluster.logs()
    with BackupSystem() as system:
        written = pack_names(system) - before
        assert written, "the second backup wrote no pack"
        assert sealing_keys(system, written) == {new_key}, "the worker sealed with the retired data key"
        assert system.context.repository.read_manifest(second["backup_id"])["backup"]["key_id"] == new_key
        for number, outcome in enumerate((first, second)):
            system.restore(outcome["backup_id"], tmp_path / f"out{number}")
    assert_same_tree(src, tmp_path / "out1")

    # The master key rotated again, and the worker's key file not updated: it refuses to seal.
    with BackupSystem() as system:
        system.rotate_keys(MasterKey.generate())
    (src / "again.bin").write_bytes(os.urandom(1000))
    refused = run_backup.delay("docs", "incremental")
    with pytest.raises(Exception, match="this process does not hold"):
        refused.get(timeout=120)
