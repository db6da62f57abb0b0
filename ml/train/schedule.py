"""Learning rate per optimisation step: linear warm-up, then polynomial or cosine decay.

The rate is a pure function of the global step, so the scheduler's whole state is that step and a
resumed run continues on exactly the same curve.
"""
from __future__ import annotations

import math

import torch


def learning_rate(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    kind: str = "poly",
    power: float = 2.0,
    min_lr: float = 0.0,
) -> float:
    """The rate for optimisation step `step` (0-based).

    Warm-up rises linearly from base_lr / warmup_steps (not 0, which would waste the first step)
    to base_lr at step warmup_steps; decay then runs from base_lr to min_lr at total_steps:
    poly: min + (base - min) * (1 - p)^power (power 2 as in arcface_torch);
    cosine: min + (base - min) * (1 + cos(pi p)) / 2, p the fraction of the decay done.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / decay_steps, 1.0)
    if kind == "poly":
        factor = (1.0 - progress) ** power
    elif kind == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {kind!r}")
    return min_lr + (base_lr - min_lr) * factor


class StepSchedule:
    """Sets the optimizer's rate before each step; `state_dict` is just the step count."""

    def __init__(self, optimizer: torch.optim.Optimizer, **curve) -> None:
        self.optimizer = optimizer
        self.curve = curve
        self.step_count = 0
        self.apply()

    def current_lr(self) -> float:
        return learning_rate(self.step_count, **self.curve)

    def apply(self) -> float:
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def step(self) -> float:
        """Advance after an optimisation step and set the next step's rate."""
        self.step_count += 1
        return self.apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.apply()
