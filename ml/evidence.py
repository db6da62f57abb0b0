"""The evidence each kind of flag carries: one dataclass per kind, versioned, built by keyword.

Mining builds it (FlagCandidate.evidence, ml.mining), flags.jsonl and the app's Flag.evidence
hold it as JSON (evidence_json(): every field, None where not measured), the app turns it into
words (reviewapp/evidence.py). A field's name is its JSON key, and each measure has one name
(version 1, payloads without a "version", stored the angle to the own centre under three names
and the norm's z-score under two); evidence_upgraded() reads those, so old flags.jsonl files and
old database rows read like new ones.

Row numbers. A few fields name faces by dataset index and identities by class index of this
round (ROW_KEYS, the one list of them). Those numbers mean nothing once the round is over (the
next round numbers its rows differently), so the app's publisher swaps each for the key of
database ids named beside it (evidence_published()), and the app's reader drops any it finds
(evidence_read()). Nothing else changes between flags.jsonl and Flag.evidence.

Here rather than in ml.mining: the web process reads stored evidence through this module, and
importing ml.mining loads torch and faiss. Standard library only.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Callable

VERSION = 2

FACES, IDENTITY = "face rows", "identity row"
# (path in the payload, what its numbers are, the key of database ids the publisher writes instead)
ROW_KEYS = (
    (("reference_faces",), FACES, "reference_face_ids"),          # {side: [dataset index]}
    (("nearest_identity",), IDENTITY, "nearest_identity_id"),      # class index of j*
    (("head", "j_star"), IDENTITY, "nearest_identity_id"),         # the head's j*, a class index
)


@dataclass(kw_only=True)
class Evidence:
    """What every kind carries besides its own measures."""

    version: int = VERSION
    thresholds: dict = field(default_factory=dict)  # calibrate records by name: value, unit, reason
    embedding_mean_norm: float | None = None  # the mean norm the embeddings were centred with (mine_space)
    judged_by: str | None = None  # cross-fitted rounds: the fold model that never trained on the face


@dataclass(kw_only=True)
class NeighbourVotes:
    """Votes among a face's nearest faces (ml.mining.noisy.neighbour_votes): counts, not rows."""

    nearest_identity: int   # how many are filed under the nearest other identity j*
    best_other_label: int   # the most any other identity has (a count: version 1's publisher read it as a class)
    neighbours: int         # how many nearest faces were asked


@dataclass(kw_only=True)
class HeadAngles:
    """The training head's own angles (stats.npz), where taken under the face's current label."""

    theta_y_deg: float | None
    theta_1_deg: float | None
    j_star: int  # row number: the head's nearest other class (ROW_KEYS)


@dataclass(kw_only=True)
class FaceAngleEvidence(Evidence):
    """A face against the identity centres (ml.mining.noisy)."""

    reason: str  # open_set, closed_set, noisy_band_unconfirmed or margin_band
    band: str | None = None  # noisy or hard; None for open_set
    theta_y_deg: float | None  # angle to its own identity's centre, the face left out
    theta_1_deg: float | None  # angle to the nearest other identity's centre
    margin_deg: float | None  # theta_y_deg - theta_1_deg
    nearest_identity: int | None  # row number: j*'s class index (ROW_KEYS)
    reference_faces: dict  # row numbers: {"own": [dataset index], "nearest": [...]} (ROW_KEYS)
    cos_own_prototypes: float | None = None  # mean cosine to its own identity's reference faces
    cos_nearest_prototypes: float | None = None  # ... and to j*'s
    neighbour_votes: NeighbourVotes | None = None
    head: HeadAngles | None = None
    geometry: str
    centre: str
    search: str
    score_rule: str


@dataclass(kw_only=True)
class NoisyEvidence(FaceAngleEvidence):
    """Open-set (remove) and closed-set (relabel to j*) noisy faces."""


@dataclass(kw_only=True)
class HardEvidence(FaceAngleEvidence):
    """Faces in the margin band, or beyond it without the reference faces' confirmation (keep)."""


@dataclass(kw_only=True)
class LowNormEvidence(Evidence):
    """Low quality (ml.mining.quality): each signal's value and robust z-score, where measured."""

    reasons: list  # "low norm", "low sharpness", "no face found"
    norm: float | None = None
    norm_source: str | None = None
    median_norm: float | None = None
    norm_z: float | None = None  # robust z-score of log(norm); negative = below the median
    sharpness: float | None = None
    sharpness_z: float | None = None
    face_found_share: float | None = None  # share of the images the face detector found a face in
    score_rule: str


@dataclass(kw_only=True)
class NearDuplicateEvidence(Evidence):
    """Two copies of one picture (ml.mining.copies); index and other_index are the flag's faces."""

    method: str
    exact: bool  # byte-identical
    hamming: int  # perceptual hash distance (bits)
    pixel_distance: float  # /255, thumbnails
    same_identity: bool
    size: list  # [width, height] of the index copy
    other_size: list  # ... of the other_index copy
    group_size: int
    remove: str | None  # the copy the suggestion takes out: "other_index", or None (the reviewer's choice)
    keep_reason: str
    identity_cosine: dict | None = None  # {"index": c, "other_index": c}: each copy's own-centre cosine


@dataclass(kw_only=True)
class DuplicateIdentityEvidence(Evidence):
    """Two identities that look like one person (ml.mining.duplicates)."""

    cross_margin: float
    cosine: float  # between the two centres
    size: int
    other_size: int
    mean_own_cosine: float
    other_mean_own_cosine: float
    mutual: bool
    reference_faces: dict  # row numbers: {"label": [dataset index], "other_label": [...]} (ROW_KEYS)
    centre: str
    score_rule: str
    search: str


_NESTED = {"neighbour_votes": NeighbourVotes, "head": HeadAngles}


def evidence_json(evidence) -> dict:
    """The JSON object of the evidence: a fresh dict (a plain dict, as tests' stand-ins pass,
    is copied; None is empty)."""
    if isinstance(evidence, Evidence):
        return asdict(evidence)
    return dict(evidence) if isinstance(evidence, dict) else {}


def evidence_from_json(cls: type[Evidence], data: dict | None) -> Evidence | None:
    """The evidence from its JSON (flags.jsonl), older versions upgraded; keys this version does
    not know are left out."""
    if not data:
        return None
    data = evidence_upgraded(data)
    known = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in known}
    for key, inner in _NESTED.items():
        if key in known and isinstance(values.get(key), dict):
            names = {f.name for f in dataclasses.fields(inner)}
            values[key] = inner(**{k: v for k, v in values[key].items() if k in names})
    return cls(**values)


# -- older versions -------------------------------------------------------------------------------

# Version 1's names for this version's measures (several were aliases stored side by side).
_RENAMED = {
    "theta_y": "theta_y_deg", "theta_1": "theta_1_deg",
    "angle_own_centre_deg": "theta_y_deg", "angle_own_prototype_centre_deg": "theta_y_deg",
    "angle_nearest_other_centre_deg": "theta_1_deg", "log_norm_z": "norm_z",
    "percentile": "norm_percentile",  # never written by this version; early rows and bench/web.py's seed have it
}
# Version 1 named the copy to remove by the app's field names as well as by the candidate's.
_REMOVE = {"other_face": "other_index", "face": "index"}


def evidence_upgraded(data: dict) -> dict:
    """A payload in this version's names: version 1's renamed (where both names are present the
    current one wins; they held the same value), key order kept. Readers of stored evidence
    (flags.jsonl, Flag.evidence, Decision.evidence) go through this, so that old rows need no
    rewrite (see reviewapp/evidence.py for why no migration)."""
    if not isinstance(data, dict) or not data:
        return {}
    version = data.get("version", 1)
    if not isinstance(version, int) or version >= VERSION:
        return dict(data)
    out = {"version": VERSION}
    for key, value in data.items():
        if key == "version":
            continue
        new = _RENAMED.get(key, key)
        if new != key and new in data:
            continue
        out[new] = value
    if isinstance(out.get("remove"), str):
        out["remove"] = _REMOVE.get(out["remove"], out["remove"])
    return out


# -- row numbers ----------------------------------------------------------------------------------

def _is_row(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _holder(data: dict, outer: tuple) -> dict | None:
    for step in outer:
        data = data.get(step) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else None


def evidence_published(data: dict, *, face: Callable[[int], int | None],
                       identity: Callable[[int], int | None]) -> dict:
    """The JSON as the app stores it (changed in place, and returned): every ROW_KEYS number
    replaced by its database id (face(dataset index), identity(class index)) under the id key;
    numbers that name no row (negative, not integers) are dropped."""
    for path, what, id_key in ROW_KEYS:
        holder = _holder(data, path[:-1])
        if holder is None or path[-1] not in holder:
            continue
        value = holder.pop(path[-1])
        if what == FACES and isinstance(value, dict):
            holder[id_key] = {side: [face(i) for i in rows if _is_row(i)]
                              for side, rows in value.items() if isinstance(rows, list)}
        elif what == IDENTITY and _is_row(value):
            holder[id_key] = identity(value)
    return data


# Version 1's publisher read neighbour_votes.best_other_label (a count) as a class index and
# stored an identity id for it: a number that names nobody.
_MISREAD = (("neighbour_votes", "best_other_identity_id"),)


def evidence_read(data) -> dict:
    """Stored evidence (Flag.evidence, Decision.evidence) as this version's JSON with database
    ids only: upgraded, less any row numbers left in it (rows the app published before
    evidence_published() existed carry them beside the ids) and less version 1's misread ids
    (_MISREAD). A new dict; the one given is left alone."""
    out = evidence_upgraded(data)
    for path in [p for p, _, _ in ROW_KEYS] + list(_MISREAD):
        if len(path) == 1:
            out.pop(path[0], None)
        elif isinstance(out.get(path[0]), dict) and path[1] in out[path[0]]:
            out[path[0]] = {k: v for k, v in out[path[0]].items() if k != path[1]}
    return out
