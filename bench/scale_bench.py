"""Scale benchmark (issue #14): what a small incremental and a 2 % change cost against a large chunk index.

    python bench/scale_bench.py [--rows 10000000,50000000] [--catalog sqlite,postgres] [--scale 0.1]
                                [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
                                [--workdir DIR] [--keep] [--rounds 2]

For each catalog kind: a generated tree (bench/gen_tree.py, --scale 0.1 is ~100 MiB) and two homes, each
with its own repository and catalog and a full backup of the tree: "empty" keeps only the tree's own
chunks in its index, "filled" gets synthetic chunk rows up to each --rows figure. Each round changes the
tree once and both homes back it up (the CLI in a subprocess, as a user runs it), alternating which goes
first, so both see the same tree state and the same machine load:
  * small: an incremental that finds one new 3 MB file and one changed small file;
  * 2 %:   an incremental after `gen_tree.py mutate` changed ~2 % of the tree's bytes.
Printed per row count: wall time of every round and peak RSS of the backup process (wait4; the largest
of it and its worker processes), filled beside empty; the fill time, the catalog's size and the cost of
one 32-id lookup statement. Targets: within
1.2x the time and under 300 MB per process at 50 M rows.

Synthetic rows: random 64-hex ids in one fake pack (never read: no backup references it), generated
inside the database: SQLite `INSERT ... SELECT` over a recursive CTE (sorted, so the B-tree is built by
appending), PostgreSQL `INSERT ... SELECT` over generate_series (md5 of random() twice) -- faster than a
COPY from the client, same result. On PostgreSQL the chunks table's primary key, foreign key and pack
index are dropped for the fill and rebuilt from the definitions the catalog gave (maintenance_work_mem 1 GB),
the primary key at the 70 % leaf fill random-order inserts leave, so it is as large as a grown one; the
fill fails unless the table's keys then read exactly as before (names, columns, uniqueness, options). The
machine is shared: --rounds N runs each backup N times (on fresh
changes); best against best is the ratio printed, every round's time beside it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(PROJECT))
import gen_tree  # noqa: E402

FAKE_PACK = "f" * 64
MB = 1 << 20


def log(msg: str) -> None:
    print(msg, flush=True)


class Catalog:
    """One catalog kind beside its repository: the CLI's environment, the fill, the size."""

    def __init__(self, kind: str, work: Path, pg_server: str, role: str) -> None:
        self.kind = kind
        self.home = work / f"home-{kind}-{role}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "DATABASE_URL"))}
        # No key in the environment: `init` writes the home's own key file, so a --keep'd home still backs up.
        self.env.update(EQUISPLIT_DR_HOME=str(self.home), PYTHONPATH=str(PROJECT))
        self.pg_db: str | None = None
        self.pg_server = pg_server
        if kind == "postgres":
            from sqlalchemy import create_engine, text
            self.pg_db = f"eqdr_scale_{secrets.token_hex(4)}"
            admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{self.pg_db}"'))
            admin.dispose()
            self.env["DATABASE_URL"] = pg_server.rsplit("/", 1)[0] + "/" + self.pg_db

    def cli(self, *args: str) -> tuple[float, float]:
        """Run the CLI; wall seconds and peak RSS in MB (wait4: the child or its largest descendant)."""
        with tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "app.cli.main", *args], env=self.env,
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=PROJECT)
            _pid, status, usage = os.wait4(proc.pid, 0)
            took = time.monotonic() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                raise SystemExit(f"{' '.join(args)} failed:\n{err.read().decode()[-3000:]}")
        return took, usage.ru_maxrss / 1024

    def _connect(self) -> object:
        from sqlalchemy import create_engine
        url = self.env.get("DATABASE_URL") or f"sqlite:///{self.home / 'catalog.sqlite3'}"
        return create_engine(url, isolation_level="AUTOCOMMIT")

    def rows(self) -> int:
        from sqlalchemy import text
        engine = self._connect()
        with engine.connect() as conn:  # type: ignore[attr-defined]
            n = int(conn.execute(text("SELECT count(*) FROM chunks")).scalar())
        engine.dispose()  # type: ignore[attr-defined]
        return n

    def fill_to(self, total: int) -> float:
        """Add synthetic chunk rows until the index holds `total`; seconds taken."""
        from sqlalchemy import text
        missing = total - self.rows()
        if missing <= 0:
            return 0.0
        started = time.monotonic()
        engine = self._connect()
        with engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(
                "INSERT INTO packs (id, size, chunk_count, backup_id, created_at) "
                "SELECT :p, 0, 0, NULL, '2026-01-01 00:00:00' WHERE NOT EXISTS (SELECT 1 FROM packs WHERE id = :q)"
            ), {"p": FAKE_PACK, "q": FAKE_PACK})
            keys = _drop_chunk_keys(conn) if self.kind == "postgres" else []
            step = 5_000_000
            for start in range(0, missing, step):
                n = min(step, missing - start)
                if self.kind == "postgres":
                    conn.execute(text(
                        "INSERT INTO chunks (id, pack_id, \"offset\", length, raw_length) "
                        "SELECT md5(random()::text) || md5(random()::text), :p, 0, 0, 0 "
                        "FROM generate_series(1, :n)"
                    ), {"p": FAKE_PACK, "n": n})
                else:
                    conn.execute(text(
                        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
                        "INSERT INTO chunks (id, pack_id, \"offset\", length, raw_length) "
                        "SELECT id, :p, 0, 0, 0 FROM (SELECT lower(hex(randomblob(32))) AS id FROM s) ORDER BY id"
                    ), {"p": FAKE_PACK, "n": n})
                log(f"    {self.kind}: +{start + n:,} rows ({time.monotonic() - started:.0f} s)")
            if self.kind == "postgres":
                conn.execute(text("VACUUM chunks"))  # before the keys exist: no index to clean up
                built = time.monotonic()
                _restore_chunk_keys(conn, keys)
                log(f"    postgres: keys rebuilt in {time.monotonic() - built:.0f} s")
                conn.execute(text("ANALYZE chunks"))
            else:
                conn.execute(text("ANALYZE chunks"))
        engine.dispose()  # type: ignore[attr-defined]
        return time.monotonic() - started

    def lookup_us(self, batches: int = 300, per_batch: int = 32) -> tuple[float, float]:
        """Mean microseconds of one dedup lookup (`present_chunk_ids`) of `per_batch` ids: all absent
        (new content), and all present (picked at random positions of the index)."""
        from sqlalchemy import text

        from app.catalog.chunks import present_chunk_ids
        engine = self._connect()
        with engine.connect() as conn:  # type: ignore[attr-defined]
            present = [r[0] for r in conn.execute(text(
                "SELECT id FROM chunks WHERE id >= :k ORDER BY id LIMIT :n"), {"k": secrets.token_hex(32), "n": per_batch})]
            absent = [[secrets.token_hex(32) for _ in range(per_batch)] for _ in range(batches)]
            started = time.perf_counter()
            for ids in absent:
                present_chunk_ids(conn, ids)
            t_absent = (time.perf_counter() - started) / batches * 1e6
            started = time.perf_counter()
            for _ in range(batches):
                assert len(present_chunk_ids(conn, present)) == len(present)
            t_present = (time.perf_counter() - started) / batches * 1e6
        engine.dispose()  # type: ignore[attr-defined]
        return t_absent, t_present

    def size_mb(self) -> float:
        from sqlalchemy import text
        if self.kind == "postgres":
            engine = self._connect()
            with engine.connect() as conn:  # type: ignore[attr-defined]
                size = int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
            engine.dispose()  # type: ignore[attr-defined]
            return size / MB
        return sum(p.stat().st_size for p in self.home.glob("catalog.sqlite3*")) / MB

    def drop(self) -> None:
        if self.pg_db:
            from sqlalchemy import create_engine, text
            admin = create_engine(self.pg_server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)'))
            admin.dispose()


def _chunk_keys(conn: object) -> list[tuple[str, str, str]]:
    """The chunks table's constraints and indexes as PostgreSQL states them: (kind, name, definition)."""
    from sqlalchemy import text
    constraints = conn.execute(text(  # type: ignore[attr-defined]
        "SELECT contype, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'chunks'::regclass ORDER BY conname")).all()
    indexes = conn.execute(text(  # type: ignore[attr-defined]
        "SELECT 'index', i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = 'chunks'::regclass AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid AND c.conrelid = x.indrelid) ORDER BY i.relname")).all()
    reloptions = conn.execute(text(  # type: ignore[attr-defined]
        "SELECT 'reloptions', i.relname, coalesce(array_to_string(i.reloptions, ','), '') FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = 'chunks'::regclass ORDER BY i.relname")).all()
    return [tuple(r) for r in [*constraints, *indexes, *reloptions]]


def _drop_chunk_keys(conn: object) -> list[tuple[str, str, str]]:
    """Drop the chunks table's primary key, foreign key and index before a bulk fill (inserting 50 M random
    ids into a primary key took an hour: a random leaf and a full-page WAL image per row); returns what
    `_restore_chunk_keys` recreates."""
    from sqlalchemy import text
    keys = _chunk_keys(conn)
    for kind, name, _definition in keys:
        if kind in ("f", "p", "u"):
            conn.execute(text(f'ALTER TABLE chunks DROP CONSTRAINT "{name}"'))  # type: ignore[attr-defined]
        elif kind == "index":
            conn.execute(text(f'DROP INDEX "{name}"'))  # type: ignore[attr-defined]
    return keys


#: Leaf fill of a rebuilt unique key: what random-order inserts leave in a B-tree (~ln 2), so the filled
#: catalog's key is as large as one grown by backups (a fresh build would pack leaves to 90 %).
GROWN_FILL = 70


def _restore_chunk_keys(conn: object, keys: list[tuple[str, str, str]]) -> None:
    """Recreate what `_drop_chunk_keys` dropped, from the definitions PostgreSQL gave, and check the table's
    keys now read exactly as before (names, columns, uniqueness, storage options)."""
    from sqlalchemy import text
    conn.execute(text("SET maintenance_work_mem = '1GB'"))  # type: ignore[attr-defined]
    for kind, name, definition in keys:
        if kind in ("p", "u"):
            conn.execute(text(  # type: ignore[attr-defined]
                f'ALTER TABLE chunks ADD CONSTRAINT "{name}" {definition} WITH (fillfactor = {GROWN_FILL})'))
            conn.execute(text(f'ALTER INDEX "{name}" RESET (fillfactor)'))  # type: ignore[attr-defined]
        elif kind == "index":
            conn.execute(text(definition))  # type: ignore[attr-defined]
    for kind, name, definition in keys:
        if kind == "f":  # validated by one join over the table, not a trigger per inserted row
            conn.execute(text(f'ALTER TABLE chunks ADD CONSTRAINT "{name}" {definition}'))  # type: ignore[attr-defined]
    conn.execute(text("RESET maintenance_work_mem"))  # type: ignore[attr-defined]
    if (now := _chunk_keys(conn)) != keys:
        raise SystemExit(f"the chunks table's keys differ after the fill:\n{keys}\n{now}")


def small_change(tree: Path, n: int) -> None:
    (tree / f"scale-new-{n}.bin").write_bytes(os.urandom(3 * 10**6))
    small = sorted(p for p in tree.rglob("*") if p.is_file() and p.stat().st_size < 10_000)[n]
    with small.open("ab") as f:
        f.write(os.urandom(100))


def settle() -> None:
    time.sleep(2.5)  # equisplit-dr re-reads files changed within 2 s of the previous backup's start


Runs = dict[str, list[tuple[float, float]]]


def measure(pair: list[Catalog], tree: Path, rounds: int, counter: list[int]) -> list[Runs]:
    """Each round changes the tree once and backs it up with both catalogs (the empty one and the filled
    one, alternating which goes first): the two see the same tree state and the same load."""
    out: list[Runs] = [{"small": [], "2%": []} for _ in pair]
    for _ in range(rounds):
        counter[0] += 1
        order = list(enumerate(pair)) if counter[0] % 2 else list(reversed(list(enumerate(pair))))
        small_change(tree, counter[0])
        settle()
        for i, cat in order:
            out[i]["small"].append(cat.cli("backup", "run", "-s", "bench", "-t", "incremental"))
        gen_tree.mutate(tree, seed=1000 + counter[0], fraction=0.02, log=lambda _m: None)
        settle()
        for i, cat in reversed(order):
            out[i]["2%"].append(cat.cli("backup", "run", "-s", "bench", "-t", "incremental"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10000000,50000000")
    ap.add_argument("--catalog", default="sqlite,postgres")
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pg-url", default=os.environ.get(
        "EQUISPLIT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="eqdr-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    targets = [int(r) for r in args.rows.split(",") if r]
    lines: list[str] = []
    cats: list[Catalog] = []
    try:
        for kind in [k for k in args.catalog.split(",") if k]:
            tree = work / f"tree-{kind}"
            shutil.rmtree(tree, ignore_errors=True)
            gen_tree.generate(tree, scale=args.scale, seed=1, log=lambda _m: None)
            pair = [Catalog(kind, work, args.pg_url, "empty"), Catalog(kind, work, args.pg_url, "filled")]
            cats.extend(pair)
            for cat in pair:
                cat.cli("init")
                cat.cli("source", "add", "bench", "--path", str(tree))
            settle()
            for cat in pair:
                full = cat.cli("backup", "run", "-s", "bench", "-t", "full")
            log(f"{kind}: full backup of the tree {full[0]:.1f} s, {full[1]:.0f} MB; {pair[0].rows():,} chunks indexed")
            absent_us, present_us = pair[0].lookup_us()
            log(f"  {kind}: a lookup of 32 ids on the tree's own index: {absent_us:.0f} us absent, "
                f"{present_us:.0f} us present")
            counter = [0]
            for total in targets:
                filled = pair[1].fill_to(total)
                absent_us, present_us = pair[1].lookup_us()
                log(f"  {kind}: filled to {pair[1].rows():,} rows in {filled:.0f} s; catalog "
                    f"{pair[1].size_mb():.0f} MB; a lookup of 32 ids: {absent_us:.0f} us absent, "
                    f"{present_us:.0f} us present")
                empty, full_runs = measure(pair, tree, args.rounds, counter)
                for what in ("small", "2%"):
                    e, f = empty[what], full_runs[what]
                    line = (f"{kind:<10} {what:<6} {pair[1].rows():>12,}  "
                            f"{' '.join(f'{r[0]:.2f}' for r in f):>16} s  {' '.join(f'{r[0]:.2f}' for r in e):>16} s  "
                            f"{min(r[0] for r in f) / min(r[0] for r in e):5.2f}x  "
                            f"{max(r[1] for r in f):5.0f} MB  {max(r[1] for r in e):5.0f} MB")
                    lines.append(line)
                    log(line)
    finally:
        log("\ncatalog    backup   index rows   time, filled (rounds)  time, empty (rounds)  best/best  "
            "peak RSS filled / empty")
        for line in lines:
            log(line)
        if not args.keep:
            for cat in cats:
                cat.drop()
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
