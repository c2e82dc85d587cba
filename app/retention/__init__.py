"""Retention: which backups are kept and why, and removing the rest (docs/RETENTION.md).

Nouns: retention policy (GFS counts, a minimum count, a keep-within window, archive years, the PITR
window), a candidate backup, a keep reason, a legal hold, the retention plan (every backup with its
reasons, or none), applying a plan (deletion in the safe order, each audited), and WAL thinning.
Policy is pure (`keep.keep_reasons`); applying it is separate and dry-run unless confirmed.
"""
