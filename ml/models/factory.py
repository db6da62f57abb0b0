"""Backbone factory: one name per architecture the training code can ask for."""
from __future__ import annotations

from torch import nn

from ml.models.iresnet import STAGE_LAYOUTS, iresnet
from ml.models.mobilefacenet import MobileFaceNet

# A model that trains in minutes on 2 CPU cores: the IResNet-18 layout at a quarter of the width,
# on 64x64 crops, with a 128-d embedding (0.96 M parameters).
CPU_SMALL_DEFAULTS = {"widths": (16, 32, 64, 128), "input_size": 64, "embedding_dim": 128}

BACKBONE_NAMES = (*sorted(STAGE_LAYOUTS), "mobilefacenet", "cpu_small")


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a backbone by name: iresnet18/34/50/100, mobilefacenet or cpu_small.

    kwargs go to the model class (IResNet: widths, input_size, embedding_dim, dropout;
    MobileFaceNet: embedding_dim, width, input_size); for cpu_small they override its defaults.
    Every returned model exposes `input_size` and `embedding_dim` and returns un-normalised
    embeddings of shape (batch, embedding_dim).
    """
    if name in STAGE_LAYOUTS:
        return iresnet(name, **kwargs)
    if name == "mobilefacenet":
        return MobileFaceNet(**kwargs)
    if name == "cpu_small":
        return iresnet("iresnet18", **{**CPU_SMALL_DEFAULTS, **kwargs})
    raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONE_NAMES}")
