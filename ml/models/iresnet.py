"""IResNet backbones (the ArcFace / arcface_torch family), written from the published layout.

Layout: 3x3 stem conv (stride 1) -> BN -> PReLU, four stages of BN-conv-BN-PReLU-conv-BN residual
blocks whose first block halves the resolution, then an output head
BN2d -> flatten -> dropout -> FC -> BN1d. The FC input size is derived from the input size, so the
same class serves the standard 112x112 models and small CPU configurations.

The embedding is deliberately NOT L2-normalised: its norm is a quality signal (AdaFace, low-norm
flags). The final BN1d keeps its scale fixed at 1 (as in arcface_torch) so the network cannot
trade feature scale for nothing; its shift is learnt.

Parameter counts (computed with `count_parameters`, 512-d embedding, 112x112 input):
    iresnet18   24.0 M      iresnet34   34.1 M
    iresnet50   43.6 M      iresnet100  65.2 M
    cpu_small (widths 16/32/64/128, 64x64 input, 128-d embedding): 0.96 M
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ml.models.init import init_conv_bn

STAGE_LAYOUTS: dict[str, tuple[int, int, int, int]] = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
DEFAULT_WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def downsampled_size(size: int, num_halvings: int) -> int:
    """Spatial size after `num_halvings` stride-2, padding-1, 3x3 convolutions (ceil(size / 2) each)."""
    for _ in range(num_halvings):
        size = (size + 1) // 2
    return size


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class IBasicBlock(nn.Module):
    """Pre-activation style block: BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = conv3x3(in_ch, out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = conv3x3(out_ch, out_ch, stride)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_ch, eps=BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.bn1(x))
        out = self.prelu(self.bn2(out))
        out = self.bn3(self.conv2(out))
        return out + self.shortcut(x)


class IResNet(nn.Module):
    """IResNet with configurable depth, widths, input size and embedding size.

    Args:
        layers: blocks per stage, e.g. (3, 4, 14, 3) for IResNet-50.
        widths: channels per stage; the stem uses widths[0].
        input_size: side of the square input image (112 for the standard models).
        embedding_dim: size of the returned (un-normalised) embedding.
        dropout: dropout probability before the FC (0 as in arcface_torch's default).
    """

    def __init__(
        self,
        layers: Sequence[int],
        widths: Sequence[int] = DEFAULT_WIDTHS,
        input_size: int = 112,
        embedding_dim: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError("IResNet needs exactly four stages (layers and widths of length 4)")
        self.input_size = input_size
        self.embedding_dim = embedding_dim
        self.stem = nn.Sequential(
            conv3x3(3, widths[0]), nn.BatchNorm2d(widths[0], eps=BN_EPS), nn.PReLU(widths[0])
        )
        stages = []
        in_ch = widths[0]
        for num_blocks, out_ch in zip(layers, widths):
            blocks = [IBasicBlock(in_ch, out_ch, stride=2)]
            blocks += [IBasicBlock(out_ch, out_ch, stride=1) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        final_side = downsampled_size(input_size, len(layers))
        self.bn_out = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * final_side * final_side, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        init_conv_bn(self)
        self.features.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        x = self.dropout(torch.flatten(self.bn_out(x), 1))
        # The embedding (and its norm) is computed in float32 even under autocast: the norm is
        # used downstream as a quality signal and half precision would coarsen it.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.features(self.fc(x.float()))


def iresnet(name: str, **kwargs) -> IResNet:
    """Build a named IResNet ("iresnet18" .. "iresnet100"); kwargs go to `IResNet`."""
    try:
        layers = STAGE_LAYOUTS[name]
    except KeyError:
        raise ValueError(f"unknown IResNet {name!r}; choose from {sorted(STAGE_LAYOUTS)}") from None
    return IResNet(layers, **kwargs)
