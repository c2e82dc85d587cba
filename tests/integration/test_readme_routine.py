"""The README's "operator's routine" sections, as written: every command line in them names a command
and options that exist, and each one of "health, alerts, metrics" runs against a repository with a backup, a
loopback Slack webhook and a secondary region (placeholders filled in; `gdpr erase`, which needs a
PostgreSQL source, and the long-running `serve-metrics` are run as their own tests do elsewhere)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.alert_servers import HookServer
from tests.support.cli import EXE, ROOT, cli_env_for, run_cli
from tests.support.ports import free_port
from tests.support.trees import make_tree

README = ROOT / "README.md"
SECTION = "## The operator's routine: health, alerts, metrics"
RESTORE_SECTION = "## The operator's routine: proof that backups restore"
#: Exit codes a command may end with here: health-check exits 1 unless healthy (a fresh source has
#: never been drilled, so it warns).
ALLOWED = {"dr health-check": {0, 1}}
#: Run with the placeholders below; the others are checked against their --help only.
NOT_RUN = ("gdpr erase", "monitoring serve-metrics")


def routine_lines(section: str = SECTION) -> list[str]:
    text = README.read_text()
    start = text.index(section)
    end = text.index("\n## ", start + len(section))
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text[start:end], flags=re.S):
        lines += [re.split(r"\s#\s", ln, maxsplit=1)[0].strip() for ln in block.splitlines() if ln.startswith("equisplit-dr ")]
    return lines


def _words(line: str) -> tuple[list[str], list[str]]:
    """The command words before the first option or argument, and every option named (in brackets too)."""
    argv = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))[1:]
    command = []
    for word in argv:
        if word.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", word):
            break
        command.append(word)
    return command, [w for w in argv if w.startswith("--")]


def _free_port() -> int:
    return free_port()


def test_the_routine_names_commands_and_options_that_exist() -> None:
    from typer.testing import CliRunner

    from app.cli.main import app

    runner = CliRunner()
    lines = routine_lines() + routine_lines(RESTORE_SECTION)
    named = {" ".join(_words(line)[0]) for line in lines}
    for needed in ("dr health-check", "monitoring alerts", "monitoring metrics", "monitoring test-alerts",
                   "audit verify", "compliance report"):  # fmt: skip
        assert needed in named, f"the routine does not name `{needed}`"
    for line in lines:
        command, options = _words(line)
        helped = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert helped.exit_code == 0, f"`{line}`: {helped.output}"
        for option in options:
            assert option in helped.output, f"`{line}`: {' '.join(command)} has no option {option}"


def test_each_routine_command_runs(tmp_path: Path, hook_server: HookServer) -> None:
    home = tmp_path / "home"
    env = cli_env_for(home, dr_slack_webhook=hook_server.slack_url)
    src = make_tree(tmp_path / "src", big_mib=0, small=3)
    for args in (("init",), ("source", "add", "docs", "--path", str(src)), ("backup", "run", "-s", "docs")):
        run_cli(env, *args, ok=True)
    backup_id = json.loads(run_cli(env, "backup", "list", "--json", ok=True).stdout)[0]["id"]
    run_cli(env, "replication", "run", ok=True)
    ran = []
    approval = None
    for line in routine_lines():
        command, _ = _words(line)
        name = " ".join(command)
        if name in NOT_RUN:
            continue
        argv = shlex.split(re.sub(r"\[[^]]*\]", "", line))[1:]  # optional parts left out
        argv = [
            {"BACKUP_ID": backup_id, "R": "us-west-2", "ID": str(approval)}.get(a, a) for a in argv
        ]
        if name == "compliance report":
            argv = [str(tmp_path / a) if a.endswith(".html") else a for a in argv]
        run_env = {**env, "DR_ACTOR": "bob"} if name == "approval grant" else {**env, "DR_ACTOR": "alice"}
        proc = subprocess.run([*EXE, *argv], env=run_env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode in ALLOWED.get(name, {0}), f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        if name == "approval request":
            approval = int(re.search(r"approval (\d+) requested", proc.stdout).group(1))  # type: ignore[union-attr]
        ran.append(name)
    assert {"dr health-check", "monitoring test-alerts", "audit verify", "compliance report"} <= set(ran)
    assert hook_server.slack.snapshot(), "test-alerts reached the loopback Slack webhook"
    assert (tmp_path / "soc2.html").stat().st_size > 0


def test_the_routine_metrics_endpoint_serves(tmp_path: Path) -> None:
    (line,) = [ln for ln in routine_lines() if " serve-metrics" in ln]
    env = cli_env_for(tmp_path / "home")
    run_cli(env, "init", ok=True)
    port = _free_port()
    argv = [str(port) if a == "9464" else a for a in shlex.split(line)[1:]]
    proc = subprocess.Popen([*EXE, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                    assert b"equisplit_" in answer.read()
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
