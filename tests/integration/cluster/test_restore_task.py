"""Restores enqueued as Celery tasks, run by a real worker with its default (prefork) pool."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from app.errors import RestoreTargetError
from app.system import BackupSystem
from tests.support.cluster import Cluster
from tests.support.trees import assert_same_tree, make_tree

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def big_tree(root: Path) -> Path:
    """About 200 MiB: incompressible files (one big enough to be restored in pieces), compressible
    text, and the odd entries of make_tree (small files, empty ones, symlinks, modes)."""
    make_tree(root, seed=7, big_mib=2, small=60)
    rng = random.Random(11)
    data = root / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(rng.randbytes(72 << 20))
    for i in range(4):
        (data / f"r{i}.bin").write_bytes(rng.randbytes(16 << 20))
    line = b"2026-11-27T10:30:00Z,matter-0042,party 7,filed,ok\n"
    for i in range(4):
        body = line * ((16 << 20) // len(line))
        (data / f"t{i}.csv").write_bytes(
            b"".join(body[j : j + 8192] + rng.randbytes(16) for j in range(0, len(body), 8192))
        )
    return root


def _restores(cluster: Cluster) -> Path:
    return Path(cluster.env["EQUISPLIT_DR_HOME"]) / "restores"


def test_a_restore_task_of_a_big_backup_uses_worker_processes(cluster: Cluster, tmp_path: Path) -> None:
    """Before: 'daemonic processes are not allowed to have children' from the prefork child."""
    from tasks.restore import restore_backup

    src = big_tree(tmp_path / "src")
    with BackupSystem() as system:
        system.add_source("docs", src)
        backup = system.create_full_backup("docs")
    cluster.start_worker("w1", "restore", extra_env={"BACKUP_PROCESSES": "2"})
    target = _restores(cluster) / "docs-1"
    summary = restore_backup.delay(backup.id, str(target)).get(timeout=300)
    assert summary["bytes"] > 200 << 20 and summary["processes"] == 2, summary
    assert_same_tree(src, target)
    assert "daemonic" not in cluster.logs()
    assert not list(target.rglob("*.eqdr-*")), "a partial file or marker was left behind"


def test_a_failed_restore_task_run_again_resumes(cluster: Cluster, tmp_path: Path) -> None:
    """Before: the first run left directories and files behind, and the same task run again was
    refused ('restore target ... is not empty')."""
    from tasks.restore import restore_backup

    src = big_tree(tmp_path / "src")
    with BackupSystem() as system:
        system.add_source("docs", src)
        backup = system.create_full_backup("docs")
    packs = sorted(
        (tmp_path / "repo").rglob("packs/**/*"), key=lambda p: p.stat().st_size if p.is_file() else 0
    )
    pack = packs[-1]
    original = pack.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    pack.write_bytes(bytes(damaged))
    cluster.start_worker("w1", "restore", extra_env={"BACKUP_PROCESSES": "2"})
    target = _restores(cluster) / "docs-1"
    with pytest.raises(Exception, match="corrupt"):
        restore_backup.delay(backup.id, str(target)).get(timeout=300)
    assert any(target.iterdir()), "the failed run wrote nothing: the test proves nothing"
    pack.write_bytes(original)  # the pack, repaired from a replica
    summary = restore_backup.delay(backup.id, str(target)).get(timeout=300)
    assert summary["files"] > 0
    assert_same_tree(src, target)
    assert not list(target.rglob("*.eqdr-*")), "a partial file or marker was left behind"


def test_a_restore_task_writes_only_below_the_restore_roots(cluster: Cluster, tmp_path: Path) -> None:
    """Before: whoever could write to the broker restored any backup over any path (overwrite too)."""
    from tasks.restore import restore_backup

    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    with BackupSystem() as system:
        system.add_source("docs", src)
        backup = system.create_full_backup("docs")
    victim = tmp_path / "etc"
    victim.mkdir()
    (victim / "passwd").write_text("root:x:0:0\n")
    roots = _restores(cluster)
    roots.mkdir(parents=True)
    os.symlink(victim, roots / "shortcut")
    cluster.start_worker("w1", "restore")
    for target in (victim, roots / "shortcut", roots / "shortcut" / "new", tmp_path / "new"):
        with pytest.raises(RestoreTargetError, match="outside the restore roots"):
            restore_backup.delay(backup.id, str(target), overwrite=True).get(timeout=60)
    assert sorted(p.name for p in victim.iterdir()) == ["passwd"]
    assert (victim / "passwd").read_text() == "root:x:0:0\n"
    assert not (tmp_path / "new").exists()
    restore_backup.delay(backup.id, str(roots / "docs")).get(timeout=60)
    assert_same_tree(src, roots / "docs")


def _signing_identity(pki: Path) -> dict[str, str]:
    """A self-signed RSA key and certificate, the store holding the certificate: the settings of a
    cluster whose every host signs with the same identity."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "equisplit-dr cluster")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (pki / "store").mkdir(parents=True)
    (pki / "worker.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (pki / "worker.pem").write_bytes(pem)
    (pki / "store" / "worker.pem").write_bytes(pem)
    return {
        "CELERY_SECURITY_KEY": str(pki / "worker.key"),
        "CELERY_SECURITY_CERTIFICATE": str(pki / "worker.pem"),
        "CELERY_SECURITY_CERT_STORE": str(pki / "store"),
    }


SIGNED_CLIENT = """
import json, sys
import workers
from tasks.backup import run_backup
from tasks.restore import restore_backup
backup = run_backup.delay("docs", "full").get(timeout=120)  # a chord of units: signed messages too
restored = restore_backup.delay(backup["backup_id"], sys.argv[1]).get(timeout=120)
print(json.dumps({"backup": backup, "restore": restored}))
"""


def test_with_signing_on_a_signed_task_runs_and_an_unsigned_one_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Before: CELERY_SECURITY_* were ignored and the worker ran whatever JSON the broker held."""
    import subprocess
    import sys

    from tasks.restore import restore_backup

    src = make_tree(tmp_path / "src", big_mib=1, small=3)
    with BackupSystem() as system:
        system.add_source("docs", src)
        backup = system.create_full_backup("docs")
    signing = _signing_identity(tmp_path / "pki")
    cluster.start_worker("w1", "backup,chunks,restore", extra_env=signing)
    roots = _restores(cluster)
    # this test process's client does not sign: its message is what anyone with broker access could send
    restore_backup.apply_async((backup.id, str(roots / "unsigned")))
    signed = subprocess.run(
        [sys.executable, "-c", SIGNED_CLIENT, str(roots / "signed")],
        env={**cluster.env, **signing},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert signed.returncode == 0, signed.stderr[-3000:] + cluster.logs()
    assert json.loads(signed.stdout)["backup"]["state"] == "complete", signed.stdout
    assert_same_tree(src, roots / "signed")
    # the unsigned message came first on the same queue: by now it has been taken and refused
    assert not (roots / "unsigned").exists()
    assert "Refusing to deserialize untrusted content" in cluster.logs(), cluster.logs()


def test_a_restore_whose_worker_was_killed_is_redelivered_and_resumes(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Before: the redelivered task met its own half-written target and was refused as not empty."""
    import signal
    import time

    from tasks.restore import restore_backup

    src = big_tree(tmp_path / "src")
    with BackupSystem() as system:
        system.add_source("docs", src)
        backup = system.create_full_backup("docs")
    worker = cluster.start_worker("w1", "restore", extra_env={"BACKUP_PROCESSES": "2", "BACKUP_THREADS": "1"})
    target = _restores(cluster) / "docs-1"
    pending = restore_backup.delay(backup.id, str(target))
    deadline = time.monotonic() + 120
    while not (target.is_dir() and any(p.suffix == ".eqdr-partial" for p in target.rglob("*"))):
        assert time.monotonic() < deadline and not pending.ready(), cluster.logs()
        time.sleep(0.02)
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
    for pid in children:  # the prefork pool's child running the restore (-c 1)
        os.kill(int(pid), signal.SIGKILL)
    summary = pending.get(timeout=300)
    assert summary["files"] > 0
    assert_same_tree(src, target)
    assert not list(target.rglob("*.eqdr-*")), "a partial file or marker was left behind"
    assert "SIGKILL" in cluster.logs(), cluster.logs()
