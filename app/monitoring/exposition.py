"""The Prometheus endpoint (`monitoring serve-metrics`): the samples of metrics.py collected afresh at
each scrape, as gauges in prometheus-client's text format. A sample with no value yet (no backup, no
drill) is left out rather than shown as 0."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.context import Context
from app.monitoring.metrics import collect_metrics


class CatalogCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for sample in collect_metrics(self.ctx):
            if sample.value is None:
                continue
            family = families.get(sample.name)
            if family is None:
                family = GaugeMetricFamily(sample.name, sample.help, labels=sorted(sample.labels))
                families[sample.name] = family
            family.add_metric([sample.labels[k] for k in sorted(sample.labels)], float(sample.value))
        yield from families.values()


def registry_for(ctx: Context) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(ctx))
    return registry


def exposition(ctx: Context) -> bytes:
    """The text a scrape would get now."""
    return bytes(generate_latest(registry_for(ctx)))


def serve(ctx: Context, address: str, port: int) -> Any:
    """Serve /metrics on address:port in a background thread; returns (server, thread)."""
    return start_http_server(port, addr=address, registry=registry_for(ctx))
