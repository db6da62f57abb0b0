"""MiningConfig: every threshold of the miners, None meaning "calibrate from this run"."""
from __future__ import annotations

from dataclasses import dataclass

from ml.mining.candidate import KINDS


@dataclass
class MiningConfig:
    kinds: tuple[str, ...] = KINDS

    # RobustFace band rule, in radians like the heads. None: the run's own (stats.npz "margins"),
    # else 0.5 and 0.15. The same values band embedding-only angles.
    margin: float | None = None
    margin_m1: float | None = None

    # Reference faces (Deep Self-Learning prototypes) per identity.
    prototypes_per_identity: int = 3
    prototype_samples: int = 64
    seed: int = 0

    # Open-set noise: angle (degrees) to the own identity's prototype centre and to every other.
    # None: median + k * robust sigma of the run's own-centre angles, at least min_gap above the
    # median. A number (75 in the Sub-center ArcFace recipe) is used as is.
    open_set_angle: float | None = None
    open_set_k: float = 4.0
    open_set_min_gap: float = 15.0

    # Low feature norm: robust z-score of log(norm) below -k, or a fixed norm.
    low_norm_threshold: float | None = None
    low_norm_k: float = 3.5

    # Duplicate identities: cosine of identity centres (normalised mean embeddings); None:
    # median + k * robust sigma of every identity's top-1 neighbour cosine, at least min_cosine.
    duplicate_cosine: float | None = None
    duplicate_k: float = 6.0
    duplicate_min_cosine: float = 0.3
    duplicate_neighbours: int = 4

    # Near-duplicate images: face cosine; None: median + k * sigma of faces' top-1 neighbour
    # cosine, clipped into bounds (so copies at 0.98 are always caught).
    near_duplicate_cosine: float | None = None
    near_duplicate_k: float = 6.0
    near_duplicate_bounds: tuple[float, float] = (0.95, 0.98)

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
        self.near_duplicate_bounds = tuple(self.near_duplicate_bounds)
        unknown = set(self.kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown flag kinds {sorted(unknown)}; expected some of {KINDS}")
        low, high = self.near_duplicate_bounds
        if not -1.0 <= low <= high <= 1.0:
            raise ValueError("near_duplicate_bounds must satisfy -1 <= low <= high <= 1")
