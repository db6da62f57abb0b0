"""Sub-center ArcFace: K centres per identity, class cosine = max over its K centres.

Rows of W are grouped by class: class c owns rows c*K .. c*K + K - 1. Clean faces gather around one
dominant sub-centre per identity while mislabelled faces settle on the others, which is what the
cleaning step exploits: per identity the dominant sub-centre is the one most of its faces are
nearest to, and faces far from it (more than 75 degrees in the published recipe) are noise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ml.heads.margin import (
    MarginHead,
    angle_stats,
    autocast_off,
    check_fallback,
    clamp_cos,
    combined_margin_target,
    math_dtype,
    replace_target,
)


class SubCenterArcFace(MarginHead):
    """ArcFace margin on the max-over-K class cosine; `last_stats["subcenter"]` is each sample's
    nearest sub-centre of its labelled class."""

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        K: int = 3,
        s: float = 64.0,
        m: float = 0.5,
        fallback: str = "arcface_torch",
    ) -> None:
        super().__init__(embedding_dim, num_classes, s, centres_per_class=K)
        check_fallback(1.0, m, fallback)
        self.K, self.m, self.fallback = K, m, fallback

    def subcenter_cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Cosine to every sub-centre: (batch, num_classes, K)."""
        return self.centre_cosines(embeddings).view(-1, self.num_classes, self.K)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.subcenter_cosines(embeddings).amax(dim=2)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        with autocast_off(embeddings.device):
            per_centre = self.subcenter_cosines(embeddings)
            cos, nearest = per_centre.max(dim=2)
            logits = self.margin_logits(cos, labels)
        self.last_stats["subcenter"] = nearest.detach().gather(1, labels[:, None]).squeeze(1)
        return logits

    def margin_logits(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.last_stats = angle_stats(cos, labels)
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)
        target = combined_margin_target(cos_y, 1.0, self.m, 0.0, self.fallback)
        return self.s * replace_target(cos, labels, target)

    @torch.no_grad()
    def own_class_cosines(
        self, embeddings: torch.Tensor, labels: torch.Tensor, chunk_size: int = 8192
    ) -> torch.Tensor:
        """Cosine of each sample to the K sub-centres of its own class only: (batch, K).

        Only the labelled class's centres are touched, in chunks, so this scales to a whole
        dataset without building a (samples x all centres) matrix.
        """
        dtype = math_dtype(embeddings, self.weight)
        centres = F.normalize(self.weight.detach().to(dtype), dim=1).view(self.num_classes, self.K, -1)
        labels = labels.long().to(centres.device)
        out = []
        with autocast_off(centres.device):
            for start in range(0, embeddings.shape[0], chunk_size):
                x = F.normalize(embeddings[start:start + chunk_size].to(centres.device, dtype), dim=1)
                own = centres[labels[start:start + chunk_size]]
                out.append(torch.einsum("bkd,bd->bk", own, x))
        if not out:
            return centres.new_zeros((0, self.K))
        return clamp_cos(torch.cat(out))

    def dominant_subcenter(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per sample, the index (0..K-1) of its own class's sub-centre it is nearest to."""
        return self.own_class_cosines(embeddings, labels).argmax(dim=1)


@torch.no_grad()
def dominant_subcenter_angles(
    head: SubCenterArcFace, embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dominant sub-centre per class, angle in radians of each sample to its class's dominant one).

    The dominant sub-centre of a class is the one most of its samples are nearest to (ties go to
    the lower index); classes without samples get -1. Compare the angles with e.g.
    math.radians(75) to drop open-set noise before retraining with K = 1.
    """
    cos = head.own_class_cosines(embeddings, labels)
    labels = labels.long().to(cos.device)
    nearest = cos.argmax(dim=1)
    counts = torch.zeros(head.num_classes, head.K, dtype=torch.long, device=cos.device)
    counts.index_put_((labels, nearest), torch.ones_like(nearest), accumulate=True)
    dominant = counts.argmax(dim=1)
    dominant[counts.sum(dim=1) == 0] = -1
    cos_to_dominant = cos.gather(1, dominant[labels][:, None]).squeeze(1)
    return dominant, torch.acos(cos_to_dominant)


@torch.no_grad()
def dominant_centres(head: SubCenterArcFace, dominant: torch.Tensor) -> torch.Tensor:
    """(num_classes, embedding_dim) weights to start the K = 1 retraining from: each class's dominant
    sub-centre (centre 0 for classes marked -1)."""
    centres = head.weight.detach().view(head.num_classes, head.K, -1)
    index = dominant.clamp_min(0).to(centres.device)
    return centres[torch.arange(head.num_classes, device=centres.device), index].clone()
