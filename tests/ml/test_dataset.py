"""FaceDataset, its constructors and unreadable-image handling; transforms; training selections."""
import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ml.data import (
    REMOVED,
    FaceDataset,
    FaceSample,
    TrainingSubset,
    apply_overrides,
    build_transform,
    collate_faces,
    distributed_sampler,
    read_label_file,
    select_from_file_list,
    select_with_overrides,
)
from ml.data.transforms import FaceTransform, to_tensor
from ml.io.recordio import RecordWriter, pack_image, write_insightface


def _jpeg_bytes(colour, size=(16, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _position_image(width=10, height=8) -> Image.Image:
    """Red encodes x, green encodes y: every crop and flip is checkable pixel by pixel."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[..., 0] = np.arange(width)[None, :] * 20
    array[..., 1] = np.arange(height)[:, None] * 30
    return Image.fromarray(array)


@pytest.fixture
def small_folder(tmp_path, att_root):
    """Three identities of att_faces (2 images each) plus a truncated JPEG and a text file
    named like an image in identity b."""
    root = tmp_path / "faces"
    for name, subject in (("a", "s1"), ("b", "s2"), ("c", "s3")):
        (root / name).mkdir(parents=True)
        for i in (1, 2):
            shutil.copy(att_root / subject / f"{i}.pgm", root / name / f"{i}.pgm")
    good = _jpeg_bytes((200, 30, 30))
    (root / "b" / "3_truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "b" / "4_not_an_image.jpg").write_text("this is not a picture")
    (root / "c" / "readme.txt").write_text("ignored: not an image extension")
    return root


# -- constructors ------------------------------------------------------------------------------

def test_from_folder_over_att_faces(att_root):
    dataset = FaceDataset.from_folder(att_root, transform=build_transform({"size": 64}))
    assert len(dataset) == 400
    assert dataset.num_classes == 40
    assert dataset.class_names[:3] == ["s1", "s10", "s11"]
    assert np.bincount(dataset.labels).tolist() == [10] * 40
    image, label, index = dataset[123]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert dataset.samples[123].location.split("/")[0] == dataset.class_names[label]
    assert index == 123
    assert -1.0 <= image.min() and image.max() <= 1.0
    # grey PGM decoded as RGB: three equal channels
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_from_list_relative_to_list_folder_with_numeric_label_order(tmp_path, att_root):
    (tmp_path / "with space").mkdir()
    for i in (1, 2, 3):
        shutil.copy(att_root / "s5" / f"{i}.pgm", tmp_path / "with space" / f"img {i}.pgm")
    (tmp_path / "list.txt").write_text(
        "# cleaned list\n"
        "with space/img 1.pgm 10\n"
        "\n"
        "with space/img 2.pgm\t2\n"
        "with space/img 3.pgm 7\n"
    )
    dataset = FaceDataset.from_list(tmp_path / "list.txt")
    assert dataset.class_names == ["2", "7", "10"]  # numeric, not "10" < "2"
    assert dataset.labels.tolist() == [2, 0, 1]
    assert dataset.root == str(tmp_path)
    item = dataset[0]
    expected = to_tensor(Image.open(att_root / "s5" / "1.pgm"))
    assert torch.equal(item.image, expected)


def test_from_list_with_explicit_root_and_name_labels(tmp_path, att_root):
    list_file = tmp_path / "list.txt"
    list_file.write_text("s2/1.pgm bob\ns1/1.pgm alice\ns1/2.pgm alice\n")
    dataset = FaceDataset.from_list(list_file, root=att_root)
    assert dataset.class_names == ["alice", "bob"]
    assert dataset.labels.tolist() == [1, 0, 0]
    assert all(item.image is not None for item in dataset)


def test_from_recordio_with_identity_records(tmp_path, att_root):
    images = [(att_root / "s1" / "1.pgm").read_bytes(), (att_root / "s1" / "2.pgm").read_bytes(),
              (att_root / "s2" / "1.pgm").read_bytes(), _jpeg_bytes((0, 0, 255))]
    broken = _jpeg_bytes((9, 9, 9))[:40]
    items = [(images[0], 0), (images[1], 0), (images[2], 1), (broken, 1), (images[3], 4)]
    rec = tmp_path / "train.rec"
    write_insightface(rec, items)
    dataset = FaceDataset.from_recordio(rec, transform=build_transform({"size": 32}))
    assert len(dataset) == 5
    assert dataset.class_names == ["0", "1", "4"]
    assert dataset.labels.tolist() == [0, 0, 1, 1, 2]
    assert all(isinstance(s.location, int) for s in dataset.samples)
    expected = build_transform({"size": 32})(Image.open(att_root / "s2" / "1.pgm").convert("RGB"))
    assert torch.equal(dataset[2].image, expected)
    assert dataset[3].image is None  # the truncated record
    assert dataset[4].image[2].mean() > 0.9  # blue JPEG


def test_from_recordio_without_header_reads_each_label(tmp_path):
    rec = tmp_path / "plain.rec"
    with RecordWriter(rec) as writer:
        writer.write(1, pack_image(_jpeg_bytes((255, 0, 0)), 5.0))
        writer.write(2, pack_image(_jpeg_bytes((0, 255, 0)), 3.0))
    dataset = FaceDataset.from_recordio(rec)
    assert dataset.class_names == ["3", "5"]
    assert dataset.labels.tolist() == [1, 0]
    assert dataset[1].image[1].mean() > 0.9


# -- unreadable images -------------------------------------------------------------------------

def test_unreadable_images_are_none_not_errors(small_folder):
    dataset = FaceDataset.from_folder(small_folder)
    names = [str(s.location) for s in dataset.samples]
    assert len(dataset) == 8  # readme.txt is not listed
    bad = {names.index("b/3_truncated.jpg"), names.index("b/4_not_an_image.jpg")}
    dataset.samples.append(FaceSample("c/missing.pgm", 2))
    bad.add(len(dataset) - 1)
    for index in range(len(dataset)):
        assert (dataset[index].image is None) == (index in bad)


@pytest.mark.parametrize("workers", [0, 2])
def test_collate_drops_and_reports_unreadable(small_folder, workers):
    dataset = FaceDataset.from_folder(small_folder, transform=build_transform({"size": 24}))
    names = [str(s.location) for s in dataset.samples]
    bad = sorted([names.index("b/3_truncated.jpg"), names.index("b/4_not_an_image.jpg")])
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=collate_faces)
    kept, skipped = [], []
    for batch in loader:
        assert batch.images.shape[0] == len(batch.labels) == len(batch.indices)
        if len(batch.indices):
            assert batch.images.shape[1:] == (3, 24, 24)
        kept += batch.indices.tolist()
        skipped += batch.skipped.tolist()
    assert sorted(skipped) == bad
    assert sorted(kept + skipped) == list(range(len(dataset)))


def test_collate_of_an_all_unreadable_batch():
    batch = collate_faces([(None, 1, 4), (None, 2, 5)])
    assert batch.images.numel() == 0 and len(batch.indices) == 0
    assert batch.skipped.tolist() == [4, 5]


# -- transforms --------------------------------------------------------------------------------

def test_to_tensor_maps_0_255_to_minus_one_one():
    image = Image.fromarray(np.array([[[0, 51, 255]]], dtype=np.uint8))
    assert to_tensor(image).flatten().tolist() == pytest.approx([-1.0, -0.6, 1.0])


def test_centre_crop_takes_the_central_window():
    tensor = FaceTransform(crop=(4, 6))(_position_image(width=11, height=9))
    assert tensor.shape == (3, 4, 6)
    xs = (tensor[0, 0] + 1) * 127.5 / 20
    ys = (tensor[1, :, 0] + 1) * 127.5 / 30
    # an odd margin leaves the extra pixel on the right / bottom
    assert xs.round().tolist() == [2, 3, 4, 5, 6, 7]  # left = (11 - 6) // 2
    assert ys.round().tolist() == [2, 3, 4, 5]  # top = (9 - 4) // 2


def test_crop_larger_than_image_is_clamped():
    assert FaceTransform(crop=50)(_position_image(10, 8)).shape == (3, 8, 10)


def test_crop_then_resize_matches_pillow():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8))
    tensor = build_transform({"crop": 150, "size": 112})(image)
    expected = to_tensor(image.crop((50, 50, 200, 200)).resize((112, 112), Image.Resampling.BILINEAR))
    assert torch.equal(tensor, expected)


def test_flip_mirrors_columns_and_only_when_training():
    image = _position_image()
    plain = FaceTransform()(image)
    assert torch.equal(FaceTransform(flip=True, flip_probability=1.0)(image), torch.flip(plain, dims=(2,)))
    assert torch.equal(build_transform({"flip": True}, train=False)(image), plain)
    torch.manual_seed(0)
    train = build_transform({"flip": True}, train=True)
    flipped = [not torch.equal(train(image), plain) for _ in range(40)]
    assert 5 < sum(flipped) < 35


def test_unknown_transform_option_is_rejected():
    with pytest.raises(ValueError, match="unknown transform option"):
        build_transform({"szie": 112})


# -- training selection ------------------------------------------------------------------------

def test_overrides_remove_and_relabel():
    selection = apply_overrides([0, 0, 1, 1, 2], {1: REMOVED, 3: 0, 4: 5})
    assert selection.labels.tolist() == [0, -1, 1, 0, 5]
    assert selection.indices.tolist() == [0, 2, 3, 4]
    assert selection.train_labels.tolist() == [0, 1, 0, 5]
    assert selection.num_classes == 6 and selection.removed == 1
    with pytest.raises(IndexError):
        apply_overrides([0, 1], {2: 0})


def test_label_file_applied_to_a_dataset(tmp_path, att_root):
    dataset = FaceDataset.from_folder(att_root)
    label_file = tmp_path / "labels.tsv"
    label_file.write_text("# round 1\n0\t-1\n5\t3\n\n399\t-1\n")
    assert read_label_file(label_file) == {0: -1, 5: 3, 399: -1}
    selection = select_with_overrides(dataset, label_file)
    assert len(selection.indices) == 398 and selection.num_classes == 40
    subset = TrainingSubset(dataset, selection)
    assert len(subset) == 398
    first = subset[0]  # dataset index 1: index 0 was removed
    assert first.index == 1 and first.label == dataset.samples[1].label
    relabelled = subset[4]  # dataset index 5
    assert relabelled.index == 5 and relabelled.label == 3
    (tmp_path / "bad.tsv").write_text("1\t2\t3\n")
    with pytest.raises(ValueError):
        read_label_file(tmp_path / "bad.tsv")


def test_cleaned_file_list_selects_by_path(small_folder):
    dataset = FaceDataset.from_folder(small_folder)
    names = [str(s.location) for s in dataset.samples]
    cleaned = small_folder / "cleaned.txt"
    cleaned.write_text(
        "a/1.pgm a\n"           # class name
        "./b/1.pgm 0\n"         # integer id, path not normalised
        f"{small_folder}/c/2.pgm c\n"  # absolute path
        "z/unknown.pgm a\n"     # not in the dataset
    )
    selection = select_from_file_list(dataset, cleaned)
    expected = np.full(len(dataset), REMOVED)
    expected[names.index("a/1.pgm")] = 0
    expected[names.index("b/1.pgm")] = 0
    expected[names.index("c/2.pgm")] = 2
    assert selection.labels.tolist() == expected.tolist()
    assert selection.unmatched == 1
    cleaned.write_text("a/1.pgm nobody\n")
    with pytest.raises(ValueError, match="neither a class name"):
        select_from_file_list(dataset, cleaned)


def test_distributed_sampler_splits_deterministically(att_root):
    dataset = FaceDataset.from_folder(att_root)
    subset = TrainingSubset(dataset, apply_overrides(dataset.labels, {i: REMOVED for i in range(0, 400, 4)}))
    ranks = [distributed_sampler(subset, seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(3)
    epoch3 = [list(s) for s in ranks]
    assert sorted(epoch3[0] + epoch3[1]) == list(range(300))
    again = distributed_sampler(subset, seed=7, num_replicas=2, rank=0)
    again.set_epoch(3)
    assert list(again) == epoch3[0]
    again.set_epoch(4)
    assert list(again) != epoch3[0]
    single = distributed_sampler(subset, shuffle=False)
    assert list(single) == list(range(300))
    loader = DataLoader(subset, batch_size=50, sampler=ranks[0], collate_fn=collate_faces)
    indices = torch.cat([b.indices for b in loader]).tolist()
    assert len(indices) == 150 and all(i % 4 for i in indices)


# -- EXIF orientation and the pixel budget (issue 10, items 13 and 9) ----------------------------

def _sideways_jpeg(path, size=(20, 10)):
    """A wide JPEG whose EXIF orientation 6 says: rotate 90 degrees clockwise to view (a phone
    held upright); viewed correctly it is tall."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", size, (200, 30, 30)).save(path, "JPEG", exif=exif)


def test_a_jpeg_with_exif_orientation_is_loaded_upright(tmp_path):
    _sideways_jpeg(tmp_path / "1.jpg")
    dataset = FaceDataset([FaceSample("1.jpg", 0)], root=tmp_path)
    assert dataset.load_image(0).size == (10, 20)
    assert tuple(dataset[0].image.shape) == (3, 20, 10)


def test_an_image_beyond_the_pixel_budget_is_unreadable_and_never_decoded(tmp_path, monkeypatch):
    from ml.io import budget

    Image.new("L", (2000, 2000), 128).save(tmp_path / "big.png")
    Image.new("L", (100, 100), 128).save(tmp_path / "small.png")
    monkeypatch.setattr(budget, "IMAGE_MAX_PIXELS", 1_000_000)
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    dataset = FaceDataset([FaceSample("big.png", 0), FaceSample("small.png", 0)], root=tmp_path)
    assert dataset[0].image is None
    assert (2000, 2000) not in decoded
    assert dataset[1].image is not None
