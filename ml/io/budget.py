"""The one pixel budget for decoding untrusted images, shared by the web process (thumbnails,
conversions: config.settings reads it from here), `--verify-images` and the training/embedding
loader. ml never imports Django, so the bound lives here with its environment override.

Image.open reads only the header, so checking the size before load() costs nothing, and a
12000x12000 PNG of 420 KB on disk (430 MB decoded) is refused without being decoded. Pillow's
own bomb limit (179 Mpx) would let it through.
"""
from __future__ import annotations

import os

from PIL import Image

# 25 Mpx is about 75 MB as RGB; face crops and even phone photos are well within it.
IMAGE_MAX_PIXELS = int(os.environ.get("IMAGE_MAX_PIXELS", "25000000"))


def over_budget(image: Image.Image, max_pixels: int | None = None) -> str | None:
    """Why decoding `image` (as opened, or as drafted) would exceed the budget, or None.
    max_pixels: the bound, by default IMAGE_MAX_PIXELS as it is at call time."""
    limit = IMAGE_MAX_PIXELS if max_pixels is None else max_pixels
    width, height = image.size
    if width * height > limit:
        return f"image of {width * height} pixels is over the budget of {limit}"
    return None
