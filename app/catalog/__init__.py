"""The catalog: an index of what storage holds, the job ledger and the audit trail (SQLAlchemy 2).

Nouns: source (what is backed up), backup (one run, with its counters), pack and chunk (the index of
storage, rebuildable from it), job (a unit of work and its state), lock (a lease that keeps two jobs
off one source), audit entry (append-only, hash-chained), WAL segment and WAL archive (archived
PostgreSQL WAL and the newest end of it, from which the RPO comes). Storage stays the source of truth.
"""
