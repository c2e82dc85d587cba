"""Replication benchmark: MB/s of a replication pass between two S3 endpoints (two moto servers, each its
own process), for a generated tree backed up to the first.

    python bench/replication_bench.py [--scale 0.25] [--concurrency 1,4,8] [--workdir DIR] [--keep]

For each concurrency, a fresh region bucket on the second endpoint gets a full pass (every pack, manifest
and the keyring), timed; then a second pass with nothing new (what beat's idle pass costs). Prints the
bytes copied, seconds and MB/s of each, and the machine. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
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
from run import log, machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(logdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    binary = Path(sys.executable).with_name("moto_server")
    with open(logdir / f"moto-{port}.log", "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"moto_server did not start on port {port}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="replication-bench-", dir=args.workdir))
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench-secret", AWS_DEFAULT_REGION="us-east-1"
    )
    servers = []
    try:
        import boto3

        from app.replication.run import replicate
        from app.settings import load_settings
        from app.system import BackupSystem

        log(machine())
        primary, primary_url = start_moto(work)
        region, region_url = start_moto(work)
        servers += [primary, region]
        boto3.client("s3", endpoint_url=primary_url).create_bucket(Bucket="primary")
        tree = work / "tree"
        log(f"tree: {gen_tree.generate(tree, args.scale, log=log)}")
        counts = [int(c) for c in args.concurrency.split(",")]
        regions = {
            f"bench-{n}": f"s3://region-{n}/dr?endpoint_url={region_url}&region=us-east-1" for n in counts
        }
        for n in counts:
            boto3.client("s3", endpoint_url=region_url).create_bucket(Bucket=f"region-{n}")
        base = dict(
            equisplit_dr_home=work / "home",
            backup_storage_url=f"s3://primary/repo?endpoint_url={primary_url}&region=us-east-1",
            backup_encryption_key=secrets.token_hex(32),
            secondary_regions=list(regions),
            backup_secondary_storage_urls=regions,
        )
        with BackupSystem(load_settings(**base)) as system:
            system.init()
            system.add_source("tree", tree)
            started = time.monotonic()
            backup = system.create_full_backup("tree")
            log(
                f"backup: {backup.stats['bytes_stored'] / 1e6:.1f} MB stored in {time.monotonic() - started:.1f} s"
            )
        print(
            f"\n{'threads':>8} {'copied MB':>10} {'objects':>8} {'seconds':>8} {'MB/s':>8} {'idle pass s':>12}"
        )
        for n in counts:
            settings = load_settings(**base, backup_replication_concurrency=n)
            with BackupSystem(settings) as system:
                [first] = replicate(system.context, f"bench-{n}")
                [idle] = replicate(system.context, f"bench-{n}")
            if first.error:
                log(f"*** pass with {n} threads failed: {first.error}")
                return 1
            rate = first.bytes_copied / 1e6 / first.seconds if first.seconds else 0.0
            print(
                f"{n:>8} {first.bytes_copied / 1e6:>10.1f} {first.copied:>8} {first.seconds:>8.2f} "
                f"{rate:>8.1f} {idle.seconds:>12.3f}"
            )
        return 0
    finally:
        for proc in servers:
            proc.kill()
            proc.wait(10)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
