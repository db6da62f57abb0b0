"""Near-duplicate images from pixels (ml.mining.copies): planted copies of every variant are
found, different photos of one person are not, cross-identity copies keep the right one."""
import io
import math

import numpy as np
from PIL import Image

from ml.mining import mine
from ml.mining.copies import (
    CopyConfig,
    ImageFingerprints,
    fingerprint_images,
    hamming,
    mine_copies,
    phash_pairs,
)
from ml.synthetic_noise import inject_noise, load_folder, plant_copies, read_lines


def textured(seed: int, size=(120, 140)) -> Image.Image:
    """A random picture with structure at every scale (smooth shapes plus fine texture)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    fine = rng.normal(0, 12, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.asarray(coarse, float) + fine, 0, 255).astype(np.uint8))


def make_folder(root, identities=4, per=5):
    for k in range(identities):
        folder = root / f"person{k}"
        folder.mkdir(parents=True)
        for i in range(per):
            textured(100 * k + i).save(folder / f"{i:02d}.jpg", quality=92)
    return load_folder(root)


def labelled(noisy):
    names = {n: i for i, n in enumerate(sorted({e.given_label for e in noisy.entries}))}
    return np.array([names[e.given_label] for e in noisy.entries]), names


def fingerprints_of(noisy, root):
    paths = [e.path if e.path.startswith("/") else str(root / e.path) for e in noisy.entries]
    return fingerprint_images(lambda i: open(paths[i], "rb").read(), len(paths))


def planted_pairs(noisy):
    index = {e.path: i for i, e in enumerate(noisy.entries)}
    return {(index[e.copy_of], i): e for i, e in enumerate(noisy.entries) if e.kind == "copy"}


def test_planted_copies_of_every_variant_are_found_and_nothing_else(tmp_path):
    root = tmp_path / "images"
    samples = make_folder(root)
    noisy = inject_noise(samples, [], closed=0, open=0, split=0, seed=0)
    noisy = plant_copies(noisy, root, tmp_path / "out", 8, 0.0, seed=3)
    planted = planted_pairs(noisy)
    assert sorted(e.variant for e in planted.values()) == sorted(["exact", "reencode", "resize", "crop"] * 2)
    labels, _ = labelled(noisy)
    flags = mine_copies(fingerprints_of(noisy, root), labels)
    found = {(f.index, f.other_index): f for f in flags}
    assert set(found) == set(planted)
    for (original, copy), entry in planted.items():
        f = found[(original, copy)]
        # Same identity: the original (larger or earlier) stays, the copy goes.
        assert f.kind == "near_duplicate" and f.suggestion == "remove" and f.evidence.remove == "other_index"
        assert f.evidence.same_identity and f.evidence.exact == (entry.variant == "exact")
        assert 0 <= f.evidence.pixel_distance <= f.evidence.thresholds["pixel_distance"]["value"]
        assert 0.0 <= f.score <= 1.0 and isinstance(f.evidence.hamming, int)
        if entry.variant == "exact":
            assert f.score == 1.0 and f.evidence.pixel_distance == 0


def test_the_larger_copy_is_kept_whatever_its_position(tmp_path):
    big = textured(7, (200, 200))
    small = big.resize((120, 120), Image.Resampling.LANCZOS)
    images = [small, textured(8), big]
    data = []
    for image in images:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=90)
        data.append(buf.getvalue())
    fp = fingerprint_images(lambda i: data[i], 3)
    flags = mine_copies(fp, np.array([0, 0, 0]))
    assert [(f.index, f.other_index) for f in flags] == [(2, 0)]
    assert flags[0].evidence.size == [200, 200] and flags[0].evidence.other_size == [120, 120]


def cross_identity_case():
    """Three identities of 6 faces; image 18 is a copy of face 0 (person A) filed under B."""
    data = []
    for seed in range(18):
        buf = io.BytesIO()
        textured(seed).save(buf, "PNG")
        data.append(buf.getvalue())
    data.append(data[0])
    labels = np.array([0] * 6 + [1] * 6 + [2] * 6 + [1])
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    true = np.array([0] * 6 + [1] * 6 + [2] * 6 + [0])
    embeddings = 0.8 * centres[true] + 0.6 * rng.standard_normal((19, 32)) / math.sqrt(32)
    embeddings[18] = embeddings[0]  # one picture, one embedding
    return fingerprint_images(lambda i: data[i], len(data)), labels, embeddings.astype(np.float32)


def test_a_copy_across_identities_keeps_the_one_under_the_identity_it_belongs_to():
    fp, labels, embeddings = cross_identity_case()
    flags = mine_copies(fp, labels, embeddings=embeddings)
    assert len(flags) == 1
    f = flags[0]
    # The copy under A (face 0) stays, the one filed under B (face 18) is suggested for removal.
    assert (f.index, f.other_index) == (0, 18) and (f.label, f.other_label) == (0, 1)
    assert f.suggestion == "remove" and f.evidence.remove == "other_index"
    assert not f.evidence.same_identity
    cos = f.evidence.identity_cosine
    assert cos["index"] > cos["other_index"] + CopyConfig().identity_margin


def test_without_embeddings_a_cross_identity_copy_is_the_reviewers_choice():
    fp, labels, _ = cross_identity_case()
    flags = mine_copies(fp, labels)
    assert len(flags) == 1
    f = flags[0]
    # Face 0's identity is smaller than B (6 against 7 faces): size is no evidence, nothing
    # is removed by default.
    assert f.suggestion == "keep" and f.evidence.remove is None
    assert {f.index, f.other_index} == {0, 18}


def test_unreadable_images_are_marked_and_the_rest_still_compared(tmp_path):
    good = io.BytesIO()
    textured(1).save(good, "JPEG", quality=90)
    payloads = [good.getvalue(), b"not an image", good.getvalue()[:200], None, good.getvalue()]

    def read(i):
        if payloads[i] is None:
            raise OSError("gone")
        return payloads[i]

    fp = fingerprint_images(read, len(payloads))
    assert fp.readable.tolist() == [True, False, False, False, True]
    flags = mine_copies(fp, np.zeros(5, dtype=int))
    assert [(f.index, f.other_index) for f in flags] == [(0, 4)]
    fp.save(tmp_path / "fp.npz")
    again = ImageFingerprints.load(tmp_path / "fp.npz")
    for name in ("sha256", "phash", "thumbs", "width", "height", "nbytes", "readable"):
        assert np.array_equal(getattr(again, name), getattr(fp, name))


def test_inactive_and_unlabelled_faces_take_no_part():
    data = io.BytesIO()
    textured(2).save(data, "PNG")
    fp = fingerprint_images(lambda i: data.getvalue(), 4)
    assert len(mine_copies(fp, np.array([0, 0, 0, 0]))) == 3
    assert [(f.index, f.other_index) for f in mine_copies(fp, np.array([0, -1, 0, 0]),
                                                          active=np.array([True, True, False, True]))] == [(0, 3)]


def test_phash_bands_propose_every_pair_within_seven_bits():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    for k in range(8):  # a near twin of hash k, k bits apart
        flips = rng.choice(64, k, replace=False)
        mask = np.bitwise_or.reduce(np.uint64(1) << flips.astype(np.uint64), initial=np.uint64(0))
        hashes[1500 + k] = hashes[k] ^ mask
    pairs = {tuple(p) for p in phash_pairs(hashes, np.arange(len(hashes))).tolist()}
    assert {(k, 1500 + k) for k in range(8)} <= pairs
    # Far fewer than all pairs are proposed.
    assert len(pairs) < 0.01 * len(hashes) ** 2 / 2
    # A proposal shares a band within one bit: at most 1 + 3 * 16 bits apart, and mostly far less.
    assert all(hamming(hashes[a], hashes[b]) <= 49 for a, b in pairs)


def test_mine_raises_near_duplicates_only_from_fingerprints():
    fp, labels, embeddings = cross_identity_case()
    without = mine(embeddings=embeddings, labels=labels)
    assert not [f for f in without if f.kind == "near_duplicate"]
    with_fp = [f for f in mine(embeddings=embeddings, labels=labels, fingerprints=fp) if f.kind == "near_duplicate"]
    assert [(f.index, f.other_index) for f in with_fp] == [(0, 18)]


# ---- real faces ------------------------------------------------------------------------------

def test_att_different_photos_of_one_person_are_never_copies(att_root):
    samples = load_folder(att_root)
    names = {n: i for i, n in enumerate(sorted({n for _, n in samples}))}
    fp = fingerprint_images(lambda i: (att_root / samples[i][0]).read_bytes(), len(samples))
    assert fp.readable.all()
    assert mine_copies(fp, np.array([names[n] for _, n in samples])) == []


def test_lfw_planted_copies_are_found(lfw_root, tmp_path):
    root = lfw_root / "images_deepfunneled"
    names = read_lines(lfw_root / "splits" / "train_identities.txt")[:12]
    noisy = inject_noise(load_folder(root, names), [], closed=0, open=0, split=0, seed=0)
    noisy = plant_copies(noisy, root, tmp_path, 16, 0.25, seed=1)
    labels, _ = labelled(noisy)
    flags = mine_copies(fingerprints_of(noisy, root), labels)
    planted = planted_pairs(noisy)
    found = {(min(f.index, f.other_index), max(f.index, f.other_index)) for f in flags}
    assert set(planted) <= found
    cross = [f for f in flags if not f.evidence.same_identity]
    assert len(cross) == 4 and all(f.evidence.remove is None for f in cross)
