"""MiningConfig: every threshold of the miners, None meaning "calibrate from this run"."""
from __future__ import annotations

from dataclasses import dataclass

from ml.mining.candidate import KINDS


@dataclass
class MiningConfig:
    kinds: tuple[str, ...] = KINDS

    # The RobustFace band rule on embedding angles (ml.mining.noisy), radians like the heads.
    # margin_m1: |m1| of the noisy band theta_1 < theta_y - |m1|; None: calibrated, the robust
    # upper outlier bound median + noise_k * sigma of the run's margins theta_y - theta_1.
    # margin: m of the hard band theta_1 < theta_y + m; None: 0 (nearer another identity's centre).
    margin: float | None = None
    margin_m1: float | None = None
    noise_k: float = 1.5

    # Reference faces (Deep Self-Learning prototypes) per identity.
    prototypes_per_identity: int = 3
    prototype_samples: int = 64
    seed: int = 0

    # Open-set noise: the angle (degrees) up to which a face belongs to an identity; a noisy face
    # farther than it from every centre is open-set. None: where the run's genuine angles (face to
    # own centre) and impostor angles (face to nearest other centre) are equally likely. A number
    # (75 in the Sub-center ArcFace recipe) is used as is.
    open_set_angle: float | None = None

    # Low feature norm: robust z-score of log(norm) below -k, or a fixed norm.
    low_norm_threshold: float | None = None
    low_norm_k: float = 3.5

    # Duplicate identities (ml.mining.duplicates): candidate pairs from a k-NN over identity
    # centres; a pair's score is its cross margin (how much farther its faces lie from the other
    # identity's centre than from their own, as a cosine difference). Accepted when the two are
    # each other's best candidate and the score is an upper outlier of every identity's best score,
    # the bound set so that about duplicate_expected_false of the mutual pairs would pass by
    # chance (calibrate.duplicate_score); duplicate_score fixes the bound.
    duplicate_score: float | None = None
    duplicate_expected_false: float = 1.0
    duplicate_neighbours: int = 4

    # Search (ml.mining.search): exact while base x queries stays below this, else a cell join
    # where each query probes this many k-means cells. face_neighbours: the k of the face graph.
    exact_search_max_pairs: float = 1e8
    face_neighbours: int = 10
    face_probes: int = 3
    centre_probes: int = 3
    duplicate_probes: int = 16
    batch_size: int = 32_768

    def __post_init__(self) -> None:
        # JSON settings (a Round's config) arrive with lists where tuples are meant.
        self.kinds = tuple(self.kinds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown flag kinds {sorted(unknown)}; expected some of {KINDS}")
