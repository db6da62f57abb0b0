"""A flag's evidence in words a reviewer understands, and its raw numbers for those who ask.

The one place evidence becomes words: the review cards (selectors.review), the history's
one-line summary of a decision and the identity pair page's numbers (selectors.identities) all
read it here. The sentences avoid angles and cosines; raw_numbers() lists those, for a
<details> toggle.

Every function reads the stored JSON through ml.evidence.evidence_read(), which upgrades older
versions to the current contract (ml.evidence) and drops row numbers, so a row written by any
round reads the same. Old rows are upgraded when read, not rewritten by a data migration:
Decision.evidence is the audit's copy of the evidence "as it stood when the decision was taken"
and the decisions export writes it out as stored, so rewriting it would change the record; run
folders' flags.jsonl files keep the old shapes anyway (ml reads them through the same upgrade);
and the upgrade is a few renames, cheaper per page than a pass over every flag of a million-face
dataset at deploy time.

Names come out as plain text (the templates escape them). Stored JSON may still lack any key or
hold the wrong type, so nothing here trusts a key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ml.api import evidence_read

from .models import Flag


@dataclass
class Names:
    """The names a sentence may use, where the page knows them."""

    current: str = ""     # the face's identity (or the first of an identity pair)
    nearest: str = ""     # the suggested identity, else the nearest one the evidence names
    other: str = ""       # a near duplicate's second copy's identity (or a pair's second side)
    removal: str = ""     # the identity of the copy a near-duplicate removal takes out


def number(evidence: dict, *keys) -> float | None:
    """The first of keys that holds a finite number (booleans are not numbers here)."""
    for key in keys:
        value = evidence.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _share(percent: float) -> str:
    if percent >= 10:
        return f"{percent:.0f}%"
    if percent >= 1:
        return f"{percent:.1f}%"
    if percent >= 0.01:
        return f"{percent:.2f}%"
    return "0.01%"


def guess_kind(evidence: dict) -> str:
    """The kind of flag that wrote this evidence (read by evidence_read()), for rows that do not
    say (decision history)."""
    if "pixel_distance" in evidence or "exact" in evidence or "same_identity" in evidence:
        return Flag.Kind.NEAR_DUPLICATE
    if "cross_margin" in evidence or ("cosine" in evidence and "size" in evidence):
        return Flag.Kind.DUPLICATE_IDENTITY
    if "reasons" in evidence or "median_norm" in evidence or "norm_z" in evidence:
        return Flag.Kind.LOW_NORM
    if evidence.get("reason") in ("margin_band", "noisy_band_unconfirmed"):
        return Flag.Kind.HARD
    return Flag.Kind.NOISY


def evidence_lines(evidence, *, kind: str | None = None, names: Names | None = None) -> list[str]:
    """What the evidence says, most telling first, in plain sentences, each with its full stop
    (a narrow card runs them together otherwise)."""
    e = evidence_read(evidence)
    if not e:
        return []
    names = names or Names()
    kind = kind or guess_kind(e)
    if kind in (Flag.Kind.NOISY, Flag.Kind.HARD):
        lines = _face_lines(e, kind, names)
    elif kind == Flag.Kind.LOW_NORM:
        lines = _quality_lines(e)
    elif kind == Flag.Kind.NEAR_DUPLICATE:
        lines = _copy_lines(e, names)
    elif kind == Flag.Kind.DUPLICATE_IDENTITY:
        lines = _pair_lines(e, names)
    else:
        lines = []
    return [line if line.endswith((".", "?", "!")) else line + "." for line in lines]


def _face_lines(e: dict, kind: str, names: Names) -> list[str]:
    own = names.current or "its own identity"
    nearest = names.nearest or "another identity"
    theta_y, theta_1 = number(e, "theta_y_deg"), number(e, "theta_1_deg")
    gap = theta_y - theta_1 if theta_y is not None and theta_1 is not None else None
    reason = e.get("reason")
    lines = []
    if reason == "open_set":
        lines.append(f"Looks like nobody in this dataset: far from {own} and from everyone else. Remove it?")
    elif reason == "closed_set":
        lines.append(f"Looks more like {nearest} than like {own}: probably filed under the wrong name")
    elif reason == "noisy_band_unconfirmed":
        lines.append(f"Closer to {nearest} than to {own}, but {nearest}'s own faces do not back that up")
    elif reason == "margin_band":
        lines.append(f"Almost as close to {nearest} as to {own}: probably labelled right, worth a look")
    elif gap is not None and gap > 0:
        lines.append(f"Closer to {nearest} than to {own}")
    else:
        lines.append(f"Far from the other faces of {own}" if kind == Flag.Kind.NOISY
                     else f"Close to {nearest} as well as to {own}")
    if gap is not None and reason != "open_set":
        if gap > 10:
            lines.append(f"Clearly nearer {nearest}'s faces than its own")
        elif gap > 0:
            lines.append(f"A little nearer {nearest}'s faces than its own")
        elif gap > -5:
            lines.append(f"About as near {nearest}'s faces as its own")
    votes = e.get("neighbour_votes")
    if isinstance(votes, dict):
        agree, out_of = number(votes, "nearest_identity"), number(votes, "neighbours")
        if agree is not None and out_of:
            lines.append(f"{agree:.0f} of its {out_of:.0f} most similar faces are filed under {nearest}")
    return lines


def _quality_lines(e: dict) -> list[str]:
    lines = []
    percentile, z = number(e, "norm_percentile"), number(e, "norm_z")  # norm_percentile: version 1 only
    if percentile is None and z is not None:
        percentile = 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))
    reasons = [r for r in e.get("reasons") or [] if isinstance(r, str)]
    if percentile is not None:
        lines.append(f"The model sees less of a face here than in {100 - percentile:.0f}% of images "
                     f"(lowest {_share(percentile)}): blurred, tiny or not a face")
    elif number(e, "norm") is not None or "low norm" in reasons:
        lines.append("The model sees little of a face here: blurred, tiny or not a face")
    if "low sharpness" in reasons:
        lines.append("Almost no detail in the image: blank, heavily blurred or blown up from a tiny crop")
    if "no face found" in reasons:
        lines.append("The face detector found no face in this image")
    return lines


def _copy_lines(e: dict, names: Names) -> list[str]:
    lines = []
    distance = number(e, "pixel_distance")
    if e.get("exact") is True:
        lines.append("The same file twice (byte-identical)")
    elif distance is not None:
        lines.append("Practically the same pixels" if distance < 1.0
                     else "The same picture, re-saved, resized or slightly cropped")
    elif number(e, "cosine") is not None:
        lines.append("The same picture twice")
    here, other = names.current or "one identity", names.other or "another identity"
    same = e.get("same_identity")
    if same is True:
        lines.append(f"Both under {here}: one copy is enough")
    elif same is False:
        lines.append(f"Filed under {here} and under {other}: which label is right?")
    if names.removal:
        lines.append(f"Suggested: remove the copy under {names.removal}")
    elif same is False:
        lines.append("Nothing is removed unless you choose a copy")
    reason = e.get("keep_reason")
    if isinstance(reason, str) and reason:
        lines.append(reason[0].upper() + reason[1:])
    return lines


def _pair_lines(e: dict, names: Names) -> list[str]:
    a, b = names.current or "the first identity", names.other or names.nearest or "the second"
    lines = [f"The faces of {a} and {b} look like one person's"]
    size, other = number(e, "size"), number(e, "other_size")
    if size is not None and other is not None:
        lines.append(f"{a} had {size:.0f} faces and {b} {other:.0f} when the round ran")
    return lines


# -- the raw numbers ------------------------------------------------------------------------------

# Keys that are database ids, the contract's version or prose shown elsewhere: not numbers a
# reviewer weighs (evidence_read() has dropped the row numbers already).
_NOT_RAW = {"version", "reference_face_ids", "nearest_identity_id", "keep_reason", "score_rule", "reasons", "reason",
            "remove", "centre", "geometry", "search"}
_LABELS = {
    "theta_y_deg": "θy: angle to its own identity (°)", "theta_1_deg": "θ1: angle to the nearest other identity (°)",
    "margin_deg": "margin θy − θ1 (°)", "norm": "feature norm", "median_norm": "median feature norm",
    "cosine": "cosine", "pixel_distance": "pixel distance (0–255)",
}
MAX_RAW = 40


def raw_numbers(evidence) -> list[tuple[str, str]]:
    """(label, value) for every number, flag and short word of the evidence, nested ones as
    "outer · inner", at most MAX_RAW of them."""
    out: list[tuple[str, str]] = []

    def walk(prefix: str, value, depth: int):
        if len(out) >= MAX_RAW:
            return
        if isinstance(value, dict) and depth < 3:
            for key, inner in value.items():
                if depth == 0 and key in _NOT_RAW or str(key).endswith("_id") or str(key).endswith("_ids"):
                    continue
                walk(f"{prefix} · {key}" if prefix else _LABELS.get(key, str(key)), inner, depth + 1)
        elif isinstance(value, bool):
            out.append((prefix, "yes" if value else "no"))
        elif isinstance(value, int):
            out.append((prefix, str(value)))
        elif isinstance(value, float):
            out.append((prefix, f"{value:.4g}" if math.isfinite(value) else "–"))
        elif isinstance(value, str) and len(value) <= 40:
            out.append((prefix, value))

    walk("", evidence_read(evidence), 0)
    return out


# The main numbers of a one-line view: (key, short label, format).
_MAIN = (("theta_y_deg", "θy", "{:.1f}°"), ("theta_1_deg", "θ1", "{:.1f}°"), ("cosine", "cos", "{:.3f}"),
         ("norm", "norm", "{:.1f}"))


def main_numbers(evidence, *, kind: str | None = None) -> list[tuple[str, str]]:
    """(short label, value) of the evidence's main numbers, for one-line views (the history's
    summary, the identity pair page's line). A duplicate identity's cosine is between centres."""
    e = evidence_read(evidence)
    out = []
    for key, label, fmt in _MAIN:
        value = number(e, key)
        if value is not None:
            if key == "cosine" and (kind or guess_kind(e)) == Flag.Kind.DUPLICATE_IDENTITY:
                label = "centre cosine"
            out.append((label, fmt.format(value)))
    return out


def summary(evidence, *, kind: str | None = None) -> str:
    """One line for a table (the decision history): the first sentence, then the main numbers."""
    parts = evidence_lines(evidence, kind=kind)[:1]
    parts += [f"{label} {value}" for label, value in main_numbers(evidence, kind=kind)]
    return " · ".join(parts)
