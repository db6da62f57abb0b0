"""What mining hands to the review app: one FlagCandidate per face, face pair or identity pair."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

NOISY, HARD, LOW_NORM = "noisy", "hard", "low_norm"
DUPLICATE_IDENTITY, NEAR_DUPLICATE = "duplicate_identity", "near_duplicate"
KINDS = (NOISY, HARD, LOW_NORM, DUPLICATE_IDENTITY, NEAR_DUPLICATE)
SUGGESTIONS = ("remove", "relabel", "merge", "keep")


@dataclass
class FlagCandidate:
    kind: str            # one of KINDS
    score: float         # higher = more certainly a problem; comparable within a kind
    index: int | None    # dataset index of the face (None for duplicate_identity)
    other_index: int | None  # second face for near_duplicate
    label: int | None    # current label of the face / first identity for duplicate_identity
    other_label: int | None  # second identity for duplicate_identity (label of other_index for near_duplicate)
    suggestion: str      # one of SUGGESTIONS
    target_label: int | None  # relabel target / merge survivor
    evidence: dict = field(default_factory=dict)  # JSON-serialisable

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        # allow_nan=False: a NaN or infinity in evidence is a bug, not something to ship as "NaN".
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, payload: dict) -> "FlagCandidate":
        return cls(**payload)
