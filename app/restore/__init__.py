"""Restores of file-tree backups. Nouns: selection (the manifest entries asked for), target (a directory
that must be empty unless overwriting), read plan (chunks grouped by pack, read with few ranged reads),
partial file (written under a temporary name, renamed once whole)."""
