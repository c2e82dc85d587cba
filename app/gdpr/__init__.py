"""The GDPR erasure ledger (docs/GDPR.md): erasure requests recorded with the SQL that forgets a subject
(`ledger`), and their re-application to every PostgreSQL database a restore, a recovery or a drill hands
back (`reapply`). Backups stay immutable; a restored copy never keeps an erased subject."""
