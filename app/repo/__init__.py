"""The repository: encrypted, compressed, deduplicated objects in storage, readable without the catalog.

Nouns: keyring (master key, data keys, id key), envelope (one sealed object), chunk (a content-defined
piece of a file, named by a keyed hash), pack (many chunk blobs plus their own index), manifest
(everything one backup holds: a root naming the manifest chunks that hold its entries), config (how
every writer chunks). The byte layouts are in docs/FORMAT.md; this package's constants match it.
"""
