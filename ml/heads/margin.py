"""Margin-based classification heads: shared base class and the combined (ArcFace/CosFace) head.

Every head owns the class centres W (num_classes x embedding_dim, L2-normalised at forward time),
takes UN-normalised embeddings (it normalises them itself) and returns logits already scaled by s,
ready for `F.cross_entropy`. All margin math runs in float32 (float64 when given float64) with
autocast switched off, because margins on half-precision cosines lose most of their resolution.

After each forward, `last_stats` holds per-sample angles of the last batch, computed without
gradients: theta_y (angle to the labelled centre, radians), theta_1 (smallest angle to any other
centre), j_star (that class) and band (RobustFace's easy/hard/noisy band of j_star; None elsewhere).

Safe branch of the combined margin cos(m1*θ + m2) - m3: once m1*θ + m2 passes π the cosine turns
back up, so a worse sample would get a *larger* target logit. Past that point we use the
arcface_torch fallback cos θ - m2*sin(m2) - m3 (InsightFace's choice, kept so baseline numbers are
comparable). It is monotone: at the switch it jumps *down* (by about 0.12 for m2 = 0.5) and then
keeps decreasing with θ, so the target never rewards a larger angle. For m1 != 1 that jump can point
up; there, or on request, `fallback="continuous"` uses cos θ - (1 + cos θ0) - m3 with θ0 the switch
angle, which joins the main branch without a jump.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Cosines are clamped to [-1 + COS_EPS, 1 - COS_EPS] so acos and its gradient stay finite.
COS_EPS = 1e-7
FALLBACKS = ("arcface_torch", "continuous")


def math_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float32, or float64 when any input is float64 (for gradcheck)."""
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def autocast_off(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


def clamp_cos(cos: torch.Tensor) -> torch.Tensor:
    return cos.clamp(-1.0 + COS_EPS, 1.0 - COS_EPS)


def combined_margin_target(
    cos_y: torch.Tensor, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0, fallback: str = "arcface_torch"
) -> torch.Tensor:
    """Target cosine cos(m1*θ_y + m2) - m3 with the safe branch described in the module docstring."""
    if m1 == 1.0 and m2 == 0.0:
        # CosFace: no angle needed, and skipping acos keeps the gradient exact near cos = ±1.
        return cos_y - m3
    theta = torch.acos(clamp_cos(cos_y))
    main = torch.cos(m1 * theta + m2) - m3
    switch_angle = (math.pi - m2) / m1
    if switch_angle >= math.pi:
        return main
    if fallback == "arcface_torch":
        beyond = cos_y - m2 * math.sin(m2) - m3
    else:
        beyond = cos_y - (1.0 + math.cos(switch_angle)) - m3
    return torch.where(theta <= switch_angle, main, beyond)


def check_fallback(m1: float, m2: float, fallback: str) -> None:
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    switch_angle = (math.pi - m2) / m1
    if fallback == "arcface_torch" and switch_angle < math.pi:
        # The fallback must start at or below the main branch's final value (-1), else the target
        # would jump up at the switch and reward larger angles.
        if math.cos(switch_angle) - m2 * math.sin(m2) > -1.0 + 1e-12:
            raise ValueError(
                "arcface_torch fallback is not monotone for these margins; use fallback='continuous'"
            )


@torch.no_grad()
def angle_stats(cos: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """theta_y, theta_1 (nearest other class), j_star (its index) per sample; band left None."""
    cos = cos.detach()
    cos_y = cos.gather(1, labels[:, None]).squeeze(1)
    others = cos.scatter(1, labels[:, None], float("-inf"))
    cos_1, j_star = others.max(dim=1)
    return {
        "theta_y": torch.acos(clamp_cos(cos_y)),
        "theta_1": torch.acos(clamp_cos(cos_1)),
        "j_star": j_star,
        "band": None,
    }


def replace_target(cos: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The cosine matrix with each row's labelled entry replaced by its margin target."""
    return cos.scatter(1, labels[:, None], target[:, None].to(cos.dtype))


class MarginHead(nn.Module):
    """Base class: class centres, float32 cosines, last-batch statistics.

    Subclasses implement `margin_logits(cos, labels)`, which gets the clamped (batch x classes)
    cosine matrix and returns scaled logits (and sets `last_stats`).
    """

    def __init__(
        self, embedding_dim: int, num_classes: int, s: float = 64.0, centres_per_class: int = 1
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError("a margin head needs at least two classes")
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.centres_per_class = centres_per_class
        self.s = s
        self.weight = nn.Parameter(torch.empty(num_classes * centres_per_class, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        self.last_stats: dict[str, torch.Tensor | None] = {}

    def centre_cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Clamped cosine of each embedding to every centre row of W: (batch, rows)."""
        dtype = math_dtype(embeddings, self.weight)
        with autocast_off(embeddings.device):
            x = F.normalize(embeddings.to(dtype), dim=1)
            w = F.normalize(self.weight.to(dtype), dim=1)
            return clamp_cos(F.linear(x, w))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine of each embedding to each class: (batch, num_classes)."""
        return self.centre_cosines(embeddings)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast_off(embeddings.device):
            return self.margin_logits(self.cosine(embeddings), labels.long())

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}, s={self.s}"


class CombinedMarginHead(MarginHead):
    """Target logit s*(cos(m1*θ_y + m2) - m3); ArcFace is (1, 0.5, 0), CosFace (1, 0, 0.35)."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m1: float = 1.0,
        m2: float = 0.5,
        m3: float = 0.0,
        fallback: str = "arcface_torch",
    ) -> None:
        super().__init__(embedding_dim, num_classes, s)
        check_fallback(m1, m2, fallback)
        self.m1, self.m2, self.m3, self.fallback = m1, m2, m3, fallback

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.last_stats = angle_stats(cos, labels)
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)
        target = combined_margin_target(cos_y, self.m1, self.m2, self.m3, self.fallback)
        return self.s * replace_target(cos, labels, target)
