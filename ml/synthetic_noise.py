"""Label noise injected into a clean face set, with a ground truth to score flags against.

The protocol (shared/data/README.md) at rates c (closed-set), o (open-set) and k split
identities, applied in this order so that every image has exactly one kind:

1. Identities are sorted by name and their images by path; one `random.Random(seed)` drives
   every choice below, in this order, so a seed gives byte-identical output.
2. Split: k identities with at least `min_split_images` images are chosen at random. The
   second half of each one's path-sorted list (the last n // 2 images) is given the label
   "<name>#split", as when two datasets that both hold the person are merged. If that name
   is taken by another identity, "#split2", "#split3", ... is used instead.
3. Victims, per identity of n images (counted before the split): its images are shuffled;
   the first floor(n*o) are open-set victims, the next floor(n*c) closed-set victims, so
   the two never overlap (hence c + o <= 1). Rates are read as decimals (0.15 is 15/100)
   so that floor(100 * 0.29) is 29, not the 28 of float arithmetic.
4. A closed-set victim keeps its image and gets the name of another training identity,
   uniform over the others (a split identity's first, original name).
5. Open-set: as many pool images as there are open-set victims are drawn without
   replacement (an error if the pool is too small or holds training images); each victim
   is replaced by one and its label (its half's label in a split identity) is kept. The
   replaced image is left out of the noisy set.

train.lst ("path<TAB>label", paths relative to the root) lists identities in name order and
their images in path order, an open-set image in the place of the image it replaced.
ground_truth.jsonl has one line per train.lst line, in the same order:
    kind "clean":  true_label == given_label
    kind "split":  an untouched image in a split identity's second half; true_label is the
                   person's original name, given_label the "#split" name
    kind "closed": true_label is the person's original name, given_label someone else
    kind "open":   true_label is null: the person in the pool image is in no label of the set
duplicates.json lists the split pairs as {"label", "split_label"}; summary.json the
parameters and the count of each kind.

Planted images (ml.noise_plant, options --copies/--cross-copies/--junk, off by default) are
written under OUT/planted/ and listed in train.lst by absolute path, after the other lines:
    kind "copy":   a copy of a clean training image (`copy_of`: its path; `variant`: exact,
                   reencode, resize or crop); true_label the person, given_label where it is
                   filed (another identity for a share of them: a label question)
    kind "junk":   not a usable face (`variant`: blank, blur, tiny, background, synthetic);
                   true_label null, given_label an identity

    python -m ml.synthetic_noise --root ../shared/data/lfw/images_deepfunneled \\
        --identities ../shared/data/lfw/splits/train_identities.txt \\
        --pool ../shared/data/lfw/splits/openset_pool.txt \\
        --closed 0.15 --open 0.05 --split 8 --seed 0 --out var/noisy
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

from ml.io.scan import folder_images

SPLIT_SUFFIX = "#split"
MIN_SPLIT_IMAGES = 4
BASE_KINDS = ("clean", "closed", "open", "split")
KINDS = BASE_KINDS + ("copy", "junk")

TRAIN_LIST = "train.lst"
GROUND_TRUTH = "ground_truth.jsonl"
DUPLICATES = "duplicates.json"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class NoisyEntry:
    path: str
    kind: str
    true_label: str | None
    given_label: str
    copy_of: str | None = None   # kind "copy": the path of the entry it copies
    variant: str | None = None   # kinds "copy" and "junk": how it was made

    def as_record(self) -> dict:
        """The ground-truth line: the optional fields only where set, so sets without planted
        images are written byte for byte as before."""
        record = asdict(self)
        for key in ("copy_of", "variant"):
            if record[key] is None:
                del record[key]
        return record


@dataclass(frozen=True)
class DuplicatePair:
    label: str
    split_label: str


@dataclass
class NoisySet:
    entries: list[NoisyEntry]
    pairs: list[DuplicatePair]
    params: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(BASE_KINDS, 0)
        for entry in self.entries:
            counts[entry.kind] = counts.get(entry.kind, 0) + 1
        return counts

    def summary(self) -> dict:
        return {
            "params": self.params,
            "images": len(self.entries),
            "labels": len({e.given_label for e in self.entries}),
            "counts": self.counts(),
            "duplicate_pairs": len(self.pairs),
        }


def _rate(value: float, what: str) -> Fraction:
    rate = Fraction(str(value))
    if not 0 <= rate <= 1:
        raise ValueError(f"{what} rate must be within [0, 1], got {value}")
    return rate


def _group(samples: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    by_identity: dict[str, set[str]] = {}
    owner: dict[str, str] = {}
    for path, name in samples:
        if owner.setdefault(path, name) != name:
            raise ValueError(f"{path!r} is labelled both {owner[path]!r} and {name!r}")
        by_identity.setdefault(name, set()).add(path)
    return {name: sorted(paths) for name, paths in sorted(by_identity.items())}


def _split_label(name: str, taken: set[str]) -> str:
    label, n = name + SPLIT_SUFFIX, 1
    while label in taken:
        n += 1
        label = f"{name}{SPLIT_SUFFIX}{n}"
    taken.add(label)
    return label


def _choose_split(by_identity, k: int, rng: random.Random, min_images: int) -> dict[str, str]:
    if k < 0:
        raise ValueError("the number of split identities cannot be negative")
    eligible = [name for name, paths in by_identity.items() if len(paths) >= min_images]
    if k > len(eligible):
        raise ValueError(
            f"{k} identities to split, but only {len(eligible)} have >= {min_images} images"
        )
    taken = set(by_identity)
    return {name: _split_label(name, taken) for name in sorted(rng.sample(eligible, k))}


def _other_name(names: list[str], own: int, rng: random.Random) -> str:
    # Uniform over every index but `own`, in one draw.
    index = rng.randrange(len(names) - 1)
    return names[index if index < own else index + 1]


def inject_noise(samples: Iterable[tuple[str, str]], pool: Sequence[str], *, closed: float,
                 open: float, split: int, seed: int,
                 min_split_images: int = MIN_SPLIT_IMAGES) -> NoisySet:
    """The noisy version of a clean set of (path, identity name) pairs; see the module doc."""
    closed_rate, open_rate = _rate(closed, "closed-set"), _rate(open, "open-set")
    if closed_rate + open_rate > 1:
        raise ValueError("closed-set and open-set victims are disjoint: closed + open must be <= 1")
    by_identity = _group(samples)
    names = list(by_identity)
    rng = random.Random(seed)
    split_labels = _choose_split(by_identity, split, rng, max(2, min_split_images))

    open_victims: dict[str, list[str]] = {}
    closed_targets: dict[str, str] = {}
    for own, name in enumerate(names):
        paths = by_identity[name]
        n_open, n_closed = math.floor(len(paths) * open_rate), math.floor(len(paths) * closed_rate)
        if n_closed and len(names) < 2:
            raise ValueError("closed-set noise needs at least two identities")
        shuffled = list(paths)
        rng.shuffle(shuffled)
        open_victims[name] = sorted(shuffled[:n_open])
        for path in shuffled[n_open:n_open + n_closed]:
            closed_targets[path] = _other_name(names, own, rng)

    replacements = _draw_pool(pool, by_identity, sum(map(len, open_victims.values())), rng)
    replaced = {victim: next(replacements) for name in names for victim in open_victims[name]}

    entries = []
    for name in names:
        paths = by_identity[name]
        second_half = len(paths) - len(paths) // 2
        for i, path in enumerate(paths):
            home = split_labels[name] if name in split_labels and i >= second_half else name
            if path in replaced:
                entries.append(NoisyEntry(replaced[path], "open", None, home))
            elif path in closed_targets:
                entries.append(NoisyEntry(path, "closed", name, closed_targets[path]))
            else:
                entries.append(NoisyEntry(path, "split" if home != name else "clean", name, home))
    pairs = [DuplicatePair(name, label) for name, label in split_labels.items()]
    params = {"closed": closed, "open": open, "split": split, "seed": seed,
              "min_split_images": min_split_images}
    return NoisySet(entries=entries, pairs=pairs, params=params)


def _draw_pool(pool: Sequence[str], by_identity, needed: int, rng: random.Random):
    candidates = sorted(set(pool))
    training = {path for paths in by_identity.values() for path in paths}
    overlap = [path for path in candidates if path in training]
    if overlap:
        raise ValueError(f"the open-set pool holds {len(overlap)} training images, e.g. {overlap[0]!r}")
    if needed > len(candidates):
        raise ValueError(
            f"open-set noise needs {needed} pool images but the pool has only {len(candidates)}"
        )
    return iter(rng.sample(candidates, needed))


def _check_line_field(text: str, what: str) -> str:
    # What the list importer (ml.io.filelist) could not read back as written.
    if any(c in text for c in "\t\n\r") or text != text.strip() or not text:
        raise ValueError(f"{what} {text!r} is empty or holds a tab, line break or outer space: "
                         "it cannot go in a file list")
    if what == "path" and text.startswith("#"):
        raise ValueError(f"path {text!r} starts with '#': a file list reads that as a comment")
    return text


def write_noisy_set(noisy: NoisySet, out_dir: str | Path) -> Path:
    """train.lst, ground_truth.jsonl, duplicates.json and summary.json in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / TRAIN_LIST, "w", encoding="utf-8", newline="\n") as fh:
        for e in noisy.entries:
            fh.write(f"{_check_line_field(e.path, 'path')}\t{_check_line_field(e.given_label, 'label')}\n")
    with open(out / GROUND_TRUTH, "w", encoding="utf-8", newline="\n") as fh:
        for e in noisy.entries:
            fh.write(json.dumps(e.as_record(), ensure_ascii=False) + "\n")
    _write_json(out / DUPLICATES, [asdict(p) for p in noisy.pairs])
    _write_json(out / SUMMARY, noisy.summary())
    return out


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n")


def read_ground_truth(path: str | Path) -> NoisySet:
    """A written noisy set back: `path` is its folder or its ground_truth.jsonl."""
    path = Path(path)
    gt_file = path / GROUND_TRUTH if path.is_dir() else path
    with open(gt_file, encoding="utf-8") as fh:
        entries = [NoisyEntry(**json.loads(line)) for line in fh if line.strip()]
    pairs, params = [], {}
    if (gt_file.parent / DUPLICATES).exists():
        pairs = [DuplicatePair(**p) for p in json.loads((gt_file.parent / DUPLICATES).read_text("utf-8"))]
    if (gt_file.parent / SUMMARY).exists():
        params = json.loads((gt_file.parent / SUMMARY).read_text("utf-8")).get("params", {})
    return NoisySet(entries=entries, pairs=pairs, params=params)


def read_lines(path: str | Path) -> list[str]:
    """Non-empty lines of a names or paths file, stripped of surrounding whitespace."""
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def load_folder(root: str | Path, identities: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(path relative to root, identity) for root/<identity>/<image>, all identities or the given
    ones: the images a folder import takes (ml.io.scan.folder_images)."""
    return folder_images(root, identities)


def check_pool(root: str | Path, pool: Sequence[str], identities: Iterable[str]) -> None:
    """Every pool image exists under root and is not a picture of a training identity."""
    root, training = Path(root), set(identities)
    missing = [p for p in pool if not (root / p).is_file()]
    if missing:
        raise ValueError(f"{len(missing)} open-set pool images are not under {root}, e.g. {missing[0]!r}")
    known = [p for p in pool if Path(p).parts[0] in training]
    if known:
        raise ValueError(f"{len(known)} pool images show training identities, e.g. {known[0]!r}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ml.synthetic_noise",
        description="Inject closed-set, open-set and split-identity label noise into a folder "
                    "of faces (root/<identity>/<image>) and write train.lst, ground_truth.jsonl, "
                    "duplicates.json and summary.json. Defaults are the standard mix.",
    )
    parser.add_argument("--root", required=True, help="folder of identity folders")
    parser.add_argument("--identities", help="file of identity names to use (default: every folder)")
    parser.add_argument("--pool", help="file of open-set image paths relative to --root")
    parser.add_argument("--closed", type=float, default=0.15, help="closed-set rate c (0.15)")
    parser.add_argument("--open", type=float, default=0.05, help="open-set rate o (0.05)")
    parser.add_argument("--split", type=int, default=8, help="identities split in two (8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-split-images", type=int, default=MIN_SPLIT_IMAGES,
                        help=f"fewest images an identity needs to be split ({MIN_SPLIT_IMAGES})")
    parser.add_argument("--copies", type=int, default=0,
                        help="copies of clean training images to plant (exact, re-encoded, resized, cropped; 0)")
    parser.add_argument("--cross-copies", type=float, default=0.25,
                        help="share of the copies filed under another identity (0.25)")
    parser.add_argument("--junk", type=float, default=0.0,
                        help="rate of junk images to plant (blank, blur, tiny, background, synthetic; 0)")
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        names = read_lines(args.identities) if args.identities else None
        samples = load_folder(args.root, names)
        pool = read_lines(args.pool) if args.pool else []
        check_pool(args.root, pool, {name for _, name in samples})
        noisy = inject_noise(samples, pool, closed=args.closed, open=args.open, split=args.split,
                             seed=args.seed, min_split_images=args.min_split_images)
        if args.copies:
            noisy = plant_copies(noisy, args.root, args.out, args.copies, args.cross_copies, args.seed)
        if args.junk:
            noisy = plant_junk(noisy, args.root, args.out, args.junk, args.seed)
        write_noisy_set(noisy, args.out)
    except (OSError, ValueError) as exc:
        print(f"ml.synthetic_noise: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(noisy.summary(), sort_keys=True))
    return 0


from ml.noise_plant import plant_copies, plant_junk  # noqa: E402 (needs NoisyEntry, NoisySet above)

if __name__ == "__main__":
    sys.exit(main())
