"""Head factory: margin heads by name, with each method's published defaults."""
from __future__ import annotations

from ml.heads.adaface import AdaFace
from ml.heads.curricular import CurricularFace
from ml.heads.margin import CombinedMarginHead, MarginHead
from ml.heads.robustface import RobustFace
from ml.heads.subcenter import SubCenterArcFace

HEAD_NAMES = ("arcface", "cosface", "subcenter", "curricular", "adaface", "robustface")


def build_head(name: str, embedding_dim: int, num_classes: int, **kwargs) -> MarginHead:
    """Build a margin head; kwargs override the defaults (e.g. s=32 for a small training set).

    arcface: s=64, margin (1, 0.5, 0); cosface: s=64, margin (1, 0, 0.35); subcenter: K=3, m=0.5;
    curricular: m=0.5; adaface: m=0.4, h=0.333 (call it with (embeddings, labels[, norms]));
    robustface: m=0.5, m1=-0.15, t=0.2, mu=0.2, m1_schedule="fixed".
    """
    if name == "arcface":
        return CombinedMarginHead(embedding_dim, num_classes, **{"m1": 1.0, "m2": 0.5, "m3": 0.0, **kwargs})
    if name == "cosface":
        return CombinedMarginHead(embedding_dim, num_classes, **{"m1": 1.0, "m2": 0.0, "m3": 0.35, **kwargs})
    builders = {
        "subcenter": SubCenterArcFace,
        "curricular": CurricularFace,
        "adaface": AdaFace,
        "robustface": RobustFace,
    }
    if name not in builders:
        raise ValueError(f"unknown head {name!r}; choose from {HEAD_NAMES}")
    return builders[name](embedding_dim, num_classes, **kwargs)
