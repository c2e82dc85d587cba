"""Verification: proof that backups restore, without restoring them (docs/VERIFY.md).

Nouns: verify options (which backups, how much data to read), a structure check (every object a
backup needs exists with the expected size), a data check (a pack's blobs read back, decrypted and
re-hashed, its index compared with the catalog), a problem (what is wrong, where, which files), the
bandwidth limit, and the verification report. Damage found marks the backups that need it and takes
the damaged chunks out of the chunk index, so the next backup stores their content again.
"""
