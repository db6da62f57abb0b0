"""CurricularFace: ArcFace target plus adaptive emphasis on hard negatives.

A negative j is hard when cos θ_j exceeds the sample's (safe-branch) target cos(θ_y + m); its logit
becomes cos θ_j * (t + cos θ_j). t is an EMA (momentum 0.01) of the batch's mean target cosine, so
early in training (t near 0) hard negatives are damped and later (t towards 1) emphasised.

Choices: t starts at 0 and is updated only in training mode, before the batch's logits are built
(as in the published code). The hardness threshold uses the safe-branch target rather than the raw
cos(θ_y + m), because the raw value turns back up past θ_y + m = π.
"""
from __future__ import annotations

import torch

from ml.heads.margin import MarginHead, angle_stats, check_fallback, combined_margin_target, replace_target


class CurricularFace(MarginHead):
    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        t_momentum: float = 0.01,
        fallback: str = "arcface_torch",
    ) -> None:
        super().__init__(embedding_dim, num_classes, s)
        check_fallback(1.0, m, fallback)
        self.m, self.t_momentum, self.fallback = m, t_momentum, fallback
        self.register_buffer("t", torch.zeros(()))

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.last_stats = angle_stats(cos, labels)
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)
        target = combined_margin_target(cos_y, 1.0, self.m, 0.0, self.fallback)
        if self.training:
            with torch.no_grad():
                batch_mean = cos_y.detach().mean().to(self.t.dtype)
                self.t.mul_(1.0 - self.t_momentum).add_(self.t_momentum * batch_mean)
        with torch.no_grad():
            hard = cos > target.detach()[:, None]
        t = self.t.to(cos.dtype)
        emphasised = torch.where(hard, cos * (t + cos), cos)
        return self.s * replace_target(emphasised, labels, target)
