"""MobileFaceNet: depthwise inverted-residual bottlenecks with a global depthwise (GDC) head.

Layout (for 112x112 input; every stride-2 step halves the side, rounding up):
    conv3x3 s2 (64) -> depthwise 3x3 (64)
    bottlenecks (expansion t, channels c, repeats n, first stride s):
        (2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)
    conv1x1 (512) -> GDC: depthwise conv whose kernel covers the whole final map (7x7 at 112)
    -> linear to the embedding -> BN1d.
`width` scales every channel count (0.5 gives a narrow CPU-friendly model); `input_size` sets the
GDC kernel. The embedding is not L2-normalised (its norm is a quality signal).

Parameter counts (computed with `count_parameters`, 112x112 input):
    width 1.0, 128-d: 1.00 M      width 1.0, 512-d: 1.20 M
    width 0.5, 64x64 input, 128-d: 0.28 M
"""
from __future__ import annotations

import torch
from torch import nn

from ml.models.init import init_conv_bn
from ml.models.iresnet import downsampled_size

BOTTLENECK_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (2, 64, 5, 2),
    (4, 128, 1, 2),
    (2, 128, 6, 1),
    (4, 128, 1, 2),
    (2, 128, 2, 1),
)


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
            activation: bool = True) -> nn.Sequential:
    """Conv -> BN (-> PReLU); "linear" blocks (activation=False) keep the projection unsquashed."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if activation:
        layers.append(nn.PReLU(out_ch))
    return nn.Sequential(*layers)


class Bottleneck(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear projection, residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.block = nn.Sequential(
            conv_bn(in_ch, hidden, 1),
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden),
            conv_bn(hidden, out_ch, 1, activation=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _scaled(channels: int, width: float) -> int:
    return max(8, int(round(channels * width)))


class MobileFaceNet(nn.Module):
    """MobileFaceNet with configurable width multiplier, input size and embedding size."""

    def __init__(self, embedding_dim: int = 512, width: float = 1.0, input_size: int = 112) -> None:
        super().__init__()
        self.input_size = input_size
        self.embedding_dim = embedding_dim
        stem_ch = _scaled(64, width)
        self.stem = nn.Sequential(
            conv_bn(3, stem_ch, 3, stride=2),
            conv_bn(stem_ch, stem_ch, 3, groups=stem_ch),
        )
        blocks: list[nn.Module] = []
        in_ch = stem_ch
        num_halvings = 1
        for expansion, channels, repeats, stride in BOTTLENECK_SETTINGS:
            out_ch = _scaled(channels, width)
            for i in range(repeats):
                block_stride = stride if i == 0 else 1
                blocks.append(Bottleneck(in_ch, out_ch, block_stride, expansion))
                in_ch = out_ch
            num_halvings += stride == 2
        self.blocks = nn.Sequential(*blocks)
        head_ch = _scaled(512, width)
        self.expand = conv_bn(in_ch, head_ch, 1)
        final_side = downsampled_size(input_size, num_halvings)
        # GDC: one weight per channel and position, instead of global average pooling, because
        # face positions in an aligned crop are not equally informative.
        self.gdc = nn.Sequential(
            nn.Conv2d(head_ch, head_ch, final_side, groups=head_ch, bias=False),
            nn.BatchNorm2d(head_ch),
        )
        self.fc = nn.Linear(head_ch, embedding_dim, bias=False)
        self.features = nn.BatchNorm1d(embedding_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gdc(self.expand(self.blocks(self.stem(x))))
        x = torch.flatten(x, 1)
        # float32 embedding under autocast, as in IResNet: its norm is used as a quality signal.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.features(self.fc(x.float()))
