"""Backups of file trees. Nouns: plan (which files to re-read against the parent, split into units of
bounded bytes), chunk writer (dedup, seal, pack, upload, index), unit (files read by one worker),
run (one backup end to end: lock, plan, units, manifest, catalog, audit)."""
