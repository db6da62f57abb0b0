"""What imports is what trains: one folder walk, one set of image extensions and one file-list
parser serve import (ml.io.scan, ml.io.filelist), training (FaceDataset) and noise injection."""
import io

import pytest
import torch
from PIL import Image

from ml.data import FaceDataset
from ml.io.filelist import scan_file_list
from ml.io.scan import folder_images, scan_folder
from ml.synthetic_noise import load_folder


def _image(fmt: str, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 12), colour).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def faces(tmp_path):
    """a: a GIF and a JPEG; b: a PNG, a PGM with the .pnm extension, a nested folder, a text
    file and a hidden file."""
    root = tmp_path / "faces"
    (root / "a").mkdir(parents=True)
    (root / "b" / "nested").mkdir(parents=True)
    (root / "a" / "1.gif").write_bytes(_image("GIF"))
    (root / "a" / "2.jpg").write_bytes(_image("JPEG"))
    (root / "b" / "1.png").write_bytes(_image("PNG"))
    Image.new("L", (12, 12), 90).save(root / "b" / "2.pnm", "PPM")
    (root / "b" / "nested" / "3.jpg").write_bytes(_image("JPEG"))
    (root / "b" / "notes.txt").write_text("not a face")
    (root / "b" / ".hidden.jpg").write_bytes(_image("JPEG"))
    return root


def test_a_gif_imports_and_trains(faces):
    imported = scan_folder(faces)
    assert "a/1.gif" in imported.paths
    dataset = FaceDataset.from_folder(faces)
    gif = [str(s.location) for s in dataset.samples].index("a/1.gif")
    image, label, _ = dataset[gif]
    assert isinstance(image, torch.Tensor) and image.shape[0] == 3
    assert dataset.class_names[label] == "a"


def test_import_training_and_noise_injection_take_the_same_images(faces):
    imported = scan_folder(faces)
    expected = list(zip(imported.paths, imported.labels))
    assert expected == [("a/1.gif", "a"), ("a/2.jpg", "a"), ("b/1.png", "b"), ("b/2.pnm", "b")]
    assert folder_images(faces) == expected
    assert load_folder(faces) == expected
    dataset = FaceDataset.from_folder(faces)
    assert [(str(s.location), dataset.class_names[s.label]) for s in dataset.samples] == expected
    assert ("b/nested", "nested folder, not imported") in imported.rejected  # and not trained either


def test_given_identities_keep_their_order_and_must_be_folders(faces):
    assert [identity for _, identity in folder_images(faces, ["b", "a"])] == ["b", "b", "a", "a"]
    for bad in ("../faces", "a/b", "missing"):
        with pytest.raises(ValueError, match="is not a folder directly under"):
            folder_images(faces, [bad])


def test_an_insightface_lst_reads_the_same_for_import_and_training(faces, tmp_path):
    lst = tmp_path / "train.lst"
    lst.write_text("0\ta/1.gif\t3.000000\n1\ta/2.jpg\t3\n2\tb/1.png\t7.0\n", encoding="utf-8")
    imported = scan_file_list(lst, faces)
    assert list(zip(imported.paths, imported.labels)) == [("a/1.gif", "3"), ("a/2.jpg", "3"), ("b/1.png", "7")]
    dataset = FaceDataset.from_list(lst, faces)
    assert [(s.location, dataset.class_names[s.label]) for s in dataset.samples] == \
        list(zip(imported.paths, imported.labels))


def test_a_line_import_refuses_stops_training_with_its_number(faces, tmp_path):
    lst = tmp_path / "bad.lst"
    lst.write_text("a/1.gif a\nno-label-here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.lst:2: malformed line"):
        FaceDataset.from_list(lst, faces)
