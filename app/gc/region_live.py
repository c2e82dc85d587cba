"""The part of the live set that only secondary regions hold (docs/GC.md section 5): backups the primary's
retention deleted and a region's policy keeps. The catalog's chunk index is one for every region, so the
packs such a backup needs stay indexed, and stay in the primary too, until no region keeps it; their
manifests are read from a region that keeps them."""

from __future__ import annotations

from sqlalchemy import Connection

from app.catalog.backup_regions import kept_only_in_regions
from app.context import Context
from app.errors import EquisplitError, IntegrityError
from app.gc.live import LiveSet, add_manifest


def gather_regional(ctx: Context, conn: Connection, live: LiveSet) -> int:
    """Add each region-only backup's manifest (read from the first region keeping it) to the live set;
    a region that cannot be read stops the collection (what it keeps cannot be known). Returns how many."""
    kept = kept_only_in_regions(conn)
    by_region: dict[str, list[str]] = {}
    for backup_id, regions in kept.items():
        by_region.setdefault(regions[0], []).append(backup_id)
    for region, backup_ids in sorted(by_region.items()):
        there = Context(ctx.settings, region=region)
        try:
            repo = there.repository
            for backup_id in backup_ids:
                add_manifest(conn, repo, backup_id, live, f" (kept only in region {region})")
        except IntegrityError:
            raise
        except EquisplitError as exc:
            raise IntegrityError(
                f"garbage collection stopped: region {region}, which alone keeps {len(backup_ids)} "
                "backup(s), cannot be read",
                detail=exc.message,
                hint="nothing was deleted; bring the region back (`equisplit-dr replication status`) "
                "and run the collection again",
            ) from exc
        finally:
            there.close()
    return len(kept)
