"""Noise injection: exact counts, kinds that never overlap, determinism, files, CLI."""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from ml.synthetic_noise import (
    DuplicatePair,
    inject_noise,
    load_folder,
    main,
    read_ground_truth,
    read_lines,
    write_noisy_set,
)

REPO = Path(__file__).resolve().parents[2]


def synthetic(sizes: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"{name}/{i:03d}.jpg", name) for name, n in sizes.items() for i in range(n)]


SIZES = {"ann": 10, "bob": 20, "cy": 7, "dee": 3}
POOL = [f"outsider_{k}/0.jpg" for k in range(10)]


def small(seed=0, **overrides):
    options = {"closed": 0.2, "open": 0.1, "split": 1, "seed": seed, "min_split_images": 15}
    options.update(overrides)
    return inject_noise(synthetic(SIZES), POOL, **options)


def test_synthetic_counts_by_hand():
    noisy = small()
    # closed floor(n * 0.2): 2 + 4 + 1 + 0; open floor(n * 0.1): 1 + 2 + 0 + 0.
    counts = noisy.counts()
    assert counts["closed"] == 7
    assert counts["open"] == 3
    assert len(noisy.entries) == 40
    # Only bob has >= 15 images: its last 10 get bob#split, less the noisy ones among them.
    assert noisy.pairs == [DuplicatePair("bob", "bob#split")]
    bob_second_half = {f"bob/{i:03d}.jpg" for i in range(10, 20)}
    closed_in_half = sum(e.kind == "closed" and e.path in bob_second_half for e in noisy.entries)
    open_in_half = sum(e.kind == "open" and e.given_label == "bob#split" for e in noisy.entries)
    assert counts["split"] == 10 - closed_in_half - open_in_half
    assert counts["clean"] == 40 - 7 - 3 - counts["split"]


def test_rate_products_are_floored_exactly():
    # In floats 100 * 0.29 is 28.999999999999996, which would floor to 28.
    noisy = inject_noise(synthetic({"a": 20, "b": 100}), [], closed=0.29, open=0, split=0, seed=1)
    assert noisy.counts()["closed"] == 5 + 29


def test_each_kind_has_consistent_labels():
    noisy = small()
    names = set(SIZES)
    for entry in noisy.entries:
        if entry.kind == "clean":
            assert entry.true_label == entry.given_label and entry.path.startswith(entry.true_label + "/")
        elif entry.kind == "closed":
            assert entry.given_label != entry.true_label
            assert entry.given_label in names  # another identity's original name
            assert entry.path.startswith(entry.true_label + "/")
        elif entry.kind == "open":
            assert entry.true_label is None and entry.path in POOL
        else:
            assert entry.kind == "split"
            assert (entry.true_label, entry.given_label) == ("bob", "bob#split")


def test_open_set_replaces_victims_and_draws_pool_without_replacement():
    # floor(n * 0.3): 3 + 6 + 2 + 0 = 11 victims but only 10 pool images.
    with pytest.raises(ValueError, match="needs 11 pool images but the pool has only 10"):
        small(open=0.3, closed=0.0)
    noisy = small(open=0.25, closed=0.0)
    opens = [e for e in noisy.entries if e.kind == "open"]
    assert len(opens) == 2 + 5 + 1
    assert len({e.path for e in opens}) == len(opens)
    assert {e.path for e in opens} <= set(POOL)
    # Each identity keeps its size: an open image takes the place of one of its images.
    given = Counter(e.given_label for e in noisy.entries)
    assert given["ann"] == 10 and given["cy"] == 7 and given["bob"] + given["bob#split"] == 20
    kept = {e.path for e in noisy.entries}
    assert len([p for p, _ in synthetic(SIZES) if p not in kept]) == len(opens)


def test_pool_overlapping_the_training_set_is_refused():
    with pytest.raises(ValueError, match="training images"):
        inject_noise(synthetic(SIZES), POOL + ["ann/001.jpg"], closed=0, open=0.1, split=0, seed=0)


def test_split_name_avoids_collisions():
    samples = synthetic({"ann": 13, "ann#split": 3})
    noisy = inject_noise(samples, [], closed=0, open=0, split=1, seed=0, min_split_images=10)
    assert noisy.pairs == [DuplicatePair("ann", "ann#split2")]
    # The second half is the last n // 2 images in path order.
    second = [e.path for e in noisy.entries if e.given_label == "ann#split2"]
    assert second == [f"ann/{i:03d}.jpg" for i in range(7, 13)]
    assert Counter(e.given_label for e in noisy.entries) == {"ann": 7, "ann#split2": 6, "ann#split": 3}


def test_victims_are_drawn_at_random():
    samples = synthetic({"a": 100, "b": 100})
    victims = [
        {e.path for e in inject_noise(samples, [], closed=0.1, open=0, split=0, seed=seed).entries
         if e.kind == "closed"}
        for seed in (0, 1)
    ]
    assert len(victims[0]) == len(victims[1]) == 20 and victims[0] != victims[1]
    # Not the first images of each identity, as an unshuffled choice would give.
    assert victims[0] != {f"{n}/{i:03d}.jpg" for n in "ab" for i in range(10)}


@pytest.mark.parametrize("options, message", [
    ({"closed": 0.7, "open": 0.4}, "closed \\+ open"),
    ({"closed": 1.5}, "within"),
    ({"split": 2}, "only 1 have"),
    ({"split": -1}, "negative"),
])
def test_bad_parameters_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        small(**options)


def test_same_seed_same_bytes_other_seed_other_noise(tmp_path):
    write_noisy_set(small(seed=3), tmp_path / "a")
    write_noisy_set(small(seed=3), tmp_path / "b")
    write_noisy_set(small(seed=4), tmp_path / "c")
    for name in ("train.lst", "ground_truth.jsonl", "duplicates.json", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "ground_truth.jsonl").read_bytes() != (tmp_path / "c" / "ground_truth.jsonl").read_bytes()


def test_files_round_trip(tmp_path):
    noisy = small()
    write_noisy_set(noisy, tmp_path)
    lines = (tmp_path / "train.lst").read_text("utf-8").splitlines()
    assert lines == [f"{e.path}\t{e.given_label}" for e in noisy.entries]
    again = read_ground_truth(tmp_path)
    assert again.entries == noisy.entries and again.pairs == noisy.pairs
    assert again.params == noisy.params
    summary = json.loads((tmp_path / "summary.json").read_text("utf-8"))
    assert summary["counts"] == noisy.counts() and summary["duplicate_pairs"] == 1
    assert read_ground_truth(tmp_path / "ground_truth.jsonl").entries == noisy.entries


@pytest.mark.parametrize("path, label, message", [
    ("x/1.jpg", "bad\tname", "tab, line break"),
    ("x/1.jpg", " padded", "outer space"),
    ("#x/1.jpg", "x", "comment"),
])
def test_what_a_file_list_cannot_hold_is_refused(tmp_path, path, label, message):
    noisy = inject_noise([(path, label)], [], closed=0, open=0, split=0, seed=0)
    with pytest.raises(ValueError, match=message):
        write_noisy_set(noisy, tmp_path)


def make_folder(root: Path, sizes: dict[str, int], pool: int) -> None:
    for name, n in sizes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            (root / name / f"{i:03d}.jpg").write_bytes(b"")
    for k in range(pool):
        (root / f"outsider_{k}").mkdir()
        (root / f"outsider_{k}" / "0.jpg").write_bytes(b"")


def test_cli_end_to_end(tmp_path, capsys):
    root = tmp_path / "images"
    make_folder(root, SIZES, pool=10)
    (root / "ann" / "notes.txt").write_text("not an image")
    (tmp_path / "ids.txt").write_text("ann\nbob\ncy\ndee\n")
    (tmp_path / "pool.txt").write_text("\n".join(POOL) + "\n")
    argv = ["--root", str(root), "--identities", str(tmp_path / "ids.txt"), "--pool", str(tmp_path / "pool.txt"),
            "--closed", "0.2", "--open", "0.1", "--split", "1", "--min-split-images", "15", "--seed", "0",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["closed"] == 7 and printed["counts"]["open"] == 3
    # The folder loader sees the same set as the synthetic list, so the output is the same.
    assert read_ground_truth(tmp_path / "out").entries == small().entries

    (tmp_path / "short_pool.txt").write_text("outsider_0/0.jpg\n")
    argv[argv.index(str(tmp_path / "pool.txt"))] = str(tmp_path / "short_pool.txt")
    assert main(argv) == 2
    assert "the pool has only 1" in capsys.readouterr().err


def test_cli_refuses_identity_names_outside_root(tmp_path, capsys):
    make_folder(tmp_path / "images", {"ann": 3}, pool=0)
    (tmp_path / "ids.txt").write_text("../images/ann\n")
    assert main(["--root", str(tmp_path / "images"), "--identities", str(tmp_path / "ids.txt"),
                 "--out", str(tmp_path / "out")]) == 2
    assert "not a folder directly under" in capsys.readouterr().err


def test_cli_help_and_no_django():
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, ml.synthetic_noise; assert 'django' not in sys.modules; sys.argv[0] = 'x'; ml.synthetic_noise.main(['--help'])"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--closed" in done.stdout and "--pool" in done.stdout


# ---- the standard benchmark on LFW ----------------------------------------------------------

@pytest.fixture
def lfw_samples(lfw_root):
    lfw = lfw_root
    names = read_lines(lfw / "splits" / "train_identities.txt")
    return lfw, load_folder(lfw / "images_deepfunneled", names), read_lines(lfw / "splits" / "openset_pool.txt")


def lfw_noisy(lfw_samples, seed=0):
    _, samples, pool = lfw_samples
    return inject_noise(samples, pool, closed=0.15, open=0.05, split=8, seed=seed)


def test_lfw_standard_mix_exact_counts(lfw_samples):
    _, samples, pool = lfw_samples
    sizes = Counter(name for _, name in samples)
    assert (len(sizes), len(samples)) == (158, 4324)
    noisy = lfw_noisy(lfw_samples)
    counts = noisy.counts()
    assert counts["closed"] == sum(n * 15 // 100 for n in sizes.values())
    assert counts["open"] == sum(n * 5 // 100 for n in sizes.values())
    assert len(noisy.pairs) == 8 and len({p.label for p in noisy.pairs}) == 8
    assert sum(counts.values()) == 4324
    assert noisy.summary()["labels"] == 158 + 8


def test_lfw_noise_is_what_it_claims(lfw_samples):
    _, samples, pool = lfw_samples
    noisy = lfw_noisy(lfw_samples)
    training = {path for path, _ in samples}
    names = {name for _, name in samples}
    for entry in noisy.entries:
        if entry.kind == "closed":
            assert entry.given_label != entry.true_label and entry.given_label in names
        if entry.kind == "open":
            assert entry.path in pool and entry.path not in training
            assert entry.path.split("/")[0] not in names
    opens = [e.path for e in noisy.entries if e.kind == "open"]
    assert len(set(opens)) == len(opens)


def test_lfw_seed_determinism(lfw_samples):
    assert lfw_noisy(lfw_samples, seed=0).entries == lfw_noisy(lfw_samples, seed=0).entries
    assert lfw_noisy(lfw_samples, seed=0).entries != lfw_noisy(lfw_samples, seed=1).entries


# ---- planted copies and junk ------------------------------------------------------------------

def real_folder(root: Path, sizes: dict[str, int]) -> None:
    """Decodable images (the planting re-encodes, resizes and crops them)."""
    from PIL import Image
    import numpy as np

    rng = np.random.default_rng(0)
    for name, n in sizes.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=90)


def planted(tmp_path, out="out", seed=0, copies=8, cross=0.25, junk=0.1):
    from ml.synthetic_noise import plant_copies, plant_junk

    root = tmp_path / "images"
    if not root.exists():
        real_folder(root, SIZES)
    noisy = inject_noise(load_folder(root), [], closed=0.2, open=0, split=0, seed=seed)
    noisy = plant_copies(noisy, root, tmp_path / out, copies, cross, seed)
    return root, plant_junk(noisy, root, tmp_path / out, junk, seed)


def test_planted_copies_are_recorded_with_their_original(tmp_path):
    root, noisy = planted(tmp_path)
    copies = [e for e in noisy.entries if e.kind == "copy"]
    by_path = {e.path: e for e in noisy.entries}
    assert len(copies) == 8
    assert sorted(e.variant for e in copies) == sorted(["exact", "reencode", "resize", "crop"] * 2)
    for entry in copies:
        original = by_path[entry.copy_of]
        assert original.kind == "clean" and entry.true_label == original.true_label
        assert Path(entry.path).is_absolute() and Path(entry.path).is_file()
        assert Path(entry.path).is_relative_to((tmp_path / "out" / "planted").resolve())
        if entry.variant == "exact":
            assert Path(entry.path).read_bytes() == (root / entry.copy_of).read_bytes()
    # round(8 * 0.25) = 2 copies are filed under another identity: a label question.
    assert sum(e.given_label != e.true_label for e in copies) == 2
    assert noisy.counts()["copy"] == 8


def test_planted_junk_has_no_true_label(tmp_path):
    _, noisy = planted(tmp_path)
    junk = [e for e in noisy.entries if e.kind == "junk"]
    # floor(0.1 * (40 + 8)) = 4, variants in turn.
    assert [e.variant for e in junk] == ["blank", "blur", "tiny", "background"]
    assert all(e.true_label is None and e.given_label in SIZES for e in junk)
    assert all(Path(e.path).is_file() for e in junk)


def test_planting_is_deterministic_and_written_back(tmp_path):
    _, first = planted(tmp_path, out="a")
    _, second = planted(tmp_path, out="b")
    strip = [(e.kind, e.copy_of, e.variant, e.given_label, Path(e.path).name) for e in first.entries]
    assert strip == [(e.kind, e.copy_of, e.variant, e.given_label, Path(e.path).name) for e in second.entries]
    assert [Path(e.path).read_bytes() for e in first.entries if e.kind != "clean" and e.path.startswith("/")] == \
        [Path(e.path).read_bytes() for e in second.entries if e.kind != "clean" and e.path.startswith("/")]
    write_noisy_set(first, tmp_path / "a")
    again = read_ground_truth(tmp_path / "a")
    assert again.entries == first.entries
    lines = (tmp_path / "a" / "train.lst").read_text("utf-8").splitlines()
    assert lines[-1].startswith(str((tmp_path / "a" / "planted").resolve()))


def test_without_planting_the_files_are_as_before(tmp_path):
    noisy = small()
    write_noisy_set(noisy, tmp_path)
    text = (tmp_path / "ground_truth.jsonl").read_text("utf-8")
    assert "copy_of" not in text and "variant" not in text
    summary = json.loads((tmp_path / "summary.json").read_text("utf-8"))
    assert set(summary["counts"]) == {"clean", "closed", "open", "split"}
    assert set(summary["params"]) == {"closed", "open", "split", "seed", "min_split_images"}


def test_cli_plants_copies_and_junk(tmp_path, capsys):
    root = tmp_path / "images"
    real_folder(root, SIZES)
    argv = ["--root", str(root), "--closed", "0.1", "--open", "0", "--split", "0", "--copies", "4",
            "--cross-copies", "0.5", "--junk", "0.05", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"]["copy"] == 4 and printed["counts"]["junk"] == 2
    assert printed["params"]["copies"] == 4
