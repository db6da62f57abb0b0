"""Co-Mining: two peer networks decide together which samples of a batch each one learns from.

Per batch, each network ranks the samples by its own loss and calls its top r fraction (largest
loss) noisy. Then, per sample:
    noisy by both         -> dropped (weight 0 for both);               agreement 2
    clean by one only     -> used by the PEER only (weight 1 there);    agreement 1
    clean by both         -> weight `clean_weight` (> 1) for both;      agreement 0
A sample one network calls clean but the other calls noisy goes to the network that doubts it:
that is the exchange of confident clean faces that counters each network's self-selection bias.
Each network's loss is its weighted sum divided by the sum of its weights, so with r = 0 (every
sample clean by both) it is exactly the plain mean loss and the weights only shift emphasis.

r(T) = r_max * min(T / T_k, 1), T in epochs, as in co-teaching: no sample is dropped at the start,
while the networks have not yet memorised the noisy labels and their losses say little.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CLEAN_BOTH, DISAGREE, NOISY_BOTH = 0, 1, 2


def drop_rate(progress: float, r_max: float, ramp: float) -> float:
    """r(T) = r_max * min(T / ramp, 1); ramp <= 0 means r_max from the start."""
    if ramp <= 0:
        return r_max
    return r_max * min(max(progress, 0.0) / ramp, 1.0)


def noisy_mask(losses: torch.Tensor, r: float) -> torch.Tensor:
    """The floor(r * n) samples with the largest loss (ties broken by position, lower first)."""
    n = losses.shape[0]
    k = math.floor(r * n + 1e-9)
    mask = torch.zeros(n, dtype=torch.bool, device=losses.device)
    if k > 0:
        order = torch.sort(losses.detach(), descending=True, stable=True).indices
        mask[order[:k]] = True
    return mask


@dataclass(frozen=True)
class Selection:
    weights_a: torch.Tensor
    weights_b: torch.Tensor
    agreement: torch.Tensor  # per sample: CLEAN_BOTH, DISAGREE or NOISY_BOTH
    noisy_a: torch.Tensor
    noisy_b: torch.Tensor


def select(losses_a: torch.Tensor, losses_b: torch.Tensor, r: float, clean_weight: float = 2.0) -> Selection:
    """Per-sample weights of each network's loss for this batch; see the module docstring."""
    noisy_a, noisy_b = noisy_mask(losses_a, r), noisy_mask(losses_b, r)
    both_clean = ~noisy_a & ~noisy_b
    dtype = losses_a.dtype if losses_a.is_floating_point() else torch.float32
    weights_a = torch.zeros(losses_a.shape[0], dtype=dtype, device=losses_a.device)
    weights_b = torch.zeros_like(weights_a)
    weights_a[both_clean] = clean_weight
    weights_b[both_clean] = clean_weight
    weights_a[noisy_a & ~noisy_b] = 1.0  # B trusts it, A doubts it: A learns from it
    weights_b[noisy_b & ~noisy_a] = 1.0
    agreement = noisy_a.long() + noisy_b.long()
    return Selection(weights_a, weights_b, agreement, noisy_a, noisy_b)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum(w * l) / sum(w); a batch with every weight 0 gives a zero loss that still carries
    (zero) gradient to every parameter, which DDP needs to stay in step."""
    total = weights.sum()
    return (losses * weights).sum() / total.clamp_min(1e-12)


def comining_losses(losses_a: torch.Tensor, losses_b: torch.Tensor, r: float, clean_weight: float):
    """(loss of network A, loss of network B, Selection) from per-sample losses of one batch."""
    chosen = select(losses_a, losses_b, r, clean_weight)
    return weighted_mean(losses_a, chosen.weights_a), weighted_mean(losses_b, chosen.weights_b), chosen
