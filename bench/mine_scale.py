"""Mining at scale on synthetic embeddings, printed as one JSON object.

    nice .venv/bin/python bench/mine_scale.py [--faces 1000000] [--identities 50000] [--dim 512]

Each identity is a random unit centre; a face is a·centre + sqrt(1 - a²)·(random unit), a drawn
in [0.7, 0.85] so that faces of one identity meet at cosine about 0.5-0.7. Planted problems:
closed-set noise (a face of another identity under this label), open-set noise (faces of people
outside the label set), duplicate identities (two ids whose centres meet at cosine 0.9),
near-duplicate images (copies of a face with a little noise, cosine > 0.99) and low feature
norms. Embeddings are stored float16 (1 GB at a million x 512) like ml.embed writes them, or
float32 with --storage float32.
Mining runs in embedding-only mode (no stats), the heavier path: every face is searched against
the identities' centres. Reports seconds, peak memory (ru_maxrss) and what was found.
"""
import argparse
import json
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ml.mining import MiningConfig, mine  # noqa: E402
from ml.mining.search import batches  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def synthesize(faces: int, identities: int, dim: int, seed: int, *, storage=np.float16, closed_rate=0.03,
               open_rate=0.01, duplicate_pairs=200, near_duplicates=500, low_norm_rate=0.005, batch=65_536) -> dict:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((identities, dim), dtype=np.float32))
    # Duplicate identities: the second of each pair is the same person, centre at cosine 0.9.
    pair_ids = rng.choice(identities, 2 * duplicate_pairs, replace=False).reshape(-1, 2)
    jitter = unit(rng.standard_normal((duplicate_pairs, dim), dtype=np.float32))
    centres[pair_ids[:, 1]] = unit(0.9 * centres[pair_ids[:, 0]] + np.sqrt(1 - 0.81) * jitter)

    # Identity sizes Poisson around faces/identities (a size below 2 has odds ~1e-7 at 20).
    true = np.sort(rng.integers(0, identities, faces))
    labels = true.copy()
    closed = rng.choice(faces, int(closed_rate * faces), replace=False)
    labels[closed] = (true[closed] + rng.integers(1, identities, len(closed))) % identities
    rest = np.setdiff1d(np.arange(faces), closed)
    open_set = rng.choice(rest, int(open_rate * faces), replace=False)
    is_open = np.zeros(faces, dtype=bool)
    is_open[open_set] = True

    embeddings = np.empty((faces, dim), dtype=storage)
    for part in batches(faces, batch):
        n = part.stop - part.start
        a = rng.uniform(0.7, 0.85, (n, 1)).astype(np.float32)
        base = centres[true[part]]
        strangers = is_open[part]
        base[strangers] = unit(rng.standard_normal((int(strangers.sum()), dim), dtype=np.float32))
        noise = unit(rng.standard_normal((n, dim), dtype=np.float32))
        embeddings[part] = unit(a * base + np.sqrt(1 - a * a) * noise)

    clean = np.setdiff1d(rest, open_set)
    picked = rng.choice(clean, 2 * near_duplicates, replace=False).reshape(-1, 2)
    source, copy = picked[:, 0], picked[:, 1]
    tweak = rng.standard_normal((near_duplicates, dim), dtype=np.float32) * 0.004
    embeddings[copy] = unit(embeddings[source].astype(np.float32) + tweak)
    labels[copy], true[copy] = labels[source], true[source]

    norms = np.exp(rng.normal(np.log(25.0), 0.15, faces)).astype(np.float32)
    low = rng.choice(faces, int(low_norm_rate * faces), replace=False)
    norms[low] = rng.uniform(2.0, 6.0, len(low))
    return {"embeddings": embeddings, "labels": labels, "true": true, "norms": norms, "closed": closed,
            "open_set": open_set, "pairs": pair_ids, "near_pairs": np.stack([source, copy], 1), "low": low}


def score(flags, data) -> dict:
    by_kind: dict[str, list] = {}
    for f in flags:
        by_kind.setdefault(f.kind, []).append(f)
    noisy = by_kind.get("noisy", [])
    relabel = [f for f in noisy if f.suggestion == "relabel"]
    remove = [f for f in noisy if f.suggestion == "remove"]
    closed, open_set = set(data["closed"].tolist()), set(data["open_set"].tolist())
    found_pairs = {(min(f.label, f.other_label), max(f.label, f.other_label))
                   for f in by_kind.get("duplicate_identity", [])}
    planted = {(int(min(a, b)), int(max(a, b))) for a, b in data["pairs"]}
    near = {(min(f.index, f.other_index), max(f.index, f.other_index)) for f in by_kind.get("near_duplicate", [])}
    planted_near = {(int(min(a, b)), int(max(a, b))) for a, b in data["near_pairs"]}
    low_found = {f.index for f in by_kind.get("low_norm", [])}

    def share(hits, total):
        return round(hits / total, 4) if total else None

    return {
        "counts": dict(Counter(f.kind for f in flags)),
        "closed_set": {"planted": len(closed), "flagged": len(relabel),
                       "recall": share(len({f.index for f in relabel} & closed), len(closed)),
                       "precision": share(len({f.index for f in relabel} & closed), len(relabel)),
                       "relabel_to_true": share(sum(f.target_label == data["true"][f.index] for f in relabel),
                                                len(relabel))},
        "open_set": {"planted": len(open_set), "flagged": len(remove),
                     "recall": share(len({f.index for f in remove} & open_set), len(open_set)),
                     "precision": share(len({f.index for f in remove} & open_set), len(remove))},
        "duplicate_identities": {"planted": len(planted), "found": len(found_pairs & planted),
                                 "false_pairs": len(found_pairs - planted),
                                 "all_planted_found": planted <= found_pairs},
        "near_duplicates": {"planted": len(planted_near), "found": len(near & planted_near),
                            "other_pairs": len(near - planted_near)},
        "low_norm": {"planted": len(data["low"]), "found": len(low_found & set(data["low"].tolist())),
                     "flagged": len(low_found)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--storage", choices=("float16", "float32"), default="float16")
    args = parser.parse_args()

    start = time.perf_counter()
    data = synthesize(args.faces, args.identities, args.dim, args.seed, storage=np.dtype(args.storage))
    generated = time.perf_counter() - start
    before = peak_mib()
    start = time.perf_counter()
    flags = mine(embeddings=data["embeddings"], labels=data["labels"], norms=data["norms"], config=MiningConfig())
    mined = time.perf_counter() - start
    result = {
        "faces": args.faces, "identities": args.identities, "dim": args.dim, "storage": args.storage,
        "mode": "embedding-only", "generate_seconds": round(generated, 1), "mine_seconds": round(mined, 1),
        "peak_rss_mib_before_mining": round(before, 1), "peak_rss_mib": round(peak_mib(), 1),
        "embeddings_mib": round(data["embeddings"].nbytes / 2**20, 1),
        **score(flags, data),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
