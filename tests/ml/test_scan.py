"""Folder scans that meet hostile file systems: names that are not UTF-8, symlink loops,
paths too long to index (no database)."""
import io
import os

import pytest
from PIL import Image

from ml.io.scan import MAX_PATH_BYTES, Rejected, RootGuard, scan_folder


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, format="JPEG")
    return out.getvalue()


def _storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def test_names_that_are_not_utf8_are_skipped_and_reported_as_storable_text(tmp_path):
    root = tmp_path / "root"
    (root / "alice").mkdir(parents=True)
    (root / "alice" / "1.jpg").write_bytes(jpeg())
    os.mkdir(os.fsencode(root) + b"/bad\xfe")
    with open(os.fsencode(root) + b"/alice/bad\xff.pgm", "wb") as out:
        out.write(jpeg())
    with open(os.fsencode(root) + b"/bad\xfe/2.jpg", "wb") as out:
        out.write(jpeg())

    result = scan_folder(root)

    assert result.paths == ["alice/1.jpg"]
    assert result.rejected == [
        ("alice/bad\\xff.pgm", "name is not valid UTF-8"),
        ("bad\\xfe", "name is not valid UTF-8"),
    ]
    assert all(_storable(where) for where, _ in result.rejected)


@pytest.mark.parametrize("layout", ["self", "pair"])
def test_a_symlink_loop_in_an_identity_folder_is_counted_and_skipped(tmp_path, layout):
    root = tmp_path / "root"
    alice = root / "alice"
    alice.mkdir(parents=True)
    (alice / "1.jpg").write_bytes(jpeg())
    if layout == "self":
        os.symlink("loop.jpg", alice / "loop.jpg")
    else:
        os.symlink("b.jpg", alice / "a.jpg")
        os.symlink("a.jpg", alice / "b.jpg")

    result = scan_folder(root)

    assert result.paths == ["alice/1.jpg"]
    problems = result.unreadable + result.rejected
    looped = ["alice/loop.jpg"] if layout == "self" else ["alice/a.jpg", "alice/b.jpg"]
    assert sorted(where for where, _ in problems) == looped
    assert all(reason == "symlink loop" for _, reason in problems)


def test_a_symlink_loop_at_the_top_level_is_counted_and_skipped(tmp_path):
    root = tmp_path / "root"
    (root / "bob").mkdir(parents=True)
    (root / "bob" / "1.jpg").write_bytes(jpeg())
    os.symlink("loop", root / "loop")

    result = scan_folder(root)

    assert result.paths == ["bob/1.jpg"]
    assert result.rejected == [("loop", "symlink loop")]


def test_paths_longer_than_the_documented_maximum_are_refused(tmp_path):
    guard = RootGuard(tmp_path)
    fits = "a/" + "x" * (MAX_PATH_BYTES - 6) + ".jpg"
    assert len(fits.encode()) == MAX_PATH_BYTES
    assert guard.relative(fits) == fits
    with pytest.raises(Rejected, match=f"path longer than {MAX_PATH_BYTES} bytes"):
        guard.relative("a/" + "\u00e9" * MAX_PATH_BYTES + ".jpg")  # 2 bytes a character in UTF-8


def test_a_symlink_to_another_file_of_the_same_folder_is_imported_once(tmp_path):
    alice = tmp_path / "root" / "alice"
    alice.mkdir(parents=True)
    (alice / "2.jpg").write_bytes(jpeg())
    os.symlink("2.jpg", alice / "1.jpg")  # the link sorts first: the real file is then the copy
    os.symlink("2.jpg", alice / "3.jpg")

    result = scan_folder(tmp_path / "root")

    assert result.paths == ["alice/1.jpg"]
    assert result.rejected == [("alice/2.jpg", "same file as alice/1.jpg"),
                               ("alice/3.jpg", "same file as alice/1.jpg")]


def test_verify_images_refuses_an_image_beyond_the_pixel_budget_undecoded(tmp_path, monkeypatch):
    from ml.io import budget

    bob = tmp_path / "root" / "bob"
    bob.mkdir(parents=True)
    Image.new("L", (2000, 2000), 128).save(bob / "big.png")
    (bob / "small.jpg").write_bytes(jpeg())
    monkeypatch.setattr(budget, "IMAGE_MAX_PIXELS", 1_000_000)
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))

    result = scan_folder(tmp_path / "root", verify_images=True)

    assert result.paths == ["bob/small.jpg"]
    assert result.unreadable == [("bob/big.png", "image of 4000000 pixels is over the budget of 1000000")]
    assert (2000, 2000) not in decoded
