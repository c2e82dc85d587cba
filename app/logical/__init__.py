"""Logical exports of one PostgreSQL database (docs/POSTGRES.md section 5), for portability.

Nouns: connection (a DSN split into a password-free conninfo and the environment that carries the
password), server (its version; whether a database holds user relations), program (pg_dump and
pg_restore of the right major version, and what they said on stderr), export (pg_dump's custom format
streamed through the chunk writer and recorded as a backup of type `logical`), import (the chunks
streamed in order into pg_restore, into an empty database only).
"""
