"""The one typed settings object, read from environment variables at process start and passed down.

Names follow the spec (BACKUP_*, DR_*, HEALTH_CHECK_*, MAX_*), plus the URLs it leaves implicit.
A malformed value stops start-up with the variable's name; no secret value is ever echoed back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.errors import ConfigurationError

DEFAULT_HOME = "~/.equisplit-dr"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


#: The rules a region may override (BACKUP_REGION_RETENTION), and the least value each accepts.
REGION_RULES = {
    "daily": 0,
    "weekly": 0,
    "monthly": 0,
    "yearly": 0,
    "minimum": 1,
    "keep_within_hours": 0,
    "archive_years": 0,
    "pitr_window_days": 1,
}
_REGION_RETENTION_FORM = "region:rule=N,rule=N;region:rule=N (e.g. us-west-2:yearly=10,archive_years=10)"


def parse_region_retention(value: str) -> dict[str, dict[str, int]]:
    """`region:rule=N,rule=N;region:...` into {region: {rule: N}}; a ValueError names what is wrong."""
    policies: dict[str, dict[str, int]] = {}
    for part in (p.strip() for p in value.split(";")):
        if not part:
            continue
        region, sep, rules = part.partition(":")
        region = region.strip()
        if not sep or not region or not rules.strip():
            raise ValueError(f"{part!r} is not region:rule=N,...; expected {_REGION_RETENTION_FORM}")
        if region in policies:
            raise ValueError(
                f"region {region} is given twice; give each region once, its rules comma-separated"
            )
        overrides: dict[str, int] = {}
        for item in (i.strip() for i in rules.split(",")):
            rule, eq, number = (x.strip() for x in item.partition("="))
            if rule not in REGION_RULES:
                raise ValueError(
                    f"region {region}: unknown rule {rule!r}; the rules are {', '.join(REGION_RULES)}"
                )
            if not eq or not number.isdigit():
                raise ValueError(f"region {region}: {rule} needs a whole number (rule=N), got {item!r}")
            if int(number) < REGION_RULES[rule]:
                raise ValueError(f"region {region}: {rule} must be at least {REGION_RULES[rule]}")
            overrides[rule] = int(number)
        policies[region] = overrides
    return policies


class Settings(BaseSettings):
    """Every setting the system reads. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    equisplit_dr_home: Path = Field(default=Path(DEFAULT_HOME))
    database_url: str | None = None
    backup_storage_url: str | None = None
    backup_secondary_storage_urls: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    backup_encryption_key: SecretStr | None = None
    backup_encryption_key_file: Path | None = None
    backup_storage_location: str = "local"
    backup_compression: bool = True
    backup_compression_level: int = Field(default=3, ge=1, le=19)
    backup_cross_region: bool = True
    backup_pitr: bool = True
    backup_threads: int = Field(default=0, ge=0, le=256)
    #: Worker processes of a backup run in one process (the CLI): 0 = one per core, 1 = threads only.
    backup_processes: int = Field(default=0, ge=0, le=256)
    #: ... once the walk finds this many bytes to read; below it, threads in the backup's own process
    #: (a fork server and its workers cost ~0.5 CPU-s more than they save below ~128 MiB: docs/BACKUP.md).
    backup_processes_min_bytes: int = Field(default=128 << 20, ge=0)
    backup_unit_bytes: int = Field(default=256 << 20, ge=1 << 20)
    #: Archive backups' file chunks go to this S3 storage class (docs/ARCHIVE.md). GLACIER_IR reads at
    #: once; GLACIER and DEEP_ARCHIVE cost less but must be thawed (restored) before a restore reads them.
    backup_archive_storage_class: str = Field(
        default="GLACIER_IR",
        pattern="^(STANDARD|STANDARD_IA|ONEZONE_IA|INTELLIGENT_TIERING|GLACIER_IR|GLACIER|DEEP_ARCHIVE)$",
    )
    #: Thawing packs in GLACIER or DEEP_ARCHIVE before a read (docs/ARCHIVE.md): whether to send the
    #: restore requests (off: only wait for thaws requested by someone else), for how many days the
    #: readable copy stays, at which retrieval tier, how long to wait (seconds; 0: request and stop), and
    #: how often to ask.
    backup_thaw_request: bool = True
    #: Lock archive backups' cold packs and manifest roots on S3 in compliance mode until the backup's
    #: start plus BACKUP_RETENTION_ARCHIVE_YEARS (docs/ARCHIVE.md). The bucket must have Object Lock on.
    backup_archive_object_lock: bool = False
    backup_thaw_days: int = Field(default=7, ge=1, le=365)
    backup_thaw_tier: str = Field(default="Standard", pattern="^(Expedited|Standard|Bulk)$")
    backup_thaw_timeout: int = Field(default=900, ge=0)
    backup_thaw_poll_seconds: float = Field(default=60.0, gt=0)
    backup_on_unreadable: str = Field(default="skip", pattern="^(skip|fail)$")
    #: Directories a restore task from the broker may write under (absolute, comma-separated); none
    #: set: <home>/restores. The CLI and BackupSystem restore wherever their user may write.
    backup_restore_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    #: A source whose file count or bytes fell by more than this share (per cent) since its last complete
    #: backup, or to nothing, makes the backup `partial` unless confirmed (`backup run --allow-shrink`).
    backup_shrink_warn_percent: int = Field(default=50, ge=0, le=100)
    #: The local metadata cache (app/repo/cache.py): on by default, in <home>/cache unless set.
    backup_cache: bool = True
    backup_cache_dir: Path | None = None

    #: Cron rules (minute hour day-of-month month day-of-week) of the scheduled backups.
    backup_schedule_full: str = "0 2 * * *"
    backup_schedule_incremental: str = "0 */6 * * *"
    backup_schedule_differential: str = "0 3 * * 0"
    backup_schedule_archive: str = "0 4 1 * *"

    #: Verification (docs/VERIFY.md): daily, incremental; weekly, a 25% sample of the data besides.
    backup_schedule_verify: str = "30 5 * * *"
    backup_schedule_verify_sample: str = "30 6 * * 6"
    backup_verify_sample: float = Field(default=0.25, gt=0, le=1)
    #: Every pack is read back at least once within this many days.
    backup_verify_period_days: int = Field(default=30, ge=1)
    backup_verify_threads: int = Field(default=4, ge=1, le=64)
    #: Bytes per second a verification may read; 0 = no limit.
    backup_verify_max_bytes_per_second: int = Field(default=0, ge=0)

    backup_retention_daily: int = Field(default=30, ge=0)
    backup_retention_weekly: int = Field(default=12, ge=0)
    backup_retention_monthly: int = Field(default=12, ge=0)
    backup_retention_yearly: int = Field(default=7, ge=0)
    #: Retention (docs/RETENTION.md): the N newest backups of a source are always kept, and every backup
    #: within this many hours of its source's newest; archives for this many years.
    backup_retention_minimum: int = Field(default=3, ge=1)
    backup_retention_keep_within_hours: int = Field(default=24, ge=0)
    backup_retention_archive_years: int = Field(default=7, ge=0)
    #: PostgreSQL: every point of this many days stays recoverable (all WAL kept); older retained base
    #: backups keep only the WAL that makes them consistent.
    backup_pitr_window_days: int = Field(default=30, ge=1)
    #: Per-region overrides of the rules above (docs/RETENTION.md section 5):
    #: `region:rule=N,rule=N;region:rule=N`, e.g. `us-west-2:yearly=10,archive_years=10`.
    backup_region_retention: Annotated[dict[str, dict[str, int]], NoDecode] = Field(default_factory=dict)
    backup_schedule_retention: str = "0 7 * * *"
    #: Garbage collection (docs/GC.md): a pack whose chunks left the index waits this long (and for every
    #: backup running then to finish) before it is deleted.
    backup_gc_grace_hours: float = Field(default=24, ge=0)
    #: A pack whose live blobs fill less than this share of it is repacked (its live blobs copied into a
    #: new pack, the old one then deleted like any candidate); 0 turns repacking off.
    backup_gc_repack_below: float = Field(default=0.5, ge=0, lt=1)
    #: And beside that rule, packs holding dead blobs are repacked (the emptiest first) until the dead
    #: bytes left are at most this share of the repository's packs (restic's `--max-unused 5%`); 1 turns
    #: this rule off.
    backup_gc_max_unused: float = Field(default=0.05, ge=0, le=1)

    dr_testing_enabled: bool = True
    #: Restore drills (docs/DRILLS.md): how often beat runs one per source, and the RTO they must meet.
    dr_test_frequency: str = Field(default="weekly", pattern="^(daily|weekly|monthly|quarterly)$")
    rto_target: int = Field(default=7200, gt=0)
    #: Where drills restore to (a scratch directory per drill, removed after); default <home>/drills.
    backup_drill_dir: Path | None = None
    primary_region: str = "us-east-1"
    secondary_regions: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["us-west-2"])
    #: Replication (docs/REPLICATION.md): the lag target, copy threads per region, beat's interval.
    backup_replication_lag_target: int = Field(default=14400, gt=0)
    backup_replication_concurrency: int = Field(default=4, ge=1, le=64)
    backup_replication_interval: int = Field(default=900, ge=60)
    #: Audit trail (docs/AUDIT.md): beat seals the trail's head in storage this often; the actions that
    #: need a second person's approval (`restore`, `delete`); the actor name written in the trail.
    audit_anchor_interval: int = Field(default=3600, ge=60)
    dr_approval_required: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dr_actor: str | None = None
    #: PostgreSQL catalog role of worker processes (docs/AUDIT.md section 4): `SET ROLE` on each pooled
    #: connection, so the trail is insert-only for them; "" turns it off. Which processes take it:
    #: `workers` (Celery workers, when the role exists and the user may take it), `all` (the CLI too, and
    #: a role that cannot be taken is an error), `never`.
    backup_catalog_worker_role: str = Field(default="equisplit_worker", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")
    backup_catalog_use_worker_role: str = Field(default="workers", pattern="^(workers|all|never)$")

    health_check_interval: int = Field(default=60, gt=0)
    health_check_timeout: int = Field(default=30, gt=0)
    max_downtime_seconds: int = Field(default=300, gt=0)
    max_data_loss_seconds: int = Field(default=3600, gt=0)

    dr_alert_emails: Annotated[list[str], NoDecode] = Field(default_factory=list)
    dr_slack_webhook: SecretStr | None = None
    dr_pagerduty_key: SecretStr | None = None
    sentry_dsn: SecretStr | None = None
    #: Sentry's web API, to resolve an incident's issue when it clears (docs/MONITORING.md section 2):
    #: an auth token (scope event:write), the organization and project slugs, and the API's base URL
    #: (default: https://sentry.io for a sentry.io DSN, else the DSN's own host).
    sentry_auth_token: SecretStr | None = None
    sentry_org: str | None = None
    sentry_project: str | None = None
    sentry_api_url: str | None = None

    # Health thresholds and alert channels (docs/MONITORING.md); `monitoring thresholds` prints them.
    alert_stale_warning_hours: float = Field(default=8, gt=0)
    alert_stale_critical_hours: float = Field(default=12, gt=0)
    #: Consecutive failed backups of a source: the first alerts, this many escalate (PagerDuty).
    alert_backup_failures_escalate: int = Field(default=3, ge=1)
    alert_storage_warning_percent: float = Field(default=90, gt=0, le=100)
    alert_storage_critical_percent: float = Field(default=95, gt=0, le=100)
    #: Bytes the primary storage may hold; 0 = a local directory's file system is the limit.
    backup_storage_quota_bytes: int = Field(default=0, ge=0)
    #: Hours since a source's last passed restore drill before it alerts; 0 = twice DR_TEST_FREQUENCY.
    alert_verified_restore_max_age_hours: float = Field(default=0, ge=0)
    #: Objects of units/ listed at most per health check when counting orphans.
    alert_orphan_scan_limit: int = Field(default=10000, ge=1)
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, gt=0, lt=65536)
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "equisplit-dr@localhost"
    smtp_starttls: bool = False
    dr_pagerduty_events_url: str = "https://events.pagerduty.com/v2/enqueue"
    celery_broker_url: str | None = None
    celery_result_backend: str | None = None
    #: Message signing (docs/CLUSTER.md): this process's PEM private key (RSA) and certificate, and
    #: the certificates it trusts (a directory or a glob of PEM files). All three, or none.
    celery_security_key: Path | None = None
    celery_security_key_password: SecretStr | None = None
    celery_security_certificate: Path | None = None
    celery_security_cert_store: str | None = None
    schedule_timezone: str = "UTC"
    #: Seconds a running job may go without a heartbeat before the reaper marks it failed.
    job_stale_seconds: int = Field(default=900, gt=0)
    #: Seconds a dead backup's leftovers (unit objects, unfinished writes) are kept before reconcile
    #: deletes them; also how long a `running` backup's job must be silent before maintenance calls it dead.
    backup_reconcile_grace_seconds: int = Field(default=3600, ge=0)

    # PostgreSQL base backups and point-in-time recovery (docs/POSTGRES.md, docs/PITR.md)
    #: Re-read every file of a PostgreSQL backup, whatever the change rule says (dedup keeps it cheap).
    backup_pg_checksum_mode: bool = False
    #: Seconds a base backup waits for PostgreSQL to archive the WAL it needs before it fails.
    backup_pg_archive_timeout: int = Field(default=600, gt=0)
    #: Where PostgreSQL's programs are (pg_ctl, psql); default /usr/lib/postgresql/<major>/bin, else PATH.
    pg_bin_dir: Path | None = None
    #: restore_command written into a recovered cluster; `{source}` is replaced by the source's name.
    pitr_restore_command: str = "equisplit-dr wal fetch %f %p --source {source}"
    #: Seconds `dr recover --start` waits for recovery to finish.
    pitr_recovery_timeout: int = Field(default=3600, gt=0)
    #: Seconds `dr recover --start` waits while the recovered server refuses its connection for another
    #: reason than "starting up" (a role or authentication refusal fails at once).
    pitr_connect_timeout: int = Field(default=300, gt=0)

    # WAL archiving (docs/WAL.md section 8)
    wal_compression_level: int = Field(default=1, ge=1, le=19)
    wal_push_concurrency: int = Field(default=4, ge=1, le=64)
    wal_push_lookahead: int = Field(default=8, ge=0, le=1024)
    #: Archive ready files ahead in a detached pusher; `wal push` answers from its acknowledgements.
    wal_push_async: bool = True
    wal_prefetch: int = Field(default=8, ge=0, le=1024)
    wal_prefetch_concurrency: int = Field(default=4, ge=1, le=64)

    @field_validator("secondary_regions", "dr_alert_emails", "dr_approval_required", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("backup_restore_roots", mode="before")
    @classmethod
    def _roots(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("backup_restore_roots", mode="after")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"{root} is not an absolute path")
        return value

    @field_validator("dr_approval_required", mode="after")
    @classmethod
    def _approvable(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - {"restore", "delete"})
        if unknown:
            raise ValueError(f"unknown action(s) {', '.join(unknown)}: the actions are restore and delete")
        return value

    @field_validator("backup_secondary_storage_urls", mode="before")
    @classmethod
    def _region_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        mapping: dict[str, str] = {}
        for item in _split_csv(value):
            region, sep, url = item.partition("=")
            if not sep or not region.strip() or not url.strip():
                raise ValueError("expected REGION=URL pairs separated by commas")
            mapping[region.strip()] = url.strip()
        return mapping

    @field_validator("backup_region_retention", mode="before")
    @classmethod
    def _region_retention(cls, value: Any) -> Any:
        return parse_region_retention(value) if isinstance(value, str) else value

    @field_validator(
        "backup_schedule_full",
        "backup_schedule_incremental",
        "backup_schedule_differential",
        "backup_schedule_archive",
        "backup_schedule_verify",
        "backup_schedule_verify_sample",
        "backup_schedule_retention",
    )
    @classmethod
    def _cron(cls, value: str) -> str:
        from app.scheduling import parse_cron

        parse_cron(value)
        return value

    @field_validator("schedule_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
        return value

    @field_validator("equisplit_dr_home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()  # relative homes resolve against the working directory

    @model_validator(mode="after")
    def _retention_regions_known(self) -> Settings:
        unknown = sorted(set(self.backup_region_retention) - set(self.secondary_storage_urls))
        if unknown:
            known = ", ".join(sorted(self.secondary_storage_urls)) or "none"
            raise ValueError(
                f"BACKUP_REGION_RETENTION names region(s) {', '.join(unknown)} that are not secondary "
                f"regions (those are: {known}); add them to SECONDARY_REGIONS or fix the name"
            )
        return self

    @model_validator(mode="after")
    def _signing_all_or_none(self) -> Settings:
        given = {
            "CELERY_SECURITY_KEY": self.celery_security_key,
            "CELERY_SECURITY_CERTIFICATE": self.celery_security_certificate,
            "CELERY_SECURITY_CERT_STORE": self.celery_security_cert_store,
        }
        missing = [name for name, value in given.items() if not value]
        if len(missing) < len(given) and missing:
            raise ValueError(
                f"message signing needs CELERY_SECURITY_KEY, _CERTIFICATE and _CERT_STORE together: "
                f"{', '.join(missing)} not set"
            )
        return self

    @property
    def message_signing(self) -> bool:
        """Whether task messages are signed and only signed ones accepted (CELERY_SECURITY_*)."""
        return self.celery_security_key is not None

    # Derived locations for the embedded defaults ------------------------------------------------

    @property
    def home(self) -> Path:
        return self.equisplit_dr_home

    @property
    def cache_dir(self) -> Path | None:
        """Where the local metadata cache is kept (BACKUP_CACHE_DIR, or <home>/cache); None when off."""
        if not self.backup_cache:
            return None
        return self.backup_cache_dir or self.home / "cache"

    @property
    def catalog_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'catalog.sqlite3'}"

    @property
    def storage_url(self) -> str:
        return self.backup_storage_url or (self.home / "repo").as_uri()

    @property
    def default_key_file(self) -> Path:
        return self.home / "master.key"

    @property
    def secondary_storage_urls(self) -> dict[str, str]:
        """Each secondary region's storage; a local directory stands in where none is set."""
        urls = dict(self.backup_secondary_storage_urls)
        for region in self.secondary_regions:
            urls.setdefault(region, (self.home / "regions" / region).as_uri())
        return urls

    @property
    def restore_roots(self) -> list[Path]:
        """Where restore tasks from the broker may write (BACKUP_RESTORE_ROOTS, or <home>/restores)."""
        return self.backup_restore_roots or [self.home / "restores"]

    @property
    def worker_threads(self) -> int:
        return self.backup_threads or max(2, (os.cpu_count() or 1) * 2)


def region_url(settings: Settings, region: str) -> str:
    """The storage URL of secondary region `region`; ConfigurationError naming the configured ones."""
    urls = settings.secondary_storage_urls
    if region not in urls:
        known = ", ".join(sorted(urls)) or "none"
        raise ConfigurationError(
            f"unknown region {region!r}: the secondary regions are {known}",
            hint="name one of SECONDARY_REGIONS, or map it in BACKUP_SECONDARY_STORAGE_URLS (region=url)",
        )
    return urls[region]


def load_settings(**overrides: Any) -> Settings:
    """Read the environment; a malformed value raises ConfigurationError naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = "_".join(str(p) for p in err["loc"]).upper() or "settings"
            problems.append(f"{name}: {err['msg']}")
        raise ConfigurationError(
            "malformed setting: " + "; ".join(problems),
            hint="fix the environment variable(s) named above and start again",
        ) from None
