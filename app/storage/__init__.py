"""Storage: where a repository's objects live, addressed as (kind, name), never as paths.

Nouns: the `Storage` protocol and its six verbs (put, get with a byte range, stat, list by kind and
prefix, delete, close); `ObjectInfo`; `Capabilities`; `PutOptions`. Backends: `LocalStorage`,
`MemoryStorage`, `S3Storage`. Wrappers implementing the same protocol: `RetryingStorage`,
`FaultyStorage`. `open_storage` turns a storage URL into a backend.
"""

from app.storage.base import Capabilities, ObjectInfo, PutOptions, Storage, exists
from app.storage.url import open_storage, redact_url

__all__ = ["Capabilities", "ObjectInfo", "PutOptions", "Storage", "exists", "open_storage", "redact_url"]
