"""Margin classification heads: class centres W, scaled logits for cross-entropy, angle statistics."""
from ml.heads.adaface import AdaFace
from ml.heads.curricular import CurricularFace
from ml.heads.factory import HEAD_NAMES, build_head
from ml.heads.margin import CombinedMarginHead, MarginHead
from ml.heads.robustface import EASY, HARD, NOISY, RobustFace
from ml.heads.subcenter import SubCenterArcFace, dominant_centres, dominant_subcenter_angles

__all__ = [
    "EASY",
    "HARD",
    "HEAD_NAMES",
    "NOISY",
    "AdaFace",
    "CombinedMarginHead",
    "CurricularFace",
    "MarginHead",
    "RobustFace",
    "SubCenterArcFace",
    "build_head",
    "dominant_centres",
    "dominant_subcenter_angles",
]
