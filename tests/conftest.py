"""Fixtures shared by every tier: moto's S3 server, fresh PostgreSQL databases, throwaway PostgreSQL
clusters, backup systems."""

from tests.support.pg import fresh_pg_url  # noqa: F401
from tests.support.pgcluster import pg_template  # noqa: F401
from tests.support.s3server import s3_bucket_url, s3_endpoint  # noqa: F401
from tests.support.system import make_system, system, system_any_backend  # noqa: F401
