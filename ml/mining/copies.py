"""Near-duplicate images: the same picture twice, found from the pixels, never from a model.

Embedding cosine cannot tell a copy from another photo of the same person: on AT&T, different
photos of one person in a similar pose reach cosine 0.98-0.996 (26 of 26 such flags were false).
So a copy is decided on the image itself:

1. fingerprint_images(): per face, the sha256 of its raw bytes, a 64-bit pHash (DCT of a 32x32
   grayscale, the 8x8 lowest frequencies against their median) and a 16x16 grayscale thumbnail.
   Decoding is bounded (JPEG draft mode decodes at 1/2-1/8 scale, a pixel cap refuses bombs) and
   an unreadable image is marked, never fatal.
2. mine_copies(): exact copies share a content hash. Other pairs are PROPOSED by the pHash (the
   64 bits cut in 4 bands of 16; a pair within Hamming distance r has, by pigeonhole, a band
   within r // 4 bits, so probing each band's exact value and its 16 one-bit neighbours finds
   every pair up to r = 7 without comparing all pairs) and, when embeddings are given, by each
   face's nearest faces; they are DECIDED by the mean absolute difference of the two thumbnails.

Thresholds (measured with bench/copies.py, numbers in the comments at COPY_PIXEL_DISTANCE and
PROPOSE_HAMMING) sit between what a copy does to the thumbnail (re-encoding, resizing, cropping a
few pixels) and the smallest difference between two different photos of one person.
"""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ml.evidence import NearDuplicateEvidence
from ml.io.atomic import atomic_open
from ml.io.budget import IMAGE_MAX_PIXELS

from ml.mining.candidate import NEAR_DUPLICATE, FlagCandidate

HASH_SIZE = 32          # the pHash's grayscale side
THUMB_SIZE = 16         # the thumbnail the pixel distance is measured on
# JPEG draft mode decodes at the smallest DCT scale that keeps this many pixels a side. Not less:
# drafting to 32-64 px left a 38 px decode for a 150 px copy and a 63 px one for its 250 px
# original, and their thumbnails differed by up to 12.6/255 (measured); from >= 128 px the
# antialiased resize agrees to 0.5/255.
DECODE_SIDE = 128
MAX_PIXELS = IMAGE_MAX_PIXELS  # the one decoding budget (ml/io/budget.py): a larger image is unreadable


# -- fingerprints ---------------------------------------------------------------------------------

@dataclass
class ImageFingerprints:
    """Arrays over dataset indices 0..N-1; rows of unreadable images are zero."""

    sha256: np.ndarray     # (N, 32) uint8, the raw bytes' digest
    phash: np.ndarray      # (N,) uint64
    thumbs: np.ndarray     # (N, THUMB_SIZE, THUMB_SIZE) uint8 grayscale
    width: np.ndarray      # (N,) int32, after EXIF orientation
    height: np.ndarray     # (N,) int32
    nbytes: np.ndarray     # (N,) int64, size of the raw bytes
    readable: np.ndarray   # (N,) bool
    sharpness: np.ndarray  # (N,) float32, detail left in the image (see image_sharpness)

    def __len__(self) -> int:
        return len(self.readable)

    @classmethod
    def empty(cls, count: int) -> "ImageFingerprints":
        return cls(np.zeros((count, 32), np.uint8), np.zeros(count, np.uint64),
                   np.zeros((count, THUMB_SIZE, THUMB_SIZE), np.uint8), np.zeros(count, np.int32),
                   np.zeros(count, np.int32), np.zeros(count, np.int64), np.zeros(count, bool),
                   np.zeros(count, np.float32))

    def subset(self, rows: np.ndarray) -> "ImageFingerprints":
        """The fingerprints of `rows`, re-indexed 0..len(rows)-1 (a later round's smaller set)."""
        return type(self)(**{name: getattr(self, name)[rows] for name in _FIELDS})

    def save(self, path: str | Path) -> None:
        """An .npz written under a temporary name first, so a reader never sees half a file."""
        with atomic_open(path) as fh:
            np.savez(fh, **{name: getattr(self, name) for name in _FIELDS})

    @classmethod
    def load(cls, path: str | Path) -> "ImageFingerprints":
        with np.load(path, allow_pickle=False) as data:
            return cls(**{name: data[name] for name in _FIELDS})


_FIELDS = ("sha256", "phash", "thumbs", "width", "height", "nbytes", "readable", "sharpness")


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II as a matrix: dct(x) = D @ x, and D @ X @ D.T for an image."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    d = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


_DCT = _dct_matrix(HASH_SIZE)
_BIT_WEIGHTS = (np.uint64(1) << np.arange(64, dtype=np.uint64))


def phash_of(gray32: np.ndarray) -> np.uint64:
    """64 bits: the 8x8 lowest DCT frequencies of a 32x32 grayscale above their median (DC excluded
    from the median, as it only carries the brightness)."""
    coeffs = (_DCT @ gray32.astype(np.float64) @ _DCT.T)[:8, :8].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return np.bitwise_or.reduce(_BIT_WEIGHTS[bits]) if bits.any() else np.uint64(0)


SHARPNESS_SIDE = 64


def image_sharpness(gray: np.ndarray) -> float:
    """Standard deviation of the 4-neighbour Laplacian of a SHARPNESS_SIDE-square grayscale
    (0-255): the fine detail an image holds at a fixed scale, whatever its size. Measured on LFW
    faces: 21 at the 0.5th percentile, 36 at the median; a blank image 2, heavy blur or a tiny
    crop blown up 1.3-1.6, a synthetic pattern 11. Low values are junk or unrecognisable blur
    (ml.mining.quality)."""
    lap = 4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return float(lap.std())


def _decode_gray(data: bytes):
    """(32x32 float grayscale, width, height, sharpness) of an image's bytes; raises when
    unreadable."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width * height > MAX_PIXELS or width < 1 or height < 1:
            raise ValueError(f"{width}x{height} is over the {MAX_PIXELS} pixel cap")
        image.draft("L", (DECODE_SIDE, DECODE_SIDE))  # large JPEGs only: see DECODE_SIDE
        image = ImageOps.exif_transpose(image)
        if image.size[0] != image.size[1] and _swaps_sides(image, width, height):
            width, height = height, width
        # BILINEAR in Pillow widens its support when shrinking (antialiased): a resized copy
        # lands within 0.5/255 of its original, where BOX at non-integer ratios differed by 2.5.
        luminance = image.convert("L")
        gray = luminance.resize((HASH_SIZE, HASH_SIZE), Image.Resampling.BILINEAR)
        detail = luminance.resize((SHARPNESS_SIDE, SHARPNESS_SIDE), Image.Resampling.BILINEAR)
        return (np.asarray(gray, dtype=np.float64), width, height,
                image_sharpness(np.asarray(detail, dtype=np.float64)))


def _swaps_sides(image, width: int, height: int) -> bool:
    # After exif_transpose the orientation is applied: a portrait that was stored landscape.
    return (image.size[0] > image.size[1]) != (width > height)


def fingerprint_one(data: bytes):
    """(sha256 bytes, phash, thumbnail, width, height, sharpness) of one image; raises when
    unreadable."""
    digest = hashlib.sha256(data).digest()
    gray, width, height, sharpness = _decode_gray(data)
    factor = HASH_SIZE // THUMB_SIZE
    thumb = gray.reshape(THUMB_SIZE, factor, THUMB_SIZE, factor).mean(axis=(1, 3))
    return digest, phash_of(gray), np.rint(thumb).astype(np.uint8), width, height, sharpness


def fingerprint_images(read_bytes: Callable[[int], bytes], count: int, *,
                       progress: Callable[[int, int], None] | None = None,
                       progress_every: int = 1000) -> ImageFingerprints:
    """Fingerprints of images 0..count-1, read_bytes(i) giving image i's raw bytes (a file's
    content or a RecordIO record's image). An image that cannot be read or decoded is left
    unreadable (readable False); it never stops the others. progress(done, count) is called
    every progress_every images and at the end."""
    out = ImageFingerprints.empty(count)
    for i in range(count):
        try:
            data = read_bytes(i)
            out.nbytes[i] = len(data)
            digest, bits, thumb, width, height, sharpness = fingerprint_one(data)
        except Exception:  # decoders of untrusted bytes raise many exception types
            pass
        else:
            out.sha256[i] = np.frombuffer(digest, dtype=np.uint8)
            out.phash[i], out.thumbs[i] = bits, thumb
            out.width[i], out.height[i], out.readable[i] = width, height, True
            out.sharpness[i] = sharpness
        if progress is not None and ((i + 1) % progress_every == 0 or i + 1 == count):
            progress(i + 1, count)
    return out


# -- thresholds -----------------------------------------------------------------------------------

# The decision: mean absolute difference of the two 16x16 thumbnails, in /255. Measured (16x16
# thumbnails of antialiased 32x32 grayscales, bench/copies.py and the notes of issue 9):
#   copies of LFW faces (250 px): re-encoded JPEG q50-85 at most 0.60, resized to 40-80% at most
#     0.50; the same at 112 px: at most 0.71 and 1.24;
#   different photos of one person, AT&T (40 x 10, one session, fixed camera): at least 2.77
#     (median 20); LFW training identities: the closest different photos 3.36 and 3.43 (the
#     same press photo aligned twice, and two frames of one speech), then 5.3 and more.
# 2.0 sits between (margin 0.77 below AT&T's closest pair). Cropping is the weak spot: a crop
# of one pixel a side of a 250 px face moves the thumbnail by 1.7/255 (median, at most 3.3),
# as much as a retake does, so only crops of about a pixel at 250 px are found.
COPY_PIXEL_DISTANCE = 2.0
# The proposal: a pair is compared when it shares a 16-bit band of the pHash exactly or within
# one bit (so every pair within Hamming distance 7 is proposed, and most up to 12). Copies
# measured: re-encoded at most 2 bits apart, resized at most 8, 1-pixel crops at most 8.
PROPOSE_BANDS = 4
PROPOSE_BAND_RADIUS = 1
# A thumbnail this flat (standard deviation /255) carries no picture to compare (a blank image):
# it is only matched by its bytes, and left to the low-quality flags.
FLAT_THUMB_STD = 2.0


@dataclass
class CopyConfig:
    pixel_distance: float = COPY_PIXEL_DISTANCE
    band_radius: int = PROPOSE_BAND_RADIUS
    flat_std: float = FLAT_THUMB_STD
    # Embeddings propose each face's k nearest faces (they never decide).
    embedding_neighbours: int = 5
    # Across identities, the copy under the identity whose centre (leave-one-out) is nearer by
    # at least this cosine is the one to keep; nearer by less, the reviewer chooses.
    identity_margin: float = 0.02
    batch_size: int = 32_768


# -- candidate pairs ------------------------------------------------------------------------------

def _cross(start_a, count_a, start_b, count_b):
    """Every (a, b) position pair of the bucket pairs (start_a[k]:+count_a[k]) x (start_b[k]:+count_b[k])."""
    sizes = count_a * count_b
    total = int(sizes.sum())
    if total == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    which = np.repeat(np.arange(len(sizes)), sizes)
    offset = np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return start_a[which] + offset // count_b[which], start_b[which] + offset % count_b[which]


def _band_masks(radius: int) -> list[int]:
    masks = [0]
    if radius >= 1:
        masks += [1 << k for k in range(16)]
    if radius >= 2:
        masks += [(1 << a) | (1 << b) for a in range(16) for b in range(a + 1, 16)]
    return masks


def phash_pairs(phash: np.ndarray, rows: np.ndarray, radius: int = PROPOSE_BAND_RADIUS):
    """Pairs (dataset indices, low < high) of rows whose pHash agrees on some 16-bit band within
    `radius` bits: sorted band values and binary search, never all pairs."""
    found = []
    for band in range(PROPOSE_BANDS):
        keys = ((phash[rows] >> np.uint64(16 * band)) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        uniq, start, count = np.unique(keys[order], return_index=True, return_counts=True)
        for mask in _band_masks(radius):
            if mask == 0:
                many = count > 1
                a, b = _cross(start[many], count[many], start[many], count[many])
                keep = a < b
                a, b = a[keep], b[keep]
            else:
                target = uniq ^ mask
                pos = np.minimum(np.searchsorted(uniq, target), len(uniq) - 1)
                hit = (uniq[pos] == target) & (uniq < target)  # each bucket pair once
                a, b = _cross(start[hit], count[hit], start[pos[hit]], count[pos[hit]])
            found.append(np.stack([rows[order[a]], rows[order[b]]], axis=1))
    return _unique_pairs(found)


def _unique_pairs(parts) -> np.ndarray:
    pairs = np.concatenate(parts) if parts else np.empty((0, 2), np.int64)
    if len(pairs) == 0:
        return np.empty((0, 2), np.int64)
    pairs = np.sort(pairs.astype(np.int64), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(pairs, axis=0)


def hash_pairs(sha256: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Pairs of rows with the same content hash (each member with the group's first)."""
    _, inverse = np.unique(sha256[rows], axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    first = np.ones(len(order), bool)
    first[1:] = inverse[order][1:] != inverse[order][:-1]
    head = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
    pairs = np.stack([rows[order[head]], rows[order]], axis=1)[~first]
    return _unique_pairs([pairs])


def embedding_pairs(embeddings: np.ndarray, rows: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    from ml.mining.search import knn, plan_search

    if k <= 0 or len(rows) < 2:
        return np.empty((0, 2), np.int64)
    plan = plan_search(len(rows), len(rows), 3, 1e8)
    _, positions = knn(embeddings, rows, embeddings, rows, k + 1, plan, batch_size=batch_size)
    query = np.repeat(np.arange(len(rows)), positions.shape[1])
    other = positions.ravel()
    ok = other >= 0
    return _unique_pairs([np.stack([rows[query[ok]], rows[other[ok]]], axis=1)])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def pixel_distance(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """Mean absolute thumbnail difference of each pair, in /255."""
    out = np.empty(len(a), np.float64)
    for s in range(0, len(a), batch):
        x = thumbs[a[s:s + batch]].astype(np.int16)
        y = thumbs[b[s:s + batch]].astype(np.int16)
        out[s:s + batch] = np.abs(x - y).mean(axis=(1, 2))
    return out


# -- deciding and suggesting ----------------------------------------------------------------------

def _components(pairs: np.ndarray) -> list[list[int]]:
    parent: dict[int, int] = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for x in list(parent):
        groups.setdefault(root(x), []).append(x)
    return [sorted(g) for g in groups.values()]


def _own_centre_cosines(embeddings, labels, rows, faces, batch_size) -> dict[int, float]:
    """Per face in `faces`: cosine to its own identity's centre with the face left out."""
    from ml.centres import identity_centres
    from ml.mining.prototypes import leave_one_out_cosine

    count = int(labels[rows].max()) + 1
    found = identity_centres(embeddings, labels, rows, count, batch_size=batch_size)
    faces = np.asarray(sorted(faces), dtype=np.int64)
    cos = leave_one_out_cosine(embeddings, labels, faces, found.sizes, found.centres, found.sum_norm, batch_size)
    return {int(f): float(c) for f, c in zip(faces, cos)}


def _rank(fp: ImageFingerprints, i: int) -> tuple:
    """Which copy of one identity to keep: more pixels, then more bytes, then the earlier."""
    return (-int(fp.width[i]) * int(fp.height[i]), -int(fp.nbytes[i]), i)


def mine_copies(fingerprints: ImageFingerprints, labels: np.ndarray, *, embeddings: np.ndarray | None = None,
                active: np.ndarray | None = None, config: CopyConfig | None = None) -> list[FlagCandidate]:
    """near_duplicate flags: one per copy, paired with the copy that stays (see the module doc).
    Faces taking part: readable, labelled (label >= 0) and active."""
    config = config or CopyConfig()
    fp = fingerprints
    labels = np.asarray(labels).astype(np.int64)
    if len(fp) != len(labels):
        raise ValueError(f"{len(fp)} fingerprints for {len(labels)} labels")
    keep = fp.readable & (labels >= 0)
    if active is not None:
        keep &= np.asarray(active, dtype=bool)
    rows = np.flatnonzero(keep)
    if len(rows) < 2:
        return []
    flat = fp.thumbs.reshape(len(fp), -1).std(axis=1) < config.flat_std
    pictured = rows[~flat[rows]]
    proposals = {"content_hash": hash_pairs(fp.sha256, rows),
                 "phash_band": phash_pairs(fp.phash, pictured, config.band_radius)}
    if embeddings is not None:
        proposals["embedding_neighbours"] = embedding_pairs(embeddings, pictured, config.embedding_neighbours,
                                                            config.batch_size)
    pairs = _unique_pairs(list(proposals.values()))
    if len(pairs) == 0:
        return []
    a, b = pairs[:, 0], pairs[:, 1]
    exact = (fp.sha256[a] == fp.sha256[b]).all(axis=1)
    distance = pixel_distance(fp.thumbs, a, b)
    close = exact | ((distance <= config.pixel_distance) & ~flat[a] & ~flat[b])
    confirmed = pairs[close]
    found = {tuple(p): (bool(e), float(d)) for p, e, d in zip(confirmed.tolist(), exact[close], distance[close])}
    groups = _components(confirmed)
    own_cos = {}
    if embeddings is not None and groups:
        mixed = [f for g in groups if len({int(labels[x]) for x in g}) > 1 for f in g]
        if mixed:
            own_cos = _own_centre_cosines(embeddings, labels, rows, mixed, config.batch_size)
    thresholds = _threshold_record(config, {k: len(v) for k, v in proposals.items()})
    flags = []
    for group in groups:
        flags += _group_flags(group, fp, labels, found, own_cos, config, thresholds)
    flags.sort(key=lambda f: -f.score)
    return flags


def _threshold_record(config: CopyConfig, proposed: dict) -> dict:
    return {
        "pixel_distance": {"value": config.pixel_distance, "unit": "/255, mean absolute difference of 16x16 "
                           "grayscale thumbnails",
                           "reason": "copies measured at most 1.24/255 (re-encoded, resized); different photos "
                                     "of one person at least 2.77/255 (AT&T)"},
        "proposal": {"phash_bands": PROPOSE_BANDS, "band_radius": config.band_radius,
                     "reason": "every pair within Hamming distance 4 * radius + 3 shares a band within radius "
                               "bits; a proposal is only compared, the pixel distance decides"},
        "proposed_pairs": proposed,
    }


def _group_flags(group, fp, labels, found, own_cos, config, thresholds) -> list[FlagCandidate]:
    """One flag per member but the group's keeper. The keeper is the copy under the identity
    the face belongs to (when the embeddings tell), else the largest (then earliest) copy."""
    belongs, margin = _belonging_identity(group, labels, own_cos, config.identity_margin)
    def rank(i):
        return (0 if belongs is not None and labels[i] == belongs else 1,) + _rank(fp, i)
    keeper = min(group, key=rank)
    flags = []
    for member in group:
        if member == keeper:
            continue
        exact, distance = _pair_measure(fp, found, keeper, member)
        same = bool(labels[keeper] == labels[member])
        identity_cosine = None
        if same:
            suggestion, remove = "remove", "other_index"
            keep_reason = "the larger copy (more pixels, then more bytes), else the earlier one"
        else:
            cos = own_cos.get(keeper), own_cos.get(member)
            if cos[0] is not None and cos[1] is not None and math.isfinite(cos[0]) and math.isfinite(cos[1]):
                identity_cosine = {"index": round(cos[0], 4), "other_index": round(cos[1], 4)}
            if belongs is not None and labels[keeper] == belongs and labels[member] != belongs:
                suggestion, remove = "remove", "other_index"
                keep_reason = (f"the face is nearer its identity's centre under this label (leave-one-out "
                               f"cosine higher by {margin:.3f} >= {config.identity_margin})")
            else:
                suggestion, remove = "keep", None
                keep_reason = ("one picture under two identities: which label is right is the "
                               "reviewer's choice" + ("" if own_cos else " (no embeddings to tell)"))
        evidence = NearDuplicateEvidence(
            method="content hash (byte-identical)" if exact else "perceptual hash proposal, thumbnail distance",
            exact=exact, hamming=int(hamming(fp.phash[keeper], fp.phash[member])),
            pixel_distance=round(distance, 3), same_identity=same,
            size=[int(fp.width[keeper]), int(fp.height[keeper])],
            other_size=[int(fp.width[member]), int(fp.height[member])],
            group_size=len(group), thresholds=thresholds, remove=remove, keep_reason=keep_reason,
            identity_cosine=identity_cosine)
        score = max(0.0, 1.0 - distance / 255.0)
        flags.append(FlagCandidate(kind=NEAR_DUPLICATE, score=score, index=int(keeper), other_index=int(member),
                                   label=int(labels[keeper]), other_label=int(labels[member]),
                                   suggestion=suggestion, evidence=evidence))
    return flags


def _pair_measure(fp, found, i, j) -> tuple[bool, float]:
    key = (min(i, j), max(i, j))
    if key in found:
        return found[key]
    exact = bool((fp.sha256[i] == fp.sha256[j]).all())
    return exact, float(pixel_distance(fp.thumbs, np.array([i]), np.array([j]))[0])


def _belonging_identity(group, labels, own_cos, margin_needed) -> tuple[int | None, float]:
    """The identity the pictured face belongs to, when the group spans identities and the
    leave-one-out centre cosines tell by at least margin_needed; (None, 0) otherwise."""
    by_label: dict[int, list[float]] = {}
    for i in group:
        c = own_cos.get(i)
        if c is not None and math.isfinite(c):
            by_label.setdefault(int(labels[i]), []).append(c)
    if len({int(labels[i]) for i in group}) < 2 or len(by_label) < 2:
        return None, 0.0
    best = sorted(((max(v), k) for k, v in by_label.items()), reverse=True)
    margin = best[0][0] - best[1][0]
    return (best[0][1], margin) if margin >= margin_needed else (None, margin)
