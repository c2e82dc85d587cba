"""Charts as inline SVG, drawn by matplotlib's Agg-free SVG backend: no file, no network, no script."""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any

from app import clock

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


def _figure() -> Any:
    from matplotlib.figure import Figure  # a Figure needs no pyplot state and no display

    return Figure(figsize=(7.5, 3.0), dpi=100, layout="constrained")


def _svg(fig: Any) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg")
    text = out.getvalue()
    return text[text.index("<svg") :]  # inline: drop the XML prolog and doctype


def _times(rows: list[dict[str, Any]], key: str) -> list[datetime]:
    return [clock.parse_iso(r[key]) for r in rows]


def line_chart(
    title: str,
    ylabel: str,
    rows: list[dict[str, Any]],
    time_key: str,
    series: list[tuple[str, str, float]],
    target: tuple[str, float] | None = None,
) -> str:
    """One chart: a line per (label, key, scale) of `rows` over `time_key`; an optional target line."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    if not rows:
        ax.text(
            0.5, 0.5, "no data in the period", ha="center", va="center", transform=ax.transAxes, color="#666"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return _svg(fig)
    times = _times(rows, time_key)
    for (label, key, scale), color in zip(series, PALETTE, strict=False):
        values = [None if r.get(key) is None else r[key] / scale for r in rows]
        ax.plot(times, values, marker="o", markersize=4, linewidth=1.6, label=label, color=color)
    if target is not None:
        ax.axhline(target[1], color="#d62728", linestyle="--", linewidth=1.2, label=target[0])
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.autofmt_xdate()
    return _svg(fig)


def report_charts(evidence: dict[str, Any]) -> dict[str, str]:
    """The report's charts: sizes and durations of backups, RTO and RPO of drills, over the period."""
    backups = [b for b in evidence["backups"]["series"] if b["seconds"] is not None]
    drills = [d for d in evidence["drills"]["series"] if d["rto_seconds"] is not None]
    rpo_drills = [d for d in evidence["drills"]["series"] if d["rpo_seconds"] is not None]
    target_rto = max((d["rto_target_seconds"] for d in drills), default=None)
    mib = float(1 << 20)
    return {
        "sizes": line_chart(
            "Backup sizes",
            "MiB",
            backups,
            "started_at",
            [("source size", "bytes_total", mib), ("stored", "bytes_stored", mib)],
        ),
        "durations": line_chart(
            "Backup durations", "seconds", backups, "started_at", [("duration", "seconds", 1.0)]
        ),
        "rto": line_chart(
            "RTO measured by drills",
            "seconds",
            drills,
            "started_at",
            [("RTO", "rto_seconds", 1.0)],
            ("RTO target", float(target_rto)) if target_rto else None,
        ),
        "rpo": line_chart(
            "RPO reached by drills",
            "seconds",
            rpo_drills,
            "started_at",
            [("RPO", "rpo_seconds", 1.0)],
            ("MAX_DATA_LOSS_SECONDS", float(evidence["rpo"]["target_seconds"])),
        ),
    }
