"""Restores of file-tree backups. Nouns: selection (the manifest entries asked for), target (a directory
that must be empty unless overwriting or skipping what exists), target tree (the target's directories
opened by descriptor, no link followed), read plan (chunks grouped by pack, read with few ranged reads),
partial file (written under a short temporary name, renamed once whole)."""
