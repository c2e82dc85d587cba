"""A restore task's target must lie below a restore root, links resolved (app/restore/roots.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.errors import RestoreTargetError
from app.restore.roots import confine


def test_a_target_below_a_root_or_the_root_itself_is_accepted(tmp_path: Path) -> None:
    root = tmp_path / "restores"
    root.mkdir()
    assert confine(str(root / "docs" / "2026"), [root]) == root / "docs" / "2026"
    assert confine(root, [root]) == root
    assert confine(str(root) + "//docs/./x", [tmp_path / "other", root]) == root / "docs" / "x"
    # a root that does not exist yet: the restore creates it with the target
    assert confine(str(tmp_path / "new-root" / "a"), [tmp_path / "new-root"]) == tmp_path / "new-root" / "a"


@pytest.mark.parametrize(
    "target", ["relative/dir", "/etc", "{root}/../escape", "{root}-evil/x", "{root}/../restores-x"]
)
def test_a_target_outside_every_root_is_refused(tmp_path: Path, target: str) -> None:
    root = tmp_path / "restores"
    root.mkdir()
    with pytest.raises(RestoreTargetError) as caught:
        confine(target.format(root=root), [root])
    assert "BACKUP_RESTORE_ROOTS" in (caught.value.hint or "")


def test_a_link_inside_a_root_that_leads_out_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "restores"
    root.mkdir()
    outside = tmp_path / "etc"
    outside.mkdir()
    os.symlink(outside, root / "link")
    os.symlink(tmp_path / "nowhere", root / "dangling")
    for target in (root / "link", root / "link" / "new", root / "dangling" / "new"):
        with pytest.raises(RestoreTargetError, match="outside the restore roots") as caught:
            confine(str(target), [root])
        assert "links resolved" in (caught.value.detail or "")
    os.symlink(root / "real", root / "inward")  # a link that stays inside is followed, and fine
    assert confine(str(root / "inward" / "x"), [root]) == root / "real" / "x"


def test_a_root_given_through_a_link_is_compared_resolved(tmp_path: Path) -> None:
    real = tmp_path / "data" / "restores"
    real.mkdir(parents=True)
    os.symlink(real, tmp_path / "restores")
    assert confine(str(tmp_path / "restores" / "x"), [tmp_path / "restores"]) == real / "x"
