"""Runbooks (docs/RUNBOOKS.md): documented disaster-recovery procedures executed step by step by
`dr execute`, each step named, timed, logged and audited (`run`), and the procedures themselves
(`procedures`): full-restore and database-failover."""
