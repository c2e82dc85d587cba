"""Replication: the repository's objects copied byte for byte to each secondary region
(docs/REPLICATION.md).

Nouns: a region (a name and its storage), a pass (one region's round: keyring and config first, then
what the catalog says is new, packs and WAL before the manifests that need them), a copy (one object,
idempotent and atomic), the replica state of each object per region (app/catalog/replicas.py), and the
replication status with its lag against the target.
"""
