"""Restore drills: proof that a backup comes back, with the time it took (docs/DRILLS.md).

Nouns: a drill (the latest backup of one source restored to a scratch place and checked), its measured
RTO against RTO_TARGET, the point it reached and the RPO at that moment, the tree comparison (restored
files against the manifest), and the database checks of a PostgreSQL drill (recovered, started on a free
port, pg_amcheck and a row count of every table, stopped and removed).
"""
