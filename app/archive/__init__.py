"""The archive tier (docs/ARCHIVE.md): archive backups whose file chunks live in cold packs of their own,
possibly in an S3 class that must be thawed (restored) before a read.

Nouns: tier (standard, cold: app/repo/format.py `Tier`), thaw (an S3 restore request for a pack, and
the wait until its temporary copy is readable), thaw options (request or not, days, retrieval tier,
timeout, poll interval), thaw report.
"""
