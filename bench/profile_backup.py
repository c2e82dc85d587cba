"""Where a full backup's time goes: one in-process backup under cProfile, every thread profiled.

    python bench/profile_backup.py [--scale 0.3 | --tree DIR] [--workdir DIR] [--timer cpu|wall]
                                   [--top 25] [--keep] [--out FILE.pstats]

Generates a tree with bench/gen_tree.py (unless --tree names one), reads it once (warm page cache), then
runs `BackupSystem.init()`, `.add_source()`, `.create_full_backup()` on a fresh home with cProfile enabled
in the main thread and, through `threading.setprofile`, in every thread the backup starts (reader pool,
pack uploads). The profiles of all threads are merged.

--timer cpu (default) charges each function the CPU time of its thread (time.thread_time): the sum over
threads is where the cores go; waiting (GIL, locks, fsync latency) is not counted. --timer wall charges
wall time per thread: waiting shows up, and the sum over threads exceeds the run's wall time.
cProfile adds overhead per Python call, so the profiled run is slower than a plain one (2-3x here; with
--timer cpu every call also makes a clock_gettime(CLOCK_THREAD_CPUTIME_ID) system call, which shows up as
extra sys time); C calls (zstd, AES-GCM, BLAKE3, I/O) are therefore under-represented in the shares.
--baseline prints the unprofiled time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import site
import sys
import sysconfig
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
import gen_tree  # noqa: E402

MARKER = ".equisplit-bench"
CODE_ROOTS = [str(PROJECT) + "/"]
MB = 1_000_000

#: Functions whose time says what the backup does; (label, match on "file:function", cumulative?).
KEY_FUNCTIONS = [
    ("walk the tree (walk_tree)", "sources/files.py:walk_tree", True),
    ("read the parent, plan", "backup/plan.py:plan_reads", True),
    ("dedup lookups in the chunk index", "catalog/chunks.py:present_chunk_ids", True),
    ("read + chunk + store files (read_file)", "backup/reader.py:read_file", True),
    ("  FastCDC cut of files <= 1 MiB (Chunker.cut, own time)", "repo/chunker.py:cut", False),
    ("  FastCDC cut of bigger files (stream generator, own time)", "backup/reader.py:<genexpr>", False),
    ("  file reads (readinto/read)", "~:<method 'readinto' of '_io.FileIO' objects>", False),
    ("  file reads, whole small files (os.read)", "~:<built-in method posix.read>", False),
    ("  os.open", "~:<built-in method posix.open>", False),
    ("  os.fstat", "~:<built-in method posix.fstat>", False),
    ("  ChunkWriter.store (dedup + seal + pack)", "backup/writer.py:store", True),
    ("    keyed BLAKE3 (ChunkIds.of)", "repo/chunker.py:of", True),
    ("    codecs.compress (probe + zstd)", "repo/codecs.py:compress", True),
    ("      zstd compress", "~:<method 'compress' of 'zstandard", False),
    ("    pack_chunk (seal into the pack's buffer)", "repo/repository.py:pack_chunk", True),
    ("      AES-GCM encrypt (small payloads)", "~:<method 'encrypt' of 'cryptography", False),
    ("      AES-GCM encrypt_into (bigger payloads)", "~:<method 'encrypt_into' of 'cryptography", False),
    ("pack upload thread (ChunkWriter._upload)", "backup/writer.py:_upload", True),
    ("  finish_pack (index)", "repo/repository.py:finish_pack", True),
    ("  storage put (write + fsync + rename)", "storage/local.py:put", True),
    ("    write", "~:<method 'write' of '_io.BufferedWriter' objects>", False),
    ("    fsync", "~:<built-in method posix.fsync>", False),
    ("  catalog: record_pack (SQL insert)", "catalog/chunks.py:record_pack", True),
    ("  catalog: SQLite commits", "~:<method 'commit' of 'sqlite3.Connection' objects>", False),
    ("write the manifest's entries (manifest chunks)", "backup/manifests.py:store_entries", True),
    ("write the manifest's root", "backup/manifests.py:write_root", True),
    ("  Entry.to_json", "sources/files.py:to_json", True),
]


def _short(path: str) -> str:
    for prefix in (*CODE_ROOTS, *site.getsitepackages(), sysconfig.get_paths()["stdlib"]):
        if path.startswith(prefix):
            return path[len(prefix):].lstrip("/")
    return path


def _label(func: tuple[str, int, str]) -> str:
    file, line, name = func
    if file == "~":
        return name
    return f"{_short(file)}:{line}({name})"


def _match(func: tuple[str, int, str], spec: str) -> bool:
    file, _line, name = func
    want_file, _, want_name = spec.rpartition(":")
    if want_file == "~":
        return file == "~" and want_name in name  # C functions: a prefix of their repr is enough
    return file.endswith(want_file) and name == want_name


def print_table(stats: pstats.Stats, key: str, top: int, total: float) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    index = 3 if key == "cumulative" else 2
    rows = sorted(raw.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
    print(f"{'calls':>10} {'tottime':>9} {'cumtime':>9} {'cum %':>6}  function")
    for func, (cc, nc, tt, ct, _callers) in rows:
        calls = f"{nc}" if nc == cc else f"{nc}/{cc}"
        print(f"{calls:>10} {tt:9.2f} {ct:9.2f} {100 * ct / total if total else 0:6.1f}  {_label(func)}")


def key_table(stats: pstats.Stats, total: float, keys: list[tuple[str, str, bool]]) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    print(f"{'seconds':>9} {'%':>6}  {'calls':>9}  what (cumulative time of the function, or own time of a "
          "C call)")
    for label, spec, cumulative in keys:
        hits = [(f, v) for f, v in raw.items() if _match(f, spec)]
        if not hits:
            continue
        seconds = sum(v[3] if cumulative else v[2] for _f, v in hits)
        calls = sum(v[1] for _f, v in hits)
        print(f"{seconds:9.2f} {100 * seconds / total if total else 0:6.1f}  {calls:>9}  {label}")


RESTORE_KEY_FUNCTIONS = [
    ("read the manifest", "repo/repository.py:read_manifest", True),
    ("plan: locate chunks in the catalog", "catalog/chunks.py:locate", True),
    ("write_entries", "restore/writer.py:write_entries", True),
    ("  restore_files (the writer: a worker process runs the same)", "restore/files.py:restore_files", True),
    ("    restore_pack (each pack's chunks)", "restore/files.py:restore_pack", True),
    ("      read_blob (coalesced ranged pack reads)", "repo/repository.py:read_blob", True),
    ("        os.pread", "~:<built-in method posix.pread>", False),
    ("      ChunkOpener.open (AES-GCM, decode, BLAKE3 against the id)", "repo/opener.py:open", True),
    ("        AES-GCM decrypt", "~:<method 'decrypt' of 'cryptography", False),
    ("        zstd decompress", "~:<method 'decompress' of 'zstandard", False),
    ("      _write_run (a file's consecutive chunks)", "restore/files.py:_write_run", True),
    ("        write_whole (a file of one chunk: create, write, metadata)", "restore/files.py:write_whole", True),
    ("        os.open (create)", "~:<built-in method posix.open>", False),
    ("        os.pwrite / os.pwritev", "~:<built-in method posix.pwrite", False),
    ("        metadata.apply_to_fd (chown, chmod, xattrs, utime)", "restore/metadata.py:apply_to_fd", True),
    ("        os.replace", "~:<built-in method posix.replace>", False),
]


def _profiled(fn: Any, timer_name: str) -> tuple[pstats.Stats, Any, dict[str, float]]:
    """Run `fn()` with every thread it starts profiled; the merged stats, its result, and timings."""
    timer = time.thread_time if timer_name == "cpu" else time.perf_counter
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_thread_profile(*_args: Any) -> None:
        # First event in a new thread: replace this hook with a profiler of the thread's own.
        prof = cProfile.Profile(timer)
        with lock:
            profiles.append(prof)
        prof.enable()

    main = cProfile.Profile(timer)
    threading.setprofile(start_thread_profile)
    times0, wall0 = os.times(), time.perf_counter()
    main.enable()
    try:
        result = fn()
    finally:
        main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
    wall, times1 = time.perf_counter() - wall0, os.times()
    stats = pstats.Stats(main)
    for prof in profiles:
        try:
            stats.add(prof)
        except TypeError:  # a thread that never recorded anything
            continue
    timing = {"wall": wall, "user": times1.user - times0.user, "sys": times1.system - times0.system,
              "threads": len(profiles)}
    return stats, result, timing


def _settings(home: Path) -> Any:
    from app.settings import load_settings

    # One process: cProfile sees this process's threads only, and the CLI's worker processes
    # (docs/BACKUP.md, "Using every core") run this same code per unit.
    return load_settings(equisplit_dr_home=home, database_url=None, backup_storage_url=None,
                         backup_encryption_key=None, backup_encryption_key_file=None, backup_processes=1)


def report(title: str, stats: pstats.Stats, timing: dict[str, float], nbytes: int, timer: str,
           keys: list[tuple[str, str, bool]], top: int) -> None:
    wall, cpu = timing["wall"], timing["user"] + timing["sys"]
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"\n=== {title}: {nbytes / MB:.1f} MB in {wall:.2f} s wall under the profiler "
          f"({nbytes / MB / wall:.1f} MB/s); process CPU {cpu:.2f} s (user {timing['user']:.2f}, "
          f"sys {timing['sys']:.2f}) = {cpu / wall:.2f} cores; {timing['threads']:.0f} threads profiled ===")
    print(f"\n--- where the time goes ({timer} seconds summed over threads; % of {total:.2f} s profiled) ---")
    key_table(stats, total, keys)
    print(f"\n--- top {top} by cumulative time ---")
    print_table(stats, "cumulative", top, total)
    print(f"\n--- top {top} by own (total) time ---")
    print_table(stats, "tottime", top, total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.3, help="tree to generate (1.0 = about 1 GiB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tree", type=Path, help="profile a backup of this existing tree instead")
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "out" / "profile")
    parser.add_argument("--timer", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    parser.add_argument("--no-warm", action="store_true", help="skip reading the tree before the backup")
    parser.add_argument("--out", type=Path, help="also dump the backup's merged profile (pstats format) here")
    parser.add_argument("--restore", action="store_true", help="also profile a restore of the backup")
    parser.add_argument("--incremental", action="store_true",
                        help="profile an unchanged incremental re-backup instead (after a full backup)")
    parser.add_argument("--baseline", action="store_true",
                        help="first time one backup without the profiler (on another fresh home)")
    parser.add_argument("--plain", action="store_true",
                        help="only time one backup without cProfile (to sample it from outside, e.g. py-spy)")
    parser.add_argument("--code", type=Path, default=PROJECT,
                        help="profile the `app` package of this source tree")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.code.resolve()))  # `app` from this tree, before any installed copy
    CODE_ROOTS.insert(0, str(args.code.resolve()) + "/")

    work = args.workdir.resolve()
    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} is not empty and not a benchmark workdir; pick another")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("created by bench/profile_backup.py\n")
    try:
        tree = args.tree.resolve() if args.tree else work / "tree"
        if args.tree is None:
            print(f"generating a tree at scale {args.scale} in {tree}")
            gen_tree.generate(tree, args.scale, args.seed, log=lambda m: print("  " + m.strip()))
        if not args.no_warm:
            for dirpath, _dirs, names in os.walk(tree):
                for name in names:
                    with open(os.path.join(dirpath, name), "rb", buffering=0) as handle:
                        while handle.read(4 << 20):
                            pass
        from app.system import BackupSystem

        if args.baseline or args.plain:
            with BackupSystem(_settings(work / "baseline")) as system:
                system.init()
                system.add_source("bench", tree)
                t0, w0 = os.times(), time.perf_counter()
                system.create_full_backup("bench")
                wall, t1 = time.perf_counter() - w0, os.times()
            cpu = t1.user - t0.user + t1.system - t0.system
            print(f"baseline (no profiler): full backup in {wall:.2f} s wall, {cpu:.2f} s CPU "
                  f"({cpu / wall:.2f} cores)")
            if args.plain:
                return 0
        settings = _settings(work / "home")
        with BackupSystem(settings) as system:
            system.init()
            system.add_source("bench", tree)
            stats, result, timing = _profiled(lambda: system.create_full_backup("bench"), args.timer)
            source = result.stats["bytes_total"]
            if args.incremental:  # the full backup above was only the parent: profile an unchanged re-backup
                time.sleep(2.5)  # the change rule's granularity: files must be older than parent start - 2 s
                stats, result, timing = _profiled(lambda: system.create_incremental_backup("bench"),
                                                  args.timer)
                print(f"unchanged incremental backup: {result.stats}")
                report("unchanged re-backup (incremental)", stats, timing, source, args.timer, KEY_FUNCTIONS,
                       args.top)
                return 0
            print(f"full backup of {tree}: {result.stats['files']} files; BACKUP_THREADS -> "
                  f"{settings.worker_threads} reader threads; timer: {args.timer}")
            print(f"backup stats: {result.stats}")
            report("full backup", stats, timing, source, args.timer, KEY_FUNCTIONS, args.top)
            if args.out:
                stats.dump_stats(str(args.out))
            if args.restore:
                target = work / "restored"
                stats, _plan, timing = _profiled(lambda: system.restore(result.id, target), args.timer)
                report("restore of that backup", stats, timing, source, args.timer, RESTORE_KEY_FUNCTIONS,
                       args.top)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
