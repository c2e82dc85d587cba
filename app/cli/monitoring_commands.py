"""`equisplit-dr monitoring ...`: the runbook's monitoring commands (docs/MONITORING.md): the effective
thresholds, the metrics (printed, or served to Prometheus), a test through each alert channel, and the
alert evaluation the beat health task runs, with the incidents it keeps."""

from __future__ import annotations

from typing import Annotated

import typer

from app.cli.render import JsonOpt, console, err_console, fail, print_json
from app.errors import EquisplitError

monitoring_app = typer.Typer(no_args_is_help=True, help="Health thresholds, metrics and alert channels.")


@monitoring_app.command("thresholds")
def thresholds_command(as_json: JsonOpt = False) -> None:
    """The effective alert thresholds and the settings that change them."""
    from app.monitoring.thresholds import DESCRIPTIONS, thresholds
    from app.settings import load_settings

    try:
        values = thresholds(load_settings()).to_json()
    except EquisplitError as exc:
        fail(exc)
    if as_json:
        print_json(values)
        return
    for name, value in values.items():
        setting, meaning = DESCRIPTIONS[name]
        shown = "-" if value is None else value
        console.print(f"{name:<34} {shown!s:>12}  {setting:<38} {meaning}", highlight=False)


@monitoring_app.command("test-alerts")
def test_alerts_command(as_json: JsonOpt = False) -> None:
    """Send a test message through each configured channel (Sentry, e-mail, Slack, PagerDuty). Exit 1 if
    any configured channel fails, or none is configured."""
    from app.alerts.probe import send_test_alerts
    from app.settings import load_settings

    try:
        results = send_test_alerts(load_settings())
    except EquisplitError as exc:
        fail(exc)
    if as_json:
        print_json(results)
    else:
        for row in results:
            mark = "ok" if row["ok"] else "-" if row["ok"] is None else "[bold red]FAILED[/]"
            (console if row["ok"] is not False else err_console).print(
                f"{row['channel']:<10} {mark:<6} {row['detail']}", highlight=False
            )
    if any(r["ok"] is False for r in results) or not any(r["ok"] for r in results):
        raise typer.Exit(1)


@monitoring_app.command("alerts")
def alerts_command(
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Check health now, open/resolve incidents, send what is owed.")
    ] = False,
    include_resolved: Annotated[bool, typer.Option("--all", help="Resolved incidents too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The alert incidents (one per condition until it clears). With --evaluate, first do what the beat
    health task does."""
    from app import clock
    from app.alerts.incidents import evaluate_alerts
    from app.catalog.incidents import list_incidents
    from app.context import Context
    from app.settings import load_settings

    ctx = Context(load_settings())
    try:
        report = evaluate_alerts(ctx) if evaluate else None
        with ctx.sessions() as session:
            incidents = [
                {
                    "key": row.key,
                    "severity": row.severity,
                    "source": row.source,
                    "message": row.message,
                    "opened_at": clock.iso(row.opened_at),
                    "escalated_at": clock.iso(row.escalated_at),
                    "resolved_at": clock.iso(row.resolved_at),
                    "notified": row.notified,
                    "pending": row.pending,
                    "last_error": row.last_error,
                }
                for row in list_incidents(session, include_resolved=include_resolved)
            ]
    except EquisplitError as exc:
        fail(exc)
    finally:
        ctx.close()
    if as_json:
        print_json({"evaluation": report.to_json() if report else None, "incidents": incidents})
        return
    if report is not None:
        console.print(
            f"status {report.status}: opened {len(report.opened)}, escalated {len(report.escalated)}, "
            f"resolved {len(report.resolved)}, {sum(1 for s in report.sent if s['ok'])} message(s) sent",
            highlight=False,
        )
        for failed in (s for s in report.sent if not s["ok"]):
            err_console.print(
                f"  not delivered: {failed['key']} {failed['action']}: {failed['error']}", highlight=False
            )
    for row in incidents:
        state = "resolved" if row["resolved_at"] else "open"
        console.print(
            f"{row['opened_at']}  {state:<8} {row['severity']:<8} {row['key']}: {row['message']}",
            highlight=False,
        )


@monitoring_app.command("metrics")
def metrics_command(
    component: Annotated[
        str | None,
        typer.Option(
            "--component",
            "-c",
            help="backup, verification, recovery, storage, replication, queues, jobs, alerts.",
        ),
    ] = None,
    prometheus: Annotated[bool, typer.Option("--prometheus", help="Print Prometheus' text format.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The metrics the Prometheus endpoint serves, read now from the catalog, storage and broker."""
    from app.context import Context
    from app.monitoring.metrics import collect_metrics
    from app.settings import load_settings

    ctx = Context(load_settings())
    try:
        if prometheus:
            from app.monitoring.exposition import exposition

            typer.echo(exposition(ctx).decode(), nl=False)
            return
        samples = collect_metrics(ctx, component)
    except EquisplitError as exc:
        fail(exc)
    finally:
        ctx.close()
    if as_json:
        print_json([s.to_json() for s in samples])
        return
    for s in samples:
        labels = ",".join(f'{k}="{v}"' for k, v in s.labels.items())
        value = (
            "-" if s.value is None else str(int(s.value)) if float(s.value).is_integer() else f"{s.value:.4g}"
        )
        console.print(f"{s.name}{{{labels}}} {value}" if labels else f"{s.name} {value}", highlight=False)


@monitoring_app.command("serve-metrics")
def serve_metrics_command(
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 9464,
    address: Annotated[
        str, typer.Option("--address", help="Address to listen on (loopback unless told otherwise).")
    ] = "127.0.0.1",
) -> None:
    """Serve the metrics at http://ADDRESS:PORT/metrics for Prometheus until interrupted."""
    import threading

    from app.context import Context
    from app.monitoring.exposition import serve
    from app.settings import load_settings

    ctx = Context(load_settings())
    try:
        ctx.sessions  # noqa: B018 - a catalog that cannot be opened stops here, named, not at the first scrape
        server, _thread = serve(ctx, address, port)
    except EquisplitError as exc:
        ctx.close()
        fail(exc)
    except OSError as exc:
        ctx.close()
        err_console.print(
            f"[bold red]error:[/] cannot listen on {address}:{port}: {exc.strerror}", highlight=False
        )
        raise typer.Exit(2) from None
    console.print(f"serving metrics on http://{address}:{server.server_port}/metrics", highlight=False)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
        ctx.close()
