"""Turning a restored base backup into a cluster that recovers to the target (docs/PITR.md section 3):
recovery settings, recovery.signal, tablespaces moved out of production's way, mode and owner."""

from __future__ import annotations

import os
import pwd
import shlex
from pathlib import Path

from app import clock
from app.context import Context
from app.errors import RecoveryError
from app.pitr.options import RecoveryOptions
from app.pitr.plan import RecoveryPlan
from app.pitr.target import LATEST

RECOVERY_SIGNAL = "recovery.signal"
AUTO_CONF = "postgresql.auto.conf"
#: Written only when the restored copy lacks them: the cluster kept its configuration outside the data
#: directory (Debian's /etc/postgresql). Local connections by the OS user of the same name only.
CONFIG_FILES = {
    "postgresql.conf": "# written by equisplit-dr dr recover: the source kept its configuration elsewhere\n",
    "pg_hba.conf": "# written by equisplit-dr dr recover\nlocal all all peer\n",
    "pg_ident.conf": "# written by equisplit-dr dr recover\n",
}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def recovery_settings(
    ctx: Context, plan: RecoveryPlan, target_dir: Path, options: RecoveryOptions
) -> dict[str, str]:
    """What postgresql.auto.conf gets (later lines win over the restored copy's own settings)."""
    command = (options.restore_command or ctx.settings.pitr_restore_command).replace("{source}", plan.source)
    if ctx.region is not None and options.restore_command is None:
        # recovering from a secondary region: the WAL is fetched from there too, whoever starts the server
        command = f"BACKUP_STORAGE_URL={shlex.quote(ctx.storage_url)} {command}"
    settings = {"restore_command": command, **plan.target.settings()}
    settings["recovery_target_timeline"] = "latest"
    if plan.target.kind != LATEST:
        settings["recovery_target_action"] = options.action
    if not options.keep_archiving:
        settings["archive_mode"] = "off"  # a drill must never archive into the production source
    if options.port is not None:
        settings["port"] = str(options.port)
    if options.start:
        settings["unix_socket_directories"] = str(options.socket_dir or target_dir)
        settings["logging_collector"] = "off"  # the log this recovery reads is pg_ctl's
    return settings


def configure(
    ctx: Context, plan: RecoveryPlan, target_dir: Path, options: RecoveryOptions, owner: str
) -> None:
    """Recovery settings, recovery.signal, tablespaces in place, mode 0700 and the owner."""
    settings = recovery_settings(ctx, plan, target_dir, options)
    lines = [
        f"\n# equisplit-dr dr recover at {clock.iso(clock.now())}: base backup {plan.backup.id}, "
        f"target {plan.target.describe()}\n",
        *(f"{key} = {_quote(value)}\n" for key, value in settings.items()),
    ]
    with open(target_dir / AUTO_CONF, "a") as conf:
        conf.writelines(lines)
    (target_dir / RECOVERY_SIGNAL).touch()
    (target_dir / "standby.signal").unlink(missing_ok=True)
    relocate_tablespaces(ctx, plan, target_dir, options.tablespace_root(target_dir))
    for name, text in CONFIG_FILES.items():
        path = target_dir / name
        if not path.exists():  # the source kept its configuration outside the data directory (Debian)
            path.write_text(text)
            plan.warnings.append(
                f"the backup has no {name} (the source keeps it elsewhere): wrote a minimal one"
            )
    os.chmod(target_dir, 0o700)
    if os.geteuid() == 0:
        chown_tree(target_dir, owner)
        if tablespaces_of(ctx, plan):
            chown_tree(options.tablespace_root(target_dir), owner)


def tablespaces_of(ctx: Context, plan: RecoveryPlan) -> list[dict[str, str]]:
    meta = ctx.repository.read_manifest_header(plan.backup.id).get("postgres", {})
    return list(meta.get("tablespaces", []))


def relocate_tablespaces(ctx: Context, plan: RecoveryPlan, target_dir: Path, root: Path) -> None:
    """Each tablespace was restored as the directory `pg_tblspc/<oid>`; move it to `<root>/<oid>` and
    rewrite `tablespace_map` to name that place, so PostgreSQL links it there at the start of recovery.
    Never the original location: a drill must not touch the production tablespaces."""
    spaces = tablespaces_of(ctx, plan)
    if not spaces:
        return
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for space in spaces:
        oid = space["oid"]
        restored = target_dir / "pg_tblspc" / oid
        moved = root / oid
        if restored.is_dir():
            os.replace(restored, moved)
        else:
            moved.mkdir(mode=0o700)
        lines.append(f"{oid} {moved}\n")
    (target_dir / "tablespace_map").write_text("".join(lines))


def chown_tree(root: Path, owner: str) -> None:
    try:
        user = pwd.getpwnam(owner)
    except KeyError:
        raise RecoveryError(
            f"no OS user {owner!r} to own the recovered cluster", hint="pass --owner USER"
        ) from None
    uid, gid = user.pw_uid, user.pw_gid
    os.chown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)
