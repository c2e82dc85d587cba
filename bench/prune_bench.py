"""Pruning benchmark: equisplit-dr's `retention apply --confirm --prune` (retention and garbage collection in
one process) against restic's `forget --prune` on the same history of backups.

    python bench/prune_bench.py [--backups 200] [--keep 10] [--scale 0.005] [--fraction 0.01]
                                [--rounds 3] [--workdir DIR [--reuse]] [--keep-files] [--profile]

1. generate a small tree (bench/gen_tree.py; --scale 0.005 is about 5 MB);
2. make --backups backups of it with both tools, mutating the tree (about --fraction of its bytes, a few
   files) before each but the first. Ours are made in-process (BackupSystem, the CLI's code without a
   process start per backup, so generation stays short), restic's with its CLI. Both repositories are
   then set aside as the base of every round (`--keep-files` keeps them; `--workdir` of such a run with
   `--reuse` times that history again without making a new one);
3. --rounds rounds, the order of the tools alternating (ours first in odd rounds): each tool starts from a
   copy of its base (hard links to the objects, which neither tool changes in place; our SQLite catalog
   copied) and applies the same keep-last rule, timed as the CLI runs it (wall time, and the child's CPU
   time from wait4; `others` is the cores other processes used meanwhile):
   - ours: `retention apply --confirm --prune`, with BACKUP_RETENTION_MINIMUM=--keep, the
     daily/weekly/monthly/yearly rules and keep-within 0 (every backup happens within minutes, so a
     calendar rule would keep them all), BACKUP_GC_GRACE_HOURS=0 and replication off, the default
     BACKUP_GC_MAX_UNUSED (5 %);
   - restic: `forget --keep-last --keep --prune` (its default --max-unused 5%);
4. per round, the bytes each repository freed (du -sb before and after) and what stays; the ratios;
   then the median of each figure over the rounds;
5. a restore of the newest backup from each (after the last round), checked file by file against the
   tree (exit 1 on a mismatch: figures of a tool that lost data mean nothing);
6. with --profile, our retention + GC again, in-process under cProfile, on another copy of the base,
   and the top functions by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_tree
from run import PROJECT, Broke, Ours, Restic, Timed, du_sb, find_restic, hash_tree, log, run, sync, verify

MB = 1_000_000


def policy_env(keep: int) -> dict[str, str]:
    return {
        "BACKUP_RETENTION_MINIMUM": str(keep),
        "BACKUP_RETENTION_DAILY": "0",
        "BACKUP_RETENTION_WEEKLY": "0",
        "BACKUP_RETENTION_MONTHLY": "0",
        "BACKUP_RETENTION_YEARLY": "0",
        "BACKUP_RETENTION_KEEP_WITHIN_HOURS": "0",
        "BACKUP_GC_GRACE_HOURS": "0",
        "BACKUP_CROSS_REGION": "false",
    }


def our_system(ours: Ours) -> Any:
    """A BackupSystem on our bench home, configured as the CLI would be from ours.env."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(ours.env)
    try:
        from app.settings import load_settings
        from app.system import BackupSystem

        return BackupSystem(load_settings(), actor="bench")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_history(ours: Ours, restic: Restic | None, tree: Path, backups: int, fraction: float) -> float:
    started = time.perf_counter()
    system = our_system(ours)
    try:
        for i in range(backups):
            if i:
                gen_tree.mutate(tree, seed=i, fraction=fraction, log=lambda _m: None)
            system.create_backup("bench", "full" if i == 0 else "incremental")
            if restic is not None:
                restic.backup("incremental")
            if (i + 1) % 25 == 0:
                log(f"  {i + 1}/{backups} backups ({time.perf_counter() - started:.0f} s)")
    finally:
        system.close()
    return time.perf_counter() - started


def prune_ours(ours: Ours) -> Timed:
    return run([*ours.cli, "retention", "apply", "--confirm", "--prune"], ours.env, cwd=ours.code)


def prune_restic(restic: Restic, keep: int) -> Timed:
    return run([restic.binary, "forget", "--host", "bench", "--keep-last", str(keep), "--prune"], restic.env)


def copy_base(base: Path, live: Path) -> None:
    """`live` as a copy of `base`: hard links to the objects (written once, never changed in place by
    either tool: a prune deletes or writes new ones), real copies of our SQLite catalog."""
    shutil.rmtree(live, ignore_errors=True)
    subprocess.run(["cp", "-al", str(base), str(live)], check=True)
    for catalog in live.glob("catalog.sqlite3*"):
        catalog.unlink()
        shutil.copy2(base / catalog.name, catalog)


def profile_ours(home: Path, ours: Ours) -> None:
    env = dict(ours.env, EQUISPLIT_DR_HOME=str(home))
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        from app.gc.run import collect_garbage
        from app.settings import load_settings
        from app.system import BackupSystem

        system = BackupSystem(load_settings(), actor="bench")
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        system.apply_retention(confirm=True)
        collect_garbage(system.context, confirm=True, actor="bench", sweep_marked=True)
        profiler.disable()
        log(f"\nprofile: retention + gc (sweeping what it marks) in-process: {time.perf_counter() - started:.2f} s"
            " (with cProfile)")
        system.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backups", type=int, default=200)
    parser.add_argument("--keep", type=int, default=10, help="keep-last N in both tools")
    parser.add_argument("--scale", type=float, default=0.005, help="tree size, 1.0 = 1 GiB")
    parser.add_argument("--fraction", type=float, default=0.01, help="share of the bytes each mutation changes")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep-files", action="store_true", help="leave the work directory behind")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workdir of an earlier --keep-files run: time its history again, not a new one")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--rounds", type=int, default=3, help="timed prunes of each tool, alternating order")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    (PROJECT / "bench" / "out").mkdir(exist_ok=True)
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="prune-", dir=PROJECT / "bench" / "out"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        tree = work / "tree"
        reuse = args.reuse and (work / "eq-base").is_dir()
        if not reuse:
            gen_tree.generate(tree, scale=args.scale, seed=1, log=lambda _m: None)
        log(f"tree: {du_sb(tree) / MB:.1f} MB; {args.backups} backups, keep-last {args.keep}")
        ours = Ours(work, tree, PROJECT)
        ours.env.update(policy_env(args.keep))
        restic = None
        if not args.no_restic:
            binary = find_restic()
            if binary is None:
                log("restic: not available, SKIPPED")
            else:
                restic = Restic(work, tree, binary)
        tools: list[Ours | Restic] = [t for t in (ours, restic) if t is not None]
        bases = {t.name: (t.home if t is ours else t.repo, work / ("eq-base" if t is ours else "restic-base"))
                 for t in tools}  # type: ignore[union-attr]
        if reuse:
            log("history: the bases of an earlier run in this work directory (--reuse)")
            # its catalog migrated to this code's schema, untimed
            run([*ours.cli, "init"], dict(ours.env, EQUISPLIT_DR_HOME=str(bases[ours.name][1])), cwd=ours.code)
        else:
            for tool in tools:
                tool.init()
            took = make_history(ours, restic, tree, args.backups, args.fraction)
            log(f"history made in {took:.0f} s")
            for live, base in bases.values():
                live.rename(base)
        if args.profile:
            copy_base(bases[ours.name][1], work / "eq-profile")

        results: dict[str, list[tuple[Timed, int, int]]] = {t.name: [] for t in tools}
        for round_ in range(args.rounds):
            for tool in tools if round_ % 2 == 0 else tools[::-1]:
                live, base = bases[tool.name]
                copy_base(base, live)
                sync()
                before = tool.stored()
                timed = prune_ours(ours) if tool is ours else prune_restic(tool, args.keep)  # type: ignore[arg-type]
                sync()
                after = tool.stored()
                results[tool.name].append((timed, before - after, after))
                log(
                    f"  round {round_ + 1} {tool.name:<13} prune {timed.wall:6.2f} s wall, {timed.cpu:5.2f} s CPU "
                    f"(others {timed.others:.1f} cores); freed {(before - after) / MB:7.2f} MB of "
                    f"{before / MB:.2f} MB, {after / MB:.2f} MB stay"
                )
        for tool in tools:
            rows = results[tool.name]
            log(
                f"median {tool.name:<13} {statistics.median(r[0].wall for r in rows):6.2f} s wall, "
                f"{statistics.median(r[0].cpu for r in rows):5.2f} s CPU; freed "
                f"{statistics.median(r[1] for r in rows) / MB:.2f} MB, {statistics.median(r[2] for r in rows) / MB:.2f} MB stay"
            )
        expected = hash_tree(tree)
        for tool in tools:
            target = work / f"restore-{tool.name}"
            shutil.rmtree(target, ignore_errors=True)  # an earlier run's, with --reuse
            if tool is ours:
                ours.last_id = sorted(p.name for p in (ours.repo / "manifests").iterdir())[-1]
            tool.restore(target)
            verify(expected, target, tool.name)
            log(f"  {tool.name:<13} newest backup restores identical to the tree")
        if restic is not None:
            for i, ((o, of, oa), (r, rf, ra)) in enumerate(zip(results[ours.name], results["restic"], strict=True)):
                log(
                    f"round {i + 1} ratios ours/restic: wall {o.wall / r.wall:.2f}, CPU {o.cpu / r.cpu:.2f}, "
                    f"freed {of / rf:.2f}, stays {oa / ra:.2f}"
                )
        if args.profile:
            profile_ours(work / "eq-profile", ours)
    except Broke as exc:
        log(f"BROKE: {exc}")
        return 1
    finally:
        if not args.keep_files:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"work directory kept: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
