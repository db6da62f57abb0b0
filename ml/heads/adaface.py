"""AdaFace: the margin adapts to image quality, read from the embedding's norm.

    ẑ = clip(h * (‖z‖ - μ) / (σ + ε), -1, 1)
    target = cos(clip(θ_y - m*ẑ, ε, π - ε)) - (m + m*ẑ)

At ẑ = -1 (low norm, presumed low quality) this is ArcFace's cos(θ_y + m), whose gradient
de-emphasises hard, possibly unrecognisable samples; at ẑ = 0 it is CosFace's cos θ_y - m; at
ẑ = +1 (high quality) cos(θ_y - m) - 2m, which emphasises hard samples. μ and σ are EMAs
(momentum 0.01) of the batch mean and (unbiased) std of the norms; they start at AdaFace's values
20 and 100 and are updated only in training mode, before ẑ is computed (a batch of one sample
leaves σ unchanged). The clip of θ_y - m*ẑ to [ε, π - ε] is AdaFace's own safe branch.

Norms: `forward(embeddings, labels, norms=None)` takes the UN-normalised embeddings z and, unless
`norms` is given, uses ‖z‖ itself; norms are clipped to [0.001, 100] as in AdaFace. Either way
the norm is a constant for the gradient (stop-gradient, as in AdaFace): the head must not be able
to lower its loss by changing the feature norm. Whether a low norm really means low quality must be
calibrated per model (the link is reported reversed on some), which is why
`last_stats["norm_hat"]` exposes ẑ.
"""
from __future__ import annotations

import math

import torch

from ml.heads.margin import MarginHead, angle_stats, autocast_off, replace_target


class AdaFace(MarginHead):
    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.4,
        h: float = 0.333,
        momentum: float = 0.01,
        eps: float = 1e-3,
        initial_norm_mean: float = 20.0,
        initial_norm_std: float = 100.0,
    ) -> None:
        super().__init__(embedding_dim, num_classes, s)
        self.m, self.h, self.momentum, self.eps = m, h, momentum, eps
        self.register_buffer("norm_mean", torch.tensor(float(initial_norm_mean)))
        self.register_buffer("norm_std", torch.tensor(float(initial_norm_std)))

    def forward(
        self, embeddings: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor | None = None
    ) -> torch.Tensor:
        with autocast_off(embeddings.device):
            if norms is None:
                norms = embeddings.detach().float().norm(dim=1)
            return self.margin_logits(self.cosine(embeddings), labels.long(), norms)

    def _update_norm_stats(self, norms: torch.Tensor) -> None:
        keep = 1.0 - self.momentum
        self.norm_mean.mul_(keep).add_(self.momentum * norms.mean().to(self.norm_mean.dtype))
        if norms.numel() > 1:
            self.norm_std.mul_(keep).add_(self.momentum * norms.std().to(self.norm_std.dtype))

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        norms = norms.detach().to(cos.dtype).clamp(0.001, 100.0)
        if self.training:
            with torch.no_grad():
                self._update_norm_stats(norms)
        mean, std = self.norm_mean.to(cos.dtype), self.norm_std.to(cos.dtype)
        norm_hat = (self.h * (norms - mean) / (std + self.eps)).clamp(-1.0, 1.0)
        self.last_stats = angle_stats(cos, labels)
        self.last_stats["norm_hat"] = norm_hat.detach()
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)
        theta = torch.acos(cos_y).sub(self.m * norm_hat).clamp(self.eps, math.pi - self.eps)
        target = torch.cos(theta) - (self.m + self.m * norm_hat)
        return self.s * replace_target(cos, labels, target)
