"""WAL archiving for PostgreSQL sources (docs/WAL.md): `wal push` as archive_command, `wal fetch` as
restore_command, `wal status` for the archived ranges, gaps and the achieved RPO.

Nouns: WAL name (segment, partial, history, backup; timeline and segment number), WAL object (one
envelope per file, its meta and content hash), push (store durably, then record; lookahead over
`archive_status/*.ready`), push spool and pusher (ready files archived ahead by a long-lived process,
each acknowledged once durable and recorded), fetch (verified, from the spool or from storage), spool
and prefetcher (the next segments fetched ahead into a local directory), helper lock (one pusher or
prefetcher per spool), status (ranges, gaps, RPO). Push and fetch use storage and the catalog only:
never the broker.
"""
