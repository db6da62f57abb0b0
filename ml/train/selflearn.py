"""Deep Self-Learning: per-identity prototypes and prototype-corrected labels.

For each identity, m of its faces' normalised features give a cosine matrix S (m x m):
    S_c      the value at the top `top_fraction` (40%) of S's off-diagonal entries, in descending
             order: the (ceil(0.4 * count))-th largest;
    ρ_i      Σ_{j≠i} sign(S_ij - S_c): how many faces i is closer to than the typical pair (density);
    η_i      max S_ij over the faces j with a strictly larger ρ; for the densest faces (none larger)
             min_{j≠i} S_ij. A low η means i is far from every denser face: a separate mode;
    prototypes: among faces with η < eta_max (0.95), the p with the largest ρ (ties: lower position).
             If none qualifies (every face a near-duplicate of a denser one), the densest face alone.
The diagonal (S_ii = 1) is left out of S_c, ρ and the minimum: it would add the same constant to
every ρ and say nothing about density.
Corrected label ŷ = argmax_c of the mean cosine to identity c's prototypes. With unit features the
mean of cosines is the cosine to the mean prototype vector, so one (N x C) product gives every ŷ.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PROTOTYPES_FILE = "prototypes.json"


def density_threshold(S: torch.Tensor, top_fraction: float = 0.4) -> torch.Tensor:
    m = S.shape[0]
    off_diagonal = S[~torch.eye(m, dtype=torch.bool, device=S.device)]
    if off_diagonal.numel() == 0:
        return S.new_tensor(1.0)
    ordered = torch.sort(off_diagonal, descending=True).values
    k = max(math.ceil(top_fraction * ordered.numel()) - 1, 0)
    return ordered[k]


def density(S: torch.Tensor, top_fraction: float = 0.4) -> torch.Tensor:
    """ρ_i = Σ_{j≠i} sign(S_ij - S_c), as integers."""
    signs = torch.sign(S - density_threshold(S, top_fraction))
    signs.fill_diagonal_(0)
    return signs.sum(dim=1).long()


def separation(S: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """η_i: the largest similarity to a strictly denser face, or min_{j≠i} S_ij for the densest."""
    m = S.shape[0]
    eye = torch.eye(m, dtype=torch.bool, device=S.device)
    denser = rho[None, :] > rho[:, None]
    to_denser = S.masked_fill(~denser, float("-inf")).amax(dim=1)
    least = S.masked_fill(eye, float("inf")).amin(dim=1) if m > 1 else S.new_ones(m)
    return torch.where(denser.any(dim=1), to_denser, least)


def select_prototypes(S: torch.Tensor, p: int = 3, top_fraction: float = 0.4, eta_max: float = 0.95) -> torch.Tensor:
    """Positions (rows of S) of the prototypes, densest first."""
    rho = density(S, top_fraction)
    eta = separation(S, rho)
    # Sorting by ρ descending with a stable sort breaks ties by position.
    by_density = torch.sort(rho, descending=True, stable=True).indices
    candidates = by_density[eta[by_density] < eta_max]
    if candidates.numel() == 0:
        candidates = by_density[:1]
    return candidates[:p]


@dataclass
class Prototypes:
    """members: (num_classes, p) dataset indices of each identity's prototypes, -1 padded;
    centres: (num_classes, D) unit mean of each identity's prototype features (zero if none)."""

    members: torch.Tensor
    centres: torch.Tensor

    def as_dict(self) -> dict[int, list[int]]:
        return {c: [int(i) for i in row if i >= 0] for c, row in enumerate(self.members.tolist()) if row[0] >= 0}


def find_prototypes(
    features: torch.Tensor,
    labels: np.ndarray,
    dataset_indices: np.ndarray,
    num_classes: int,
    *,
    samples_per_identity: int = 64,
    p: int = 3,
    top_fraction: float = 0.4,
    eta_max: float = 0.95,
    rng: np.random.Generator | None = None,
) -> Prototypes:
    """Prototypes of every identity from (features, labels) of the training samples.

    features: (N, D) embeddings (normalised here); labels, dataset_indices: (N,) per row. Each
    identity with more than m rows is subsampled to m with `rng` (default: the first m)."""
    features = F.normalize(features.float(), dim=1)
    labels = np.asarray(labels)
    members = torch.full((num_classes, p), -1, dtype=torch.long)
    centres = torch.zeros((num_classes, features.shape[1]), dtype=torch.float32)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    for c in range(num_classes):
        rows = order[bounds[c]:bounds[c + 1]]
        if len(rows) == 0:
            continue
        if len(rows) > samples_per_identity and rng is not None:
            rows = np.sort(rng.choice(rows, samples_per_identity, replace=False))
        rows = rows[:samples_per_identity]
        x = features[torch.from_numpy(rows)]
        chosen = select_prototypes(x @ x.T, p, top_fraction, eta_max).cpu()
        members[c, : len(chosen)] = torch.from_numpy(np.asarray(dataset_indices)[rows[chosen.numpy()]])
        centres[c] = F.normalize(x[chosen].mean(dim=0), dim=0).cpu()
    return Prototypes(members, centres)


def corrected_labels(features: torch.Tensor, prototypes: Prototypes, chunk_size: int = 65536) -> torch.Tensor:
    """ŷ per row of features: the identity whose prototypes are most similar on average."""
    centres = prototypes.centres.to(features.device)
    missing = (prototypes.members[:, 0] < 0).to(features.device)
    out = []
    for start in range(0, features.shape[0], chunk_size):
        x = F.normalize(features[start:start + chunk_size].float(), dim=1)
        scores = (x @ centres.T).masked_fill(missing[None, :], float("-inf"))
        out.append(scores.argmax(dim=1))
    return torch.cat(out).cpu() if out else torch.empty(0, dtype=torch.long)


def self_learning_loss(
    logits_given: torch.Tensor, logits_corrected: torch.Tensor, labels: torch.Tensor,
    corrected: torch.Tensor, alpha: float,
) -> torch.Tensor:
    """Per-sample (1 - α) CE(y) + α CE(ŷ). The two logit sets differ because a margin head puts
    its margin on whichever label it is given."""
    return (1.0 - alpha) * F.cross_entropy(logits_given, labels, reduction="none") + alpha * F.cross_entropy(
        logits_corrected, corrected, reduction="none"
    )


def write_prototypes(run_dir: str | Path, members: torch.Tensor, epoch: int, class_names=None) -> Path:
    """prototypes.json: {"epoch", "class_names", "prototypes": {"<class id>": [dataset indices]}}."""
    rows = enumerate(members.tolist())
    payload = {"epoch": epoch, "class_names": class_names,
               "prototypes": {str(c): [int(i) for i in row if i >= 0] for c, row in rows if row[0] >= 0}}
    path = Path(run_dir) / PROTOTYPES_FILE
    path.write_text(json.dumps(payload) + "\n", encoding="utf-8")
    return path


def read_prototypes(run_dir: str | Path) -> dict[int, list[int]]:
    """A run's prototypes: class id -> dataset indices of its prototype faces, densest first."""
    payload = json.loads((Path(run_dir) / PROTOTYPES_FILE).read_text(encoding="utf-8"))
    return {int(c): members for c, members in payload["prototypes"].items()}
