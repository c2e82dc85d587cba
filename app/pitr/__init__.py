"""Point-in-time recovery of PostgreSQL sources (docs/PITR.md). Nouns: recovery target (a time, WAL
position, transaction, restore point or `latest`), timeline history, recovery plan (the base backup,
the timelines and every WAL segment from the backup's start to the target), WAL check, recovered
server, recovery result (the time reached, the measured RTO), disaster recovery manager."""
