"""RobustFace: adaptive mining of noisy and hard samples inside the softmax.

Every (sample, negative class j) pair falls in one band, by angle (m = 0.5, |m1| = 0.15):
    easy   θ_j ≥ θ_y + m                  logit unchanged
    hard   θ_y - |m1| ≤ θ_j < θ_y + m     logit amplified by (1 + t), t = 0.2
    noisy  θ_j < θ_y - |m1|               logit damped by f = max((1 - φ/(1 - μ))^γ, floor), γ = 2
The target logit is ArcFace's cos(θ_y + m) (with the arcface_torch safe branch), then everything is
scaled by s = 64. φ is an EMA (momentum 0.01) of the fraction of easy pairs among the batch's
negative pairs; it starts at 0 and, like |m1|, only moves in training mode. μ is the assumed noise
rate (0.2). The base 1 - φ/(1 - μ) is clamped at 0 before the power: once φ passes 1 - μ, an
unclamped base would turn negative and squaring it would undo the damping.
A sample's flag is the band of its nearest other class j*: `last_stats["band"]` (0 easy, 1 hard,
2 noisy), with `last_stats["j_star"]` the suggested true identity of a noisy sample.

Bands are decided in the cosine domain (cos is monotone on [0, π]), which avoids an acos over the
whole batch x classes matrix: easy is cos θ_j ≤ cos(min(θ_y + m, π)) and noisy is
cos θ_j > cos(max(θ_y - |m1|, 0)); past those limits the band is empty, as the angle rule says.

Negative cosines. Multiplying a negative logit by (1 + t) would make it smaller, i.e. *easier*,
the opposite of the intent (and the damping would raise it). So the factor k is applied as
    cos' = cos * k    if cos ≥ 0,     cos' = cos / k    if cos < 0,
i.e. cos * k^sign(cos). This equals the published rule for the usual non-negative cosines, always
moves the pair's logit the intended way (up for hard, k > 1; down for noisy, k < 1), keeps the sign,
and is continuous and increasing in cos, so the gradient never flips direction.
`noise_floor` (1e-6) keeps k > 0, so a damped negative cosine stays finite (at most 1e6 in size,
harmless in float32, whose softmax then gives the pair a probability of exactly 0).

How |m1| evolves (`m1_schedule`):
    "fixed"    (default) |m1| stays at its initial 0.15.
    "anneal"   |m1| moves linearly from its initial value to `m1_floor` (0.05) over `anneal_steps`
               training steps, then stays there.
    "released" after every training step |m1| *= clamp(1 - φ/(1 - μ), 0, 1), as in the released
               code. The factor is < 1 as soon as φ > 0, so |m1| compounds to 0 and the noisy rule
               degenerates to θ_j < θ_y: every sample its own centre does not win becomes "noise",
               and ordinary hard-but-clean faces get damped and flagged.
Default "fixed" because the flags are the product here: a constant band geometry makes a flag mean
the same thing at any step, on any dataset size and schedule length, and keeps the hard band below
θ_y that protects clean-but-difficult faces from being sent to review as noise. "anneal" is there
to reproduce the 0.15 -> 0.05 configurations, "released" for comparison.
Bands of a step use |m1| as it is at the start of that step; φ is updated first and its new value
used for that step's damping (as in the released code), then |m1| is advanced for the next step.
"""
from __future__ import annotations

import math

import torch

from ml.heads.margin import MarginHead, angle_stats, check_fallback, combined_margin_target, replace_target

EASY, HARD, NOISY = 0, 1, 2
M1_SCHEDULES = ("fixed", "anneal", "released")


def scale_away(cos: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """cos * factor^sign(cos): factor > 1 always raises the value, factor < 1 always lowers it."""
    return torch.where(cos >= 0, cos * factor, cos / factor)


class RobustFace(MarginHead):
    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        m1: float = -0.15,
        t: float = 0.2,
        gamma: float = 2.0,
        mu: float = 0.2,
        phi_momentum: float = 0.01,
        m1_schedule: str = "fixed",
        m1_floor: float = 0.05,
        anneal_steps: int = 10_000,
        noise_floor: float = 1e-6,
        fallback: str = "arcface_torch",
    ) -> None:
        super().__init__(embedding_dim, num_classes, s)
        if m1_schedule not in M1_SCHEDULES:
            raise ValueError(f"m1_schedule must be one of {M1_SCHEDULES}, got {m1_schedule!r}")
        if not 0.0 <= mu < 1.0:
            raise ValueError("mu, the assumed noise rate, must be in [0, 1)")
        check_fallback(1.0, m, fallback)
        self.m, self.t, self.gamma, self.mu = m, t, gamma, mu
        self.phi_momentum, self.noise_floor, self.fallback = phi_momentum, noise_floor, fallback
        self.m1_schedule, self.m1_floor, self.anneal_steps = m1_schedule, abs(m1_floor), anneal_steps
        self.m1_initial = abs(m1)
        self.register_buffer("phi", torch.zeros(()))
        self.register_buffer("m1_abs", torch.tensor(float(abs(m1))))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def noise_factor(self) -> torch.Tensor:
        """Current damping factor f of noisy pairs (a 0-d tensor, kept on-device: no host sync)."""
        base = (1.0 - self.phi / (1.0 - self.mu)).clamp(min=0.0)
        return (base**self.gamma).clamp(min=self.noise_floor)

    @torch.no_grad()
    def pair_bands(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Band (EASY/HARD/NOISY) of every (sample, class) pair; the labelled class is marked -1.

        int8, because this is a batch x classes matrix and classes can number 100k.
        """
        theta_y = torch.acos(cos.gather(1, labels[:, None]))
        easy_limit = torch.cos((theta_y + self.m).clamp(max=math.pi))
        noisy_limit = torch.cos((theta_y - self.m1_abs.to(cos.dtype)).clamp(min=0.0))
        bands = torch.full_like(cos, HARD, dtype=torch.int8)
        bands[cos <= easy_limit] = EASY
        bands[cos > noisy_limit] = NOISY
        return bands.scatter(1, labels[:, None], -1)

    @torch.no_grad()
    def _update_phi(self, bands: torch.Tensor) -> torch.Tensor:
        easy_fraction = (bands == EASY).sum().to(self.phi.dtype) / (bands.numel() - bands.shape[0])
        self.phi.mul_(1.0 - self.phi_momentum).add_(self.phi_momentum * easy_fraction)
        return easy_fraction

    @torch.no_grad()
    def _advance_m1(self) -> None:
        self.steps.add_(1)
        if self.m1_schedule == "anneal":
            progress = (self.steps.to(self.m1_abs.dtype) / max(self.anneal_steps, 1)).clamp(max=1.0)
            self.m1_abs.copy_(self.m1_initial + (self.m1_floor - self.m1_initial) * progress)
        elif self.m1_schedule == "released":
            self.m1_abs.mul_((1.0 - self.phi / (1.0 - self.mu)).clamp(0.0, 1.0))

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        stats = angle_stats(cos, labels)
        bands = self.pair_bands(cos, labels)
        easy_fraction = self._update_phi(bands) if self.training else None
        noise_factor = self.noise_factor().to(cos.dtype)

        negatives = scale_away(cos, 1.0 + self.t).where(bands == HARD, cos)
        negatives = scale_away(cos, noise_factor).where(bands == NOISY, negatives)
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)
        target = combined_margin_target(cos_y, 1.0, self.m, 0.0, self.fallback)
        logits = self.s * replace_target(negatives, labels, target)

        stats["band"] = bands.gather(1, stats["j_star"][:, None]).squeeze(1).long()
        stats["phi"] = self.phi.clone()
        stats["m1_abs"] = self.m1_abs.clone()
        stats["noise_factor"] = noise_factor.detach().clone()
        if easy_fraction is not None:
            stats["easy_fraction"] = easy_fraction
        self.last_stats = stats
        if self.training:
            self._advance_m1()
        return logits
