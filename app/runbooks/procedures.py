"""The procedures `dr execute` runs (docs/RUNBOOKS.md). Each is a list of steps over one BackupSystem;
a step raises StepFailed (or a domain error) when what it checks is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import ConfigurationError
from app.runbooks.run import Step, StepFailed

if TYPE_CHECKING:
    from app.system import BackupSystem

PROCEDURES = ("full-restore", "database-failover")


def build_steps(
    system: BackupSystem,
    procedure: str,
    target: Path,
    *,
    source: str | None = None,
    port: int | None = None,
    approval: int | None = None,
) -> list[Step]:
    if procedure == "full-restore":
        return _full_restore(system, target, source, approval)
    if procedure == "database-failover":
        if source is None or port is None:
            raise ConfigurationError(
                "database-failover needs --source (the PostgreSQL source) and --port (for the recovered server)"
            )
        return _database_failover(system, target, source, port)
    raise ConfigurationError(
        f"unknown procedure {procedure!r}", hint=f"--procedure is one of {', '.join(PROCEDURES)}"
    )


def _full_restore(system: BackupSystem, target: Path, only: str | None, approval: int | None) -> list[Step]:
    """test-connection -> verify-latest -> restore (latest of each file source into target/<source>) ->
    compare (each restored tree against its manifest)."""
    state: dict[str, Any] = {}

    def sources() -> list[str]:
        names = [
            s["name"]
            for s in system.list_sources()
            if s["kind"] == "files" and (only is None or s["name"] == only)
        ]
        if not names:
            raise StepFailed("no file source to restore" + (f" named {only}" if only else ""))
        return names

    def test_connection() -> str:
        probes = system.test_connection()
        bad = [p for p in probes if p.ok is False]
        if bad:
            raise StepFailed("; ".join(f"{p.name}: {p.detail}" for p in bad))
        return ", ".join(f"{p.name} ok" for p in probes if p.ok)

    def verify_latest() -> str:
        latest = {name: system.show_backup("latest", name, audited=False)["id"] for name in sources()}
        damaged = []
        for name, backup_id in latest.items():
            report = system.verify_backup(backup_id, data="none")
            if report.outcome != "passed":
                damaged.append(f"{name}: {backup_id} {report.outcome}")
        if damaged:
            raise StepFailed("latest backups not whole: " + "; ".join(damaged))
        state["latest"] = latest
        return "structure of " + ", ".join(f"{n}={b}" for n, b in latest.items()) + " verified"

    def restore() -> str:
        if target.exists() and any(target.iterdir()):
            raise StepFailed(
                f"target {target} is not empty: a full restore writes into a new or empty directory"
            )
        done = []
        for name, backup_id in state["latest"].items():
            plan = system.restore(backup_id, target / name, approval=approval)
            done.append(f"{name}: {plan.files} files, {plan.bytes} bytes")
        return "; ".join(done)

    def compare() -> str:
        from app.drills.compare import compare_tree

        checked_total, problems = 0, list[str]()
        for name, backup_id in state["latest"].items():
            entries = system.context.repository.read_manifest(backup_id)["entries"]
            checked, differences = compare_tree(target / name, entries)
            checked_total += checked
            problems.extend(f"{name}/{d}" for d in differences)
        if problems:
            raise StepFailed(f"{len(problems)} difference(s) with the manifests; first: {problems[0]}")
        return f"{checked_total} entries equal to their manifests"

    return [
        Step(
            "test-connection",
            "storage round trip, catalog, keys, broker, PostgreSQL sources",
            test_connection,
        ),
        Step(
            "verify-latest",
            "the latest backup of each file source: every object present with its size",
            verify_latest,
        ),
        Step("restore", "the latest backup of each file source into <target>/<source>", restore),
        Step(
            "compare",
            "each restored tree against its manifest (types, sizes, modes, content hashes)",
            compare,
        ),
    ]


def _database_failover(system: BackupSystem, target: Path, source: str, port: int) -> list[Step]:
    """plan (every WAL file checked) -> recover latest and start on --port, erasures re-applied -> report RTO."""
    from app.pitr.manager import DisasterRecoveryManager

    state: dict[str, Any] = {}

    def recover(dry_run: bool) -> Any:
        with DisasterRecoveryManager(context=system.context, source=source, actor=system.actor) as manager:
            return manager.execute_point_in_time_recovery(
                None, dry_run, target_dir=target, latest=True, start=not dry_run, port=port
            )

    def plan() -> str:
        result = recover(dry_run=True)
        if not result.success:
            raise StepFailed("recovery would be refused: " + "; ".join(result.problems[:3]))
        p = result.plan.to_json()
        return f"base backup {p['backup']['id']}, {p['segments']} WAL segment(s), estimated {p['estimated_seconds']} s"

    def recover_and_start() -> str:
        result = recover(dry_run=False)
        state["result"] = result
        if not result.success:
            raise StepFailed(result.message)
        applied = len((result.erasures or {}).get("applied", []))
        return f"{result.message}; {applied} erasure request(s) re-applied"

    def report() -> str:
        result = state["result"]
        return (
            f"RTO {result.rto_seconds:.1f} s (restore {result.restore_seconds:.1f} s, recovery "
            f"{result.recovery_seconds:.1f} s), reached {result.to_json()['restored_timestamp'] or 'the end of the base backup'}"
        )

    return [
        Step("plan", "the recovery plan to the end of the archived WAL, every WAL file checked", plan),
        Step(
            "recover",
            f"restore the base backup into the target, replay the WAL, start on port {port}, re-apply erasures",
            recover_and_start,
        ),
        Step("report", "the RTO measured from the start of the recovery", report),
    ]
