"""Walking a data directory for a base backup: PostgreSQL's exclusion list (docs/POSTGRES.md section 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.errors import SourceError
from app.sources.postgres import unlogged_forks, walk_pgdata


def make(root: Path, *paths: str) -> None:
    for rel in paths:
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 10)


def test_leaves_out_what_postgresql_says_and_keeps_the_directories(tmp_path: Path) -> None:
    data, space = tmp_path / "data", tmp_path / "space"
    make(
        data,
        "PG_VERSION", "global/pg_control", "global/1262", "global/pg_internal.init", "postgresql.conf",
        "postgresql.auto.conf", "postgresql.auto.conf.tmp", "postmaster.pid", "postmaster.opts", "backup_label",
        "tablespace_map", "backup_manifest", "current_logfiles.tmp", "pg_wal/000000010000000000000001",
        "pg_wal/archive_status/000000010000000000000001.done", "pg_replslot/s1/state", "pg_stat_tmp/x.stat",
        "pg_dynshmem/", "pg_notify/0000", "pg_serial/0000", "pg_snapshots/x", "pg_subtrans/0000", "pg_xact/0000",
        "base/5/1259", "base/5/1259_fsm", "base/5/pg_internal.init.123", "base/5/pgsql_tmp/pgsql_tmp1.0",
        "base/5/16400", "base/5/16400.1", "base/5/16400_fsm", "base/5/16400_init", "base/5/t3_16500",
        "pg_tblspc/", "log/postgresql.log",
    )  # fmt: skip
    (data / "PG_VERSION").write_text("15\n")
    make(
        space,
        "PG_15_202209061/5/16600",
        "PG_15_202209061/5/16601_init",
        "PG_15_202209061/5/16601",
        "PG_14_x/5/1",
    )
    os.symlink(space, data / "pg_tblspc" / "16599")

    walk = walk_pgdata(data)
    paths = {e.path for e in walk.entries}
    kept = {
        "PG_VERSION", "global", "global/1262", "postgresql.conf", "postgresql.auto.conf", "pg_wal",
        "pg_wal/archive_status", "pg_replslot", "pg_stat_tmp", "pg_dynshmem", "pg_notify", "pg_serial",
        "pg_snapshots", "pg_subtrans", "pg_xact", "pg_xact/0000", "base", "base/5", "base/5/1259",
        "base/5/1259_fsm", "base/5/16400_init", "pg_tblspc", "log", "log/postgresql.log",
        "pg_tblspc/16599", "pg_tblspc/16599/PG_15_202209061", "pg_tblspc/16599/PG_15_202209061/5",
        "pg_tblspc/16599/PG_15_202209061/5/16600", "pg_tblspc/16599/PG_15_202209061/5/16601_init",
    }  # fmt: skip
    assert paths == kept
    assert walk.control.path == "global/pg_control"  # read last, apart from the units
    tablespace = next(e for e in walk.entries if e.path == "pg_tblspc/16599")
    assert tablespace.type == "dir"  # stored as a directory holding the tablespace's files
    assert [(t.oid, t.location, t.prefix) for t in walk.tablespaces] == [
        ("16599", str(space), "pg_tblspc/16599")
    ]
    assert walk.errors == []


def test_unlogged_relations_keep_only_their_init_fork() -> None:
    names = ["16400", "16400.1", "16400_fsm", "16400_vm", "16400_init", "16401", "16401_init2", "1259"]
    assert unlogged_forks(names) == {"16400", "16400.1", "16400_fsm", "16400_vm"}


def test_a_directory_that_is_not_a_cluster_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a PostgreSQL data directory"):
        walk_pgdata(tmp_path)
