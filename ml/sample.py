"""A small synthetic face set for demos and first runs where no real data is at hand.

Each identity is a drawn face with its own skin tone, face shape, eye spacing, hair and
mouth; each image jitters pose, light and noise around it, so that a model can learn the
identities and injected label noise is visibly wrong. Writes
    OUT/images/<identity>/<n>.jpg   training identities
    OUT/images/outsider_<k>/0.jpg   one-image outsiders, the open-set pool
    OUT/identities.txt, OUT/pool.txt (paths relative to OUT/images)

    python -m ml.sample --out var/sample [--identities 24] [--images 20] [--seed 0]
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZE = 112


def _identity_traits(rng: np.random.Generator) -> dict:
    return {
        # Skin tones from a light to a dark end, not arbitrary colours.
        "skin": np.array([255, 224, 196]) + rng.uniform(0, 1) * np.array([-150, -160, -150]),
        "hair": rng.integers(10, 120, size=3),
        "face_w": rng.uniform(0.52, 0.72),
        "face_h": rng.uniform(0.70, 0.86),
        "eye_gap": rng.uniform(0.16, 0.26),
        "eye_y": rng.uniform(0.40, 0.48),
        "mouth_w": rng.uniform(0.12, 0.30),
        "background": rng.integers(60, 200, size=3),
    }


def draw_face(traits: dict, rng: np.random.Generator) -> Image.Image:
    # Each image is another "photo": the backdrop's light, the face's place, size and tilt move
    # as much as between two real photos of a person, so that no two differ by less than a
    # re-encoded copy does (ml.mining.copies decides copies on pixels; with 3 px of jitter alone
    # the demo set had 23 pairs within the copy bound).
    backdrop = np.clip(traits["background"] * rng.uniform(0.75, 1.25), 0, 255)
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(c) for c in backdrop))
    draw = ImageDraw.Draw(image)
    cx, cy = SIZE / 2 + rng.normal(0, 5), SIZE / 2 + rng.normal(0, 5)
    scale = rng.uniform(0.9, 1.1)
    w, h = traits["face_w"] * SIZE / 2 * scale, traits["face_h"] * SIZE / 2 * scale
    light = rng.uniform(0.8, 1.15)
    skin = tuple(int(min(255, c * light)) for c in traits["skin"])
    draw.ellipse((cx - w * 1.05, cy - h * 1.08, cx + w * 1.05, cy + h * 0.2), fill=tuple(int(c) for c in traits["hair"]))
    draw.ellipse((cx - w, cy - h * 0.9, cx + w, cy + h), fill=skin)
    eye_y = cy + (traits["eye_y"] - 0.5) * SIZE
    gap = traits["eye_gap"] * SIZE
    for ex in (cx - gap / 2 - 5, cx + gap / 2 - 5):
        draw.ellipse((ex, eye_y - 3, ex + 10, eye_y + 3), fill=(250, 250, 250))
        draw.ellipse((ex + 3, eye_y - 2.5, ex + 7, eye_y + 2.5), fill=(30, 30, 40))
    mouth_w = traits["mouth_w"] * SIZE
    mouth_y = cy + h * 0.5
    draw.arc((cx - mouth_w / 2, mouth_y - 6, cx + mouth_w / 2, mouth_y + 6), 10, 170, fill=(120, 30, 40), width=2)
    image = image.rotate(rng.normal(0, 8), resample=Image.BILINEAR, fillcolor=tuple(int(c) for c in backdrop))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, size=(SIZE, SIZE, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def make_sample(out: Path, *, identities: int = 24, images: int = 20, outsiders: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    root = out / "images"
    names = [f"person_{i:03d}" for i in range(identities)]
    for name in names:
        traits = _identity_traits(rng)
        (root / name).mkdir(parents=True, exist_ok=True)
        for n in range(images):
            draw_face(traits, rng).save(root / name / f"{n:03d}.jpg", quality=90)
    pool = []
    for k in range(outsiders):
        folder = root / f"outsider_{k:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        draw_face(_identity_traits(rng), rng).save(folder / "0.jpg", quality=90)
        pool.append(f"outsider_{k:03d}/0.jpg")
    (out / "identities.txt").write_text("\n".join(names) + "\n")
    (out / "pool.txt").write_text("\n".join(pool) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Generate a small synthetic face set.")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--identities", type=int, default=24)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--outsiders", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_sample(args.out, identities=args.identities, images=args.images, outsiders=args.outsiders, seed=args.seed)
    print(f"sample written to {args.out}")


if __name__ == "__main__":
    main()
