"""extract_embeddings: file layout, flip-sum, norms, unreadable rows, resume after a kill."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ml.data import FaceDataset, FaceSample, build_transform
from ml.embed import extract_embeddings

SIZE = 8
DIM = 5


class CountingNet(nn.Module):
    """flatten + linear, counting the images it has embedded."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(3 * SIZE * SIZE, DIM)
        self.seen = 0

    def forward(self, x):
        self.seen += len(x)
        return self.linear(x.flatten(1))


@pytest.fixture
def image_dataset(tmp_path):
    """21 random 8x8 images; row 6 is a text file and row 13 is missing."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    folder.mkdir()
    samples = []
    for i in range(21):
        name = f"{i:02d}.png"
        if i == 6:
            (folder / name).write_text("not an image")
        elif i != 13:
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(folder / name)
        samples.append(FaceSample(name, i % 3))
    return FaceDataset(samples, root=folder, transform=build_transform({"size": SIZE}))


def _manual(model, dataset, index, flip=True):
    image = dataset[index].image[None]
    with torch.no_grad():
        z = model.linear(image.flatten(1))
        total = z + model.linear(torch.flip(image, dims=(3,)).flatten(1)) if flip else z
    return (total / total.norm()).numpy()[0], float(z.norm())


def test_files_shapes_and_flip_sum(tmp_path, image_dataset):
    model = CountingNet()
    model.train()
    result = extract_embeddings(model, image_dataset, tmp_path / "out", batch_size=4)
    assert model.training  # mode given back
    assert result.count == 21 and result.dim == DIM
    assert result.unreadable == [6, 13]
    assert json.loads(result.unreadable_path.read_text()) == [6, 13]
    embeddings = np.load(result.embeddings_path, mmap_mode="r")
    norms = np.load(result.norms_path)
    assert embeddings.shape == (21, DIM) and embeddings.dtype == np.float16
    assert norms.shape == (21,) and norms.dtype == np.float32
    readable = [i for i in range(21) if i not in (6, 13)]
    lengths = np.linalg.norm(embeddings.astype(np.float32), axis=1)
    np.testing.assert_allclose(lengths[readable], 1.0, atol=2e-3)
    assert not embeddings[[6, 13]].any() and not norms[[6, 13]].any()
    for index in (0, 5, 20):
        vector, norm = _manual(model, image_dataset, index)
        np.testing.assert_allclose(embeddings[index], vector, atol=2e-3)
        assert norms[index] == pytest.approx(norm, rel=1e-5)
    state = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert state["done"] == 21 and state["complete"]


def test_without_flip_the_embedding_is_the_normalised_output(tmp_path, image_dataset):
    model = CountingNet()
    result = extract_embeddings(model, image_dataset, tmp_path / "out", batch_size=8, flip=False)
    assert model.seen == 19  # each readable image once
    embeddings = np.load(result.embeddings_path)
    vector, _ = _manual(model, image_dataset, 3, flip=False)
    np.testing.assert_allclose(embeddings[3], vector, atol=2e-3)


class Stop(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path, image_dataset):
    reference = extract_embeddings(CountingNet(), image_dataset, tmp_path / "reference", batch_size=4)

    calls = []

    def stop_after_two(done, total):
        calls.append((done, total))
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        extract_embeddings(CountingNet(), image_dataset, tmp_path / "run", batch_size=4, progress=stop_after_two)
    assert calls == [(4, 21), (8, 21)]
    assert json.loads((tmp_path / "run" / "progress.json").read_text())["done"] == 8

    model = CountingNet()
    seen = []
    resumed = extract_embeddings(model, image_dataset, tmp_path / "run", batch_size=4,
                                 progress=lambda done, total: seen.append(done))
    assert seen == [12, 16, 20, 21]
    assert model.seen == 2 * (13 - 1)  # rows 8..20 minus missing row 13, each with its flip
    assert resumed.unreadable == [6, 13]  # row 6 was found before the interruption
    np.testing.assert_array_equal(np.load(resumed.embeddings_path), np.load(reference.embeddings_path))
    np.testing.assert_array_equal(np.load(resumed.norms_path), np.load(reference.norms_path))

    again = CountingNet()
    extract_embeddings(again, image_dataset, tmp_path / "run", batch_size=4)
    assert again.seen == 0  # complete: nothing recomputed
    restart = CountingNet()
    extract_embeddings(restart, image_dataset, tmp_path / "run", batch_size=4, resume=False)
    assert restart.seen == 2 * 19


def test_resume_with_another_model_width_is_refused(tmp_path, image_dataset):
    with pytest.raises(Stop):
        def stop(done, total):
            raise Stop
        extract_embeddings(CountingNet(), image_dataset, tmp_path / "run", batch_size=4, progress=stop)
    wider = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, DIM + 1))
    with pytest.raises(ValueError, match="resume=False"):
        extract_embeddings(wider, image_dataset, tmp_path / "run", batch_size=4)


def test_all_unreadable_is_an_error(tmp_path):
    dataset = FaceDataset([FaceSample("nope.png", 0)], root=tmp_path)
    with pytest.raises(RuntimeError, match="none of the 1 images"):
        extract_embeddings(CountingNet(), dataset, tmp_path / "out")
