"""Garbage collection: removing packs no kept backup needs, safely beside running backups (docs/GC.md).

Nouns: the live set (every chunk a manifest in storage names, and every pack a manifest root names),
a candidate (a pack none of whose indexed chunks is live: its chunks leave the index, and it waits),
the blockers (backups running when its chunks left the index), the grace period, the sweep (a
candidate whose blockers have all finished and whose grace has passed is deleted, unless a manifest
written since needs it, in which case its chunks return to the index), and repacking (the live chunks
of a mostly-dead pack copied into a new pack, after which the old one is a candidate).
"""
