"""Verification benchmark: `equisplit-dr backup verify --read-data` against `restic check --read-data`
on the same generated tree, in the same run, taking turns; then the incremental verification after a 2%
change, which should read little more than the new packs plus the rotating share.

    python bench/verify_bench.py [--scale 1.0] [--repeat 3] [--workdir DIR] [--keep]

Prints MB/s of repository data read back (each tool's own repository size over its wall time), the
ratio, and the bytes the incremental verification read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(PROJECT))
import gen_tree  # noqa: E402
from run import Ours, Restic, Timed, du_sb, find_restic, log, machine, run, sync  # noqa: E402


def verify_ours(ours: Ours, *args: str) -> tuple[Timed, dict[str, object]]:
    timed = run([*ours.cli, "backup", "verify", *args, "--json"], ours.env, cwd=ours.code)
    return timed, json.loads(timed.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="verify-bench-", dir=args.workdir))
    try:
        log(machine())
        tree = work / "tree"
        stats = gen_tree.generate(tree, args.scale, log=log)
        log(f"tree: {stats}")
        ours = Ours(work, tree, PROJECT)
        ours.init()
        ours.backup("full")
        restic_bin = find_restic()
        restic = Restic(work, tree, restic_bin) if restic_bin else None
        if restic:
            restic.init()
            restic.backup("full")
        else:
            log("*** restic is not available: its half is SKIPPED ***")
        sync()
        ours_size, restic_size = du_sb(ours.repo), du_sb(restic.repo) if restic else 0
        best: dict[str, float] = {}
        for round_no in range(args.repeat):
            for who in ["ours", "restic"] if round_no % 2 == 0 else ["restic", "ours"]:
                if who == "ours":
                    timed, doc = verify_ours(ours, "--read-data")
                    assert doc["outcome"] == "passed", doc
                    log(
                        f"round {round_no + 1}: equisplit-dr verify --read-data: {timed.wall:.2f} s, "
                        f"read {doc['bytes_read'] / 1e6:.1f} MB, {timed.cpu:.1f} CPU s"
                    )
                elif restic:
                    timed = run([restic.binary, "check", "--read-data"], restic.env)
                    log(
                        f"round {round_no + 1}: restic check --read-data: {timed.wall:.2f} s, "
                        f"{timed.cpu:.1f} CPU s"
                    )
                else:
                    continue
                best[who] = min(best.get(who, float("inf")), timed.wall)
        log("")
        log(f"repository sizes: equisplit-dr {ours_size / 1e6:.1f} MB, restic {restic_size / 1e6:.1f} MB")
        ours_rate = ours_size / 1e6 / best["ours"]
        log(
            f"equisplit-dr verify --read-data: {best['ours']:.2f} s, {ours_rate:.1f} MB/s (best of {args.repeat})"
        )
        if "restic" in best:
            restic_rate = restic_size / 1e6 / best["restic"]
            log(f"restic check --read-data:        {best['restic']:.2f} s, {restic_rate:.1f} MB/s")
            log(
                f"time ratio restic/ours: {best['restic'] / best['ours']:.2f}x "
                f"({'PASS' if best['ours'] <= best['restic'] else 'FAIL'}: target at least as fast)"
            )
        # Incremental verification after a 2% change: what it reads.
        gen_tree.mutate(tree, log=log)
        before = du_sb(ours.repo)
        ours.backup("incremental")
        added = du_sb(ours.repo) - before
        timed, doc = verify_ours(ours)
        log(
            f"incremental verification after a 2% change: {timed.wall:.2f} s, read "
            f"{doc['bytes_read'] / 1e6:.1f} MB of {du_sb(ours.repo) / 1e6:.1f} MB "
            f"(the backup added {added / 1e6:.1f} MB; {doc['packs_read']} of {doc['packs_checked']} packs)"
        )
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
