"""Planted images for the noise benchmark: copies of training images and junk (see ml.synthetic_noise).

Both are deterministic per seed (their own random.Random, so planting never changes the label
noise drawn before it), write their images under OUT/planted/ and add entries at the end of the
noisy set, listed by absolute path.

Copies (issue 9, near-duplicates are the same image), variants in turn over the chosen images:
  exact     the same bytes
  reencode  decoded and saved again as JPEG at quality 60-85
  resize    shrunk to 50-80% of its size (Lanczos), JPEG quality 90
  crop      one pixel off one side per 200 px of side (at least one), JPEG quality 90: "slightly
            cropped"; a larger crop moves a 16x16 thumbnail as much as a retake of the photo does
            (ml.mining.copies), so it is not a copy the miner can promise to find
A share (cross_fraction) is filed under another identity: a label question.
Junk (issue 9, low norm means junk), variants in turn: blank (one grey level and faint noise),
blur (Gaussian blur of radius 8-12% of the side), tiny (a 10-16 px crop upscaled), background (a
corner or border strip of a training image, upscaled), synthetic (noise and random shapes).
"""
from __future__ import annotations

import io
import math
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

COPY_VARIANTS = ("exact", "reencode", "resize", "crop")
JUNK_VARIANTS = ("blank", "blur", "tiny", "background", "synthetic")
PLANTED = "planted"


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB") if image.mode not in ("L", "RGB") else image.copy()


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _copy_bytes(source: Path, variant: str, rng: random.Random) -> tuple[bytes, str]:
    if variant == "exact":
        return source.read_bytes(), source.suffix.lower() or ".jpg"
    image = _open_rgb(source)
    if variant == "reencode":
        return _jpeg(image, rng.randint(60, 85)), ".jpg"
    if variant == "resize":
        scale = rng.uniform(0.5, 0.8)
        size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
        return _jpeg(image.resize(size, Image.Resampling.LANCZOS), 90), ".jpg"
    if variant == "crop":
        side = rng.randrange(4)
        px = max(1, min(image.width, image.height) // 200)
        box = [0, 0, image.width, image.height]
        box[side] += px if side < 2 else -px
        return _jpeg(image.crop(tuple(box)), 90), ".jpg"
    raise ValueError(f"unknown copy variant {variant!r}")


def _labels(noisy) -> list[str]:
    return sorted({e.given_label for e in noisy.entries})


def _with(noisy, entries: list, params: dict):
    return type(noisy)(entries=list(noisy.entries) + entries, pairs=list(noisy.pairs),
                       params={**noisy.params, **params})


def _fresh_dir(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)  # a rerun with other options must not leave stale images behind
    folder.mkdir(parents=True)
    return folder


def plant_copies(noisy, root, out_dir, count: int, cross_fraction: float, seed: int):
    """`count` copies of clean images (variants in turn), the first round(count * cross_fraction)
    filed under another identity; the new NoisySet (entries of kind "copy" appended)."""
    from ml.synthetic_noise import NoisyEntry

    if count < 0 or not 0 <= cross_fraction <= 1:
        raise ValueError("copies must be >= 0 and cross_fraction within [0, 1]")
    if count == 0:
        return noisy
    clean = [e for e in noisy.entries if e.kind == "clean"]
    if count > len(clean):
        raise ValueError(f"{count} copies asked for, but only {len(clean)} clean images")
    rng = random.Random(f"copies:{seed}")
    sources = rng.sample(clean, count)
    labels = _labels(noisy)
    cross = round(count * cross_fraction)
    if cross and len(labels) < 2:
        raise ValueError("copies across identities need at least two identities")
    folder = _fresh_dir(Path(out_dir).resolve() / PLANTED / "copies")
    entries = []
    for k, source in enumerate(sources):
        variant = COPY_VARIANTS[k % len(COPY_VARIANTS)]
        data, suffix = _copy_bytes(Path(root) / source.path, variant, rng)
        given = source.given_label
        if k < cross:
            given = rng.choice([name for name in labels if name != source.given_label])
        path = folder / f"{k:05d}_{variant}{suffix}"
        path.write_bytes(data)
        entries.append(NoisyEntry(str(path), "copy", source.true_label, given, copy_of=source.path, variant=variant))
    return _with(noisy, entries, {"copies": count, "cross_copies": cross_fraction})


def _junk_image(variant: str, source: Image.Image, rng: random.Random) -> Image.Image:
    w, h = source.size
    nrng = np.random.default_rng(rng.getrandbits(32))
    if variant == "blank":
        level = rng.randint(0, 255)
        pixels = np.clip(level + nrng.normal(0, 1.5, (h, w, 3)), 0, 255).astype(np.uint8)
        return Image.fromarray(pixels, "RGB")
    if variant == "blur":
        return source.convert("RGB").filter(ImageFilter.GaussianBlur(radius=min(w, h) * rng.uniform(0.08, 0.12)))
    if variant == "tiny":
        side = rng.randint(10, 16)
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        return source.convert("RGB").crop((x, y, x + side, y + side)).resize((w, h), Image.Resampling.BICUBIC)
    if variant == "background":
        # A strip along one border: background, clothes, hair, rarely a face.
        strip = max(8, min(w, h) // 5)
        box = rng.choice([(0, 0, w, strip), (0, h - strip, w, h), (0, 0, strip, h), (w - strip, 0, w, h)])
        return source.convert("RGB").crop(box).resize((w, h), Image.Resampling.BICUBIC)
    if variant == "synthetic":
        pixels = nrng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB").filter(ImageFilter.GaussianBlur(radius=2))
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randint(3, 8)):
            x0, y0 = rng.randint(0, w - 2), rng.randint(0, h - 2)
            x1, y1 = rng.randint(x0 + 1, w), rng.randint(y0 + 1, h)
            colour = tuple(rng.randint(0, 255) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        return image
    raise ValueError(f"unknown junk variant {variant!r}")


def plant_junk(noisy, root, out_dir, rate: float, seed: int):
    """floor(rate * images) junk images (variants in turn), each filed under a random identity;
    the new NoisySet (entries of kind "junk" appended)."""
    from ml.synthetic_noise import NoisyEntry

    if not 0 <= rate <= 1:
        raise ValueError(f"junk rate must be within [0, 1], got {rate}")
    count = math.floor(len(noisy.entries) * rate + 1e-9)
    if count == 0:
        return noisy
    rng = random.Random(f"junk:{seed}")
    clean = [e for e in noisy.entries if e.kind == "clean"] or list(noisy.entries)
    labels = _labels(noisy)
    folder = _fresh_dir(Path(out_dir).resolve() / PLANTED / "junk")
    entries = []
    for k in range(count):
        variant = JUNK_VARIANTS[k % len(JUNK_VARIANTS)]
        source = _open_rgb(Path(root) / rng.choice(clean).path)
        image = _junk_image(variant, source, rng)
        path = folder / f"{k:05d}_{variant}.jpg"
        path.write_bytes(_jpeg(image, 90))
        entries.append(NoisyEntry(str(path), "junk", None, rng.choice(labels), variant=variant))
    return _with(noisy, entries, {"junk": rate})
