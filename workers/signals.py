"""Process signals: Sentry in workers and beat, a fresh catalog context in each forked child."""

from __future__ import annotations

from typing import Any

from celery.signals import beat_init, celeryd_init, worker_init, worker_process_init

from app.settings import load_settings


def init_sentry(**_: Any) -> None:
    settings = load_settings()
    if settings.sentry_dsn is None:
        return
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        integrations=[CeleryIntegration(monitor_beat_tasks=False)],
        send_default_pii=False,
        include_local_variables=False,  # frame locals can hold key material (a keyring, a data key)
        traces_sample_rate=0.0,
    )


celeryd_init.connect(init_sentry, weak=False)
beat_init.connect(init_sentry, weak=False)


@worker_init.connect(weak=False)
def _tune_collector(**_: Any) -> None:
    """The main worker process (broker, acks, events; forks the pool): its imports frozen before the fork,
    so every pool child inherits them frozen."""
    from workers.base import tune_collector

    tune_collector()


@worker_process_init.connect(weak=False)
def _fresh_context(**_: Any) -> None:
    from workers.base import warm_up

    warm_up()  # a context built in the child (no engine or socket inherited across the fork), opened
