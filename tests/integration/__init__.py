"""Integration tests against real PostgreSQL, Redis, Celery workers and moto's S3 server."""
