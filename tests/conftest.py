"""Fixtures shared by every tier: moto's S3 server, fresh PostgreSQL databases, throwaway PostgreSQL
clusters and the archive homes they push to, backup systems, loopback alert channels."""

from tests.support.alert_servers import hook_server, smtp_server  # noqa: F401
from tests.support.pg import fresh_pg_url  # noqa: F401
from tests.support.pgarchive import archive, archived_cluster  # noqa: F401
from tests.support.pgcluster import pg_template, recovery_area  # noqa: F401
from tests.support.s3server import s3_bucket_url, s3_endpoint  # noqa: F401
from tests.support.sentry_server import sentry_server  # noqa: F401
from tests.support.system import make_system, system, system_any_backend  # noqa: F401
