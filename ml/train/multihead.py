"""Concat training: one shared backbone, one classification head per source.

A dataset may hold several sources (MS-Celeb-1M beside VGGFace2) whose duplicate identities are
not merged yet: the same person is then two classes, and one softmax over both pushes that
person's faces apart from themselves. With a head per source, a class only competes with the
classes of its own source, so the two halves of a duplicated person are never negatives of each
other, and they can meet in the shared embedding, where the miner finds them (bench/sources.py
measures it).

Which head a class trains in: each class belongs to the source most of its samples carry. The
review app gives every face of a merged identity the survivor's source, so a merge moves the
absorbed faces into the survivor's head. A head needs two classes: a source with fewer is folded
into the head of the source with the most classes. With fewer than two heads left the trainer
builds the single head it always has.

The head returns *global* logits (batch x all classes) with -inf outside the sample's own head,
so that `F.cross_entropy(logits, labels)` over global labels is exactly each sample's cross-
entropy over its own head (exp(-inf) = 0; its gradient there is 0). Every loss of the trainer
(plain, Co-Mining, self-learning) and the statistics pass therefore work unchanged; a batch x
classes tensor is what a single head allocates anyway.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

log = logging.getLogger("ml.train")


def plan_heads(labels: np.ndarray, sources: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    """Head id (0..H-1) of each of the num_classes classes, or None for a single head.

    labels, sources: per training sample (sources None: one source). Classes with no sample join
    the largest head (they are only ever negatives there, as in a single head)."""
    if sources is None:
        return None
    labels, sources = np.asarray(labels, dtype=np.int64), np.asarray(sources, dtype=np.int64)
    if len(labels) != len(sources):
        raise ValueError(f"{len(sources)} sources for {len(labels)} samples")
    if len(labels) == 0 or (sources < 0).any():
        raise ValueError("every training sample needs a source id >= 0")
    values, source_ids = np.unique(sources, return_inverse=True)
    if len(values) < 2:
        return None
    # counts[c, s]: samples of class c from source s; a class follows its majority (ties: lowest).
    counts = np.bincount(labels * len(values) + source_ids, minlength=num_classes * len(values))
    counts = counts.reshape(num_classes, len(values))
    present = counts.sum(axis=1) > 0
    class_source = counts.argmax(axis=1)
    mixed = int(((counts > 0).sum(axis=1) > 1).sum())
    if mixed:
        log.info("%d classes hold samples of several sources: each trains in its majority source's head", mixed)
    per_source = np.bincount(class_source[present], minlength=len(values))
    largest = int(per_source.argmax())
    own_head = per_source >= 2
    own_head[largest] = True
    if own_head.sum() < 2:
        return None
    head_of_source = np.where(own_head, np.cumsum(own_head) - 1, -1)
    head_of_source[~own_head] = head_of_source[largest]
    heads = head_of_source[class_source]
    heads[~present] = head_of_source[largest]
    return heads.astype(np.int64)


class MultiSourceHead(nn.Module):
    """Heads[h] over the classes with class_head == h (in ascending global order), called like one
    head: forward(embeddings, global labels) -> global logits, and `last_stats` with global j_star.
    theta_1 and j_star are then the nearest other class *of the same head*."""

    def __init__(self, heads: list[nn.Module], class_head: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        class_head = torch.as_tensor(np.asarray(class_head), dtype=torch.long)
        if len(heads) < 2 or int(class_head.max()) != len(heads) - 1 or int(class_head.min()) != 0:
            raise ValueError("class_head must name every one of two or more heads")
        self.heads = nn.ModuleList(heads)
        self.num_classes = len(class_head)
        local = torch.empty_like(class_head)
        for h, head in enumerate(heads):
            members = (class_head == h).nonzero().squeeze(1)
            if getattr(head, "num_classes", len(members)) != len(members):
                raise ValueError(f"head {h} has {head.num_classes} classes, class_head gives it {len(members)}")
            local[members] = torch.arange(len(members))
            self.register_buffer(f"classes_{h}", members, persistent=False)
        # Not persistent: they follow from class_head, which the checkpoint stores on its own.
        self.register_buffer("class_head", class_head, persistent=False)
        self.register_buffer("local_label", local, persistent=False)
        # The band rule reads these from the head (ml.train.stats.band_margins): every head has the
        # same type and settings, so the first head's are all heads'.
        for name in ("m", "m1", "m2", "m3", "s"):
            value = getattr(heads[0], name, None)
            if isinstance(value, (int, float)):
                setattr(self, name, value)
        self.last_stats: dict = {}

    @property
    def m1_abs(self):
        """RobustFace's current |m1| (the first head's; they anneal alike)."""
        return self.heads[0].m1_abs

    def classes_of(self, h: int) -> torch.Tensor:
        return getattr(self, f"classes_{h}")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        head_of = self.class_head[labels]
        batch = len(labels)
        logits = None
        stats: dict = {}
        for h, head in enumerate(self.heads):
            rows = (head_of == h).nonzero().squeeze(1)
            if len(rows) == 0:
                continue  # no sample of this head: its EMAs must not see an empty batch
            local_logits = head(embeddings[rows], self.local_label[labels[rows]])
            if logits is None:
                logits = local_logits.new_full((batch, self.num_classes), float("-inf"))
            logits = logits.index_put((rows[:, None], self.classes_of(h)[None, :]), local_logits)
            self._merge_stats(stats, head.last_stats, rows, batch, h)
        if logits is None:
            raise ValueError("an empty batch")
        self.last_stats = stats
        return logits

    def _merge_stats(self, stats: dict, part: dict, rows: torch.Tensor, batch: int, h: int) -> None:
        for key, value in part.items():
            if not isinstance(value, torch.Tensor):
                stats.setdefault(key, value)
            elif value.dim() >= 1 and value.shape[0] == len(rows):
                if key == "j_star":
                    value = self.classes_of(h)[value]
                if key not in stats or not isinstance(stats[key], torch.Tensor):
                    stats[key] = value.new_zeros((batch, *value.shape[1:]))
                stats[key][rows] = value
            else:
                stats.setdefault(key, value)  # per-batch values (RobustFace's phi...): the first head's

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, heads={len(self.heads)}"
