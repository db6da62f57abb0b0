"""ml.pretrained: dlib's descriptor on real faces, resumable extraction, model files found offline."""
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ml.data.dataset import FaceDataset, FaceSample
from ml.pretrained import (
    ALIGNMENT_FILE,
    DETECTED,
    DIM,
    MAX_PIXELS,
    NOT_READ,
    WHOLE_IMAGE,
    WORK_SIDE,
    DlibDescriptor,
    decode_rgb,
    extract_pretrained,
    pretrained_embeddings,
)

SUBJECTS = ("s1", "s2", "s3")


@pytest.fixture
def att_list(att_root):
    """Three AT&T subjects, three images each: paths relative to att_root."""
    return [f"{s}/{i}.pgm" for s in SUBJECTS for i in (1, 2, 3)]


def _png(size=(8, 8), color=(120, 60, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def test_model_files_are_found_without_pkg_resources():
    # A fresh interpreter where pkg_resources cannot be imported (setuptools >= 81) and the
    # package's own __init__ (which imports it) must never run.
    code = (
        "import sys; sys.modules['pkg_resources'] = None\n"
        "from ml.pretrained import model_files\n"
        "files = model_files()\n"
        "assert 'face_recognition_models' not in sys.modules, 'its __init__ ran'\n"
        "print(sorted(files), all(p.is_file() and p.stat().st_size > 1_000_000 for p in files.values()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["['descriptor',", "'landmarks']", "True"]


def test_model_files_missing_says_what_to_install(monkeypatch):
    import ml.pretrained as pretrained

    monkeypatch.setattr(pretrained, "MODELS_PACKAGE", "no_such_package_xyz")
    with pytest.raises(pretrained.ModelFilesMissing, match="face-recognition-models"):
        pretrained.model_files()


def test_descriptors_of_real_faces_are_128d_finite_and_same_person_nearest(att_root, att_list, tmp_path):
    embeddings, norms, readable = pretrained_embeddings(att_list, tmp_path / "out", root=att_root)
    assert embeddings.shape == (len(att_list), DIM) and readable.all()
    assert np.isfinite(embeddings).all() and (norms > 0).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=2e-3)
    person = np.repeat(np.arange(len(SUBJECTS)), 3)
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    assert (person[similarity.argmax(axis=1)] == person).all()
    same = similarity[(person[:, None] == person[None, :]) & np.isfinite(similarity)]
    different = similarity[person[:, None] != person[None, :]]
    # The descriptor is not zero-mean (cosines of different people reach 0.9), so the test is
    # the ranking, not a fixed cosine: every face's nearest is its own person, and on average
    # the same person is clearly nearer.
    assert same.mean() - different.mean() > 0.05


def test_a_photo_is_detected_and_a_faceless_image_falls_back_to_the_whole_image(lfw_root):
    photo = next(iter(sorted((lfw_root / "images_deepfunneled" / "Aaron_Eckhart").glob("*.jpg"))))
    model = DlibDescriptor()
    vector, how = model.describe(decode_rgb(photo.read_bytes()))
    assert how == DETECTED and vector.shape == (DIM,)
    vector, how = model.describe(decode_rgb(_png((112, 112), (128, 128, 128))))
    assert how == WHOLE_IMAGE and np.isfinite(vector).all()


def test_decode_applies_exif_orientation_and_bounds_the_size():
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees: a portrait
    Image.new("RGB", (40, 20), (200, 10, 10)).save(out, "JPEG", exif=exif)
    assert decode_rgb(out.getvalue()).shape == (40, 20, 3)
    assert max(decode_rgb(_png((3000, 1500))).shape[:2]) == WORK_SIDE
    side = int(MAX_PIXELS ** 0.5) + 10
    header_only = io.BytesIO()
    Image.new("1", (side, side)).save(header_only, "PNG")  # tiny file, huge canvas
    with pytest.raises(ValueError, match="pixels"):
        decode_rgb(header_only.getvalue())


def test_extraction_resumes_after_an_interruption_and_records_alignment(att_root, att_list, tmp_path):
    samples = [FaceSample(p, 0) for p in att_list] + [FaceSample("missing.jpg", 0)]
    source = FaceDataset(samples, root=att_root)
    whole = extract_pretrained(source, tmp_path / "whole", batch_size=4)
    seen = []

    def stop_after_first_batch(done, total):
        seen.append(done)
        if len(seen) == 1:
            raise KeyboardInterrupt  # a killed worker

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        extract_pretrained(source, out, batch_size=4, progress=stop_after_first_batch)
    assert json.loads((out / "progress.json").read_text())["done"] == 4
    resumed = extract_pretrained(source, out, batch_size=4, progress=stop_after_first_batch)
    assert seen == [4, 8, 10]  # continued at row 4, not from the start
    np.testing.assert_array_equal(np.load(resumed.embedding.embeddings_path), np.load(whole.embedding.embeddings_path))
    assert resumed.embedding.unreadable == [len(att_list)]
    alignment = np.load(out / ALIGNMENT_FILE)
    assert alignment[-1] == NOT_READ and set(alignment[:-1].tolist()) <= {DETECTED, WHOLE_IMAGE}
    assert resumed.detected + resumed.whole_image == len(att_list)
    assert resumed.detected == int((alignment == DETECTED).sum())
    # A finished folder is not described again.
    again = extract_pretrained(source, out, batch_size=4, progress=lambda *a: pytest.fail("ran again"))
    assert again.embedding.unreadable == [len(att_list)]


def test_saved_progress_of_another_size_starts_over(att_root, att_list, tmp_path):
    first = FaceDataset([FaceSample(p, 0) for p in att_list[:2]], root=att_root)
    extract_pretrained(first, tmp_path, batch_size=2)
    second = FaceDataset([FaceSample(p, 0) for p in att_list[:3]], root=att_root)
    calls = []
    result = extract_pretrained(second, tmp_path, batch_size=2, progress=lambda d, t: calls.append(d))
    assert calls == [2, 3] and result.embedding.count == 3


def test_cli_pretrained_embed(att_root, tmp_path):
    from ml.__main__ import main

    folder = tmp_path / "faces"
    for subject in SUBJECTS[:2]:
        (folder / subject).mkdir(parents=True)
        for i in (1, 2):
            (folder / subject / f"{i}.pgm").write_bytes((att_root / subject / f"{i}.pgm").read_bytes())
    code = main(["pretrained-embed", "--data-folder", str(folder), "--out", str(tmp_path / "out"),
                 "--num-workers", "0"])
    assert code == 0
    assert np.load(tmp_path / "out" / "embeddings.npy").shape == (4, DIM)
