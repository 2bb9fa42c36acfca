"""Atomic writes: files (atomic_target) and folders (replace_dir) are never seen half-written."""

import os

import pytest

from deploy_kit.fsutil import atomic_target, replace_dir


def _make(path, text):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "f.txt"), "w") as fh:
        fh.write(text)


def test_replace_dir_swaps_a_folder_and_leaves_nothing_behind(tmp_path):
    dst, new = tmp_path / "out", tmp_path / ".new"
    _make(dst, "old")
    _make(new, "new")
    replace_dir(str(new), str(dst))
    assert (dst / "f.txt").read_text() == "new" and not new.exists()
    assert sorted(os.listdir(tmp_path)) == ["out"]  # the old folder was removed after the swap
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(dst).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_replace_dir_parks_the_old_folder_where_asked(tmp_path):
    repo, park = tmp_path / "repo", tmp_path / "park"
    _make(repo / "model", "old")
    _make(park / "model", "new")
    replace_dir(str(park / "model"), str(repo / "model"), aside=str(park))
    assert (repo / "model" / "f.txt").read_text() == "new"
    assert os.listdir(repo) == ["model"] and os.listdir(park) == []


def test_a_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(RuntimeError):
        with atomic_target(str(target)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []
