"""ml.io.atomic, the one way ml and the app write a file whole or not at all."""
import numpy as np
import pytest

from ml.io import atomic
from ml.io.atomic import atomic_open, atomic_path, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as fh:
            fh.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_numpy_writes_through_a_file_object_under_the_final_name(tmp_path):
    target = tmp_path / "deep" / "faces.npz"
    with atomic_open(target) as fh:
        np.savez(fh, labels=np.arange(3))
    with np.load(target) as data:
        assert data["labels"].tolist() == [0, 1, 2]
    assert [p.name for p in target.parent.iterdir()] == ["faces.npz"]


def test_the_file_then_its_folder_are_synced_unless_not_durable(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(atomic, "fsync_path", lambda path: synced.append(str(path)))
    target = tmp_path / "a.json"
    with atomic_path(target) as partial:
        partial.write_text("{}")
    assert synced[0].endswith(".part") and synced[1:] == [str(tmp_path)]
    synced.clear()
    write_text_atomic(tmp_path / "cache.txt", "x", durable=False)
    assert synced == [] and (tmp_path / "cache.txt").read_text() == "x"
