"""Backups of file trees and PostgreSQL clusters. Nouns: plan (which files to re-read against the
parent, split into units of bounded bytes), chunk writer (dedup, seal, pack, upload, index), unit (files
read by one worker), source hooks (how a kind is walked and bracketed: a PostgreSQL base backup's held
session, pg_backup_start to pg_backup_stop), manifest store (the entries' new manifest chunks, then the
root), run (one backup end to end: lock, plan, units, manifest, catalog, audit)."""
