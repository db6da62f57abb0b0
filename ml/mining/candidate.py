"""What mining hands to the review app: one FlagCandidate per face, face pair or identity pair."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ml.evidence import (DuplicateIdentityEvidence, Evidence, HardEvidence, LowNormEvidence, NearDuplicateEvidence,
                         NoisyEvidence, evidence_from_json)

NOISY, HARD, LOW_NORM = "noisy", "hard", "low_norm"
DUPLICATE_IDENTITY, NEAR_DUPLICATE = "duplicate_identity", "near_duplicate"
KINDS = (NOISY, HARD, LOW_NORM, DUPLICATE_IDENTITY, NEAR_DUPLICATE)
SUGGESTIONS = ("remove", "relabel", "merge", "keep")
EVIDENCE = {NOISY: NoisyEvidence, HARD: HardEvidence, LOW_NORM: LowNormEvidence,
            DUPLICATE_IDENTITY: DuplicateIdentityEvidence, NEAR_DUPLICATE: NearDuplicateEvidence}


@dataclass(kw_only=True)
class FlagCandidate:
    """Built by keyword: the fields a kind does not use stay None."""

    kind: str            # one of KINDS
    score: float         # higher = more certainly a problem; comparable within a kind
    suggestion: str      # one of SUGGESTIONS
    index: int | None = None        # dataset index of the face (None for duplicate_identity)
    other_index: int | None = None  # second face for near_duplicate
    label: int | None = None        # current label of the face / first identity for duplicate_identity
    other_label: int | None = None  # second identity for duplicate_identity (label of other_index for near_duplicate)
    target_label: int | None = None  # relabel target / merge survivor
    evidence: Evidence | None = None  # EVIDENCE[kind] (ml.mining.evidence)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        # allow_nan=False: a NaN or infinity in evidence is a bug, not something to ship as "NaN".
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_dict(cls, payload: dict) -> "FlagCandidate":
        """From to_dict()'s output (a flags.jsonl line), evidence of older versions upgraded."""
        values = dict(payload)
        values["evidence"] = evidence_from_json(EVIDENCE[values["kind"]], values.get("evidence"))
        return cls(**values)
