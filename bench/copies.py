"""Near-duplicate images (ml.mining.copies) on real faces, printed as one JSON object.

    nice .venv/bin/python bench/copies.py [--copies 40] [--cross 0.25] [--speed-faces 10000]

- speed: fingerprints of the first --speed-faces LFW images (all folders, path order), one process;
- att: flags on AT&T (40 people x 10 different photos: every flag would be false);
- lfw: --copies planted copies (ml.synthetic_noise.plant_copies, variants in turn, a share --cross filed
  under another identity) among the LFW-158 training identities with the standard label noise:
  planted found, flags that are no planted pair ("false", listed: LFW itself holds a few copies
  of one press photo), cross-identity flags and what they suggest, the largest pixel distance
  per variant.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.mining.copies import fingerprint_images, mine_copies  # noqa: E402
from ml.synthetic_noise import inject_noise, load_folder, plant_copies, read_lines  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def labels_of(names):
    index = {n: i for i, n in enumerate(sorted(set(names)))}
    return np.array([index[n] for n in names])


def speed(count: int) -> dict:
    root = DATA / "lfw" / "images_deepfunneled"
    paths = sorted(root.glob("*/*.jpg"))[:count]
    started = time.perf_counter()
    fp = fingerprint_images(lambda i: paths[i].read_bytes(), len(paths))
    seconds = time.perf_counter() - started
    return {"faces": len(paths), "seconds": round(seconds, 2), "faces_per_s": round(len(paths) / seconds, 1),
            "unreadable": int((~fp.readable).sum())}


def att() -> dict:
    root = DATA / "att_faces"
    samples = load_folder(root)
    fp = fingerprint_images(lambda i: (root / samples[i][0]).read_bytes(), len(samples))
    flags = mine_copies(fp, labels_of([n for _, n in samples]))
    return {"faces": len(samples), "flags": len(flags)}


def lfw(copies: int, cross: float, out: Path) -> dict:
    lfw_root = DATA / "lfw"
    root = lfw_root / "images_deepfunneled"
    samples = load_folder(root, read_lines(lfw_root / "splits" / "train_identities.txt"))
    noisy = inject_noise(samples, read_lines(lfw_root / "splits" / "openset_pool.txt"), closed=0.15, open=0.05,
                         split=8, seed=0)
    noisy = plant_copies(noisy, root, out, copies, cross, seed=0)
    entries = noisy.entries
    paths = [Path(e.path) if e.path.startswith("/") else root / e.path for e in entries]
    fp = fingerprint_images(lambda i: paths[i].read_bytes(), len(paths))
    started = time.perf_counter()
    flags = mine_copies(fp, labels_of([e.given_label for e in entries]))
    mining_s = time.perf_counter() - started
    index = {e.path: i for i, e in enumerate(entries)}
    planted = {frozenset((index[e.copy_of], i)): e for i, e in enumerate(entries) if e.kind == "copy"}
    by_pair = {frozenset((f.index, f.other_index)): f for f in flags}
    found = [k for k in planted if k in by_pair]
    false = [f for k, f in by_pair.items() if k not in planted]
    worst: dict[str, float] = {}
    for k in found:
        variant = planted[k].variant
        worst[variant] = max(worst.get(variant, 0.0), by_pair[k].evidence.pixel_distance)
    cross_flags = [by_pair[k] for k in found if planted[k].given_label != planted[k].true_label]
    return {
        "faces": len(entries), "planted": len(planted), "found": len(found), "false": len(false),
        "precision": round(len(found) / max(len(flags), 1), 4),
        "false_pairs": [[entries[f.index].path, entries[f.other_index].path, f.evidence.pixel_distance]
                        for f in false],
        "cross_identity": {"planted": sum(e.given_label != e.true_label for e in planted.values()),
                           "found": len(cross_flags),
                           "suggestions": sorted({f.suggestion for f in cross_flags})},
        "max_pixel_distance_by_variant": worst, "mining_s": round(mining_s, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--cross", type=float, default=0.25)
    parser.add_argument("--speed-faces", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        result = {"speed": speed(args.speed_faces), "att": att(), "lfw": lfw(args.copies, args.cross, Path(out))}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
