"""Image preprocessing for face models, with Pillow and torch only (torchvision is not installed).

Order: centre crop -> resize -> to tensor in [-1, 1] -> random horizontal flip (training only).
Built from a small config dict, e.g. {"crop": 150, "size": 112, "flip": True} for LFW's 250x250
funnelled images, or {"crop": None, "size": 112, "flip": True} for aligned 112x112 crops.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from PIL import Image

CONFIG_KEYS = frozenset({"crop", "size", "flip"})


def _pair(value: int | tuple[int, int] | list[int] | None, name: str) -> tuple[int, int] | None:
    """An int or (height, width) as (height, width); None stays None."""
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        h = w = int(value)
    else:
        h, w = (int(v) for v in value)
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


def centre_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """The central height x width window; a window larger than the image is clamped to it
    (padding would feed the model black borders it never saw in training)."""
    w, h = image.size
    height, width = min(height, h), min(width, w)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float32 C x H x W tensor, each value (x / 255 - 0.5) / 0.5, i.e. in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return tensor.div_(127.5).sub_(1.0)


class FaceTransform:
    """Callable PIL image -> tensor; a plain class so that DataLoader workers can pickle it.

    The flip draws from torch's generator: DataLoader seeds it differently in each worker,
    so workers do not flip in lockstep.
    """

    def __init__(self, crop=None, size=None, flip: bool = False, flip_probability: float = 0.5):
        self.crop = _pair(crop, "crop")
        self.size = _pair(size, "size")
        self.flip = bool(flip)
        self.flip_probability = float(flip_probability)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.crop is not None:
            image = centre_crop(image, *self.crop)
        if self.size is not None and image.size != (self.size[1], self.size[0]):
            image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
        tensor = to_tensor(image)
        if self.flip and torch.rand(()) < self.flip_probability:
            tensor = torch.flip(tensor, dims=(2,))
        return tensor

    def __repr__(self) -> str:
        return f"FaceTransform(crop={self.crop}, size={self.size}, flip={self.flip})"


def build_transform(config: Mapping | None = None, *, train: bool = False) -> FaceTransform:
    """A FaceTransform from {"crop", "size", "flip"}; flipping only ever happens when `train`.

    Unknown keys are an error so that a misspelt option does not silently do nothing.
    """
    config = dict(config or {})
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown transform option(s) {sorted(unknown)}; expected {sorted(CONFIG_KEYS)}")
    return FaceTransform(
        crop=config.get("crop"),
        size=config.get("size"),
        flip=train and bool(config.get("flip", False)),
    )
