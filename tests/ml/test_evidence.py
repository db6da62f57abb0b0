"""The evidence contract (ml.evidence): one typed, versioned shape per kind, built by keyword,
one name per measure, the row-number keys listed once; older shapes read through one upgrade."""
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ml.evidence import (
    ROW_KEYS,
    VERSION,
    Evidence,
    HeadAngles,
    LowNormEvidence,
    NoisyEvidence,
    evidence_json,
    evidence_published,
    evidence_read,
    evidence_upgraded,
)
from ml.mining import FlagCandidate
from ml.mining.candidate import EVIDENCE, KINDS

ROOT = Path(__file__).resolve().parent.parent.parent

# Version 1's second and third names for one measure.
ALIASES = {"angle_own_centre_deg", "angle_own_prototype_centre_deg", "angle_nearest_other_centre_deg", "log_norm_z",
           "theta_y", "theta_1"}


def noisy_evidence(**extra) -> NoisyEvidence:
    return NoisyEvidence(reason="closed_set", band="noisy", theta_y_deg=84.0, theta_1_deg=51.5, margin_deg=32.5,
                         nearest_identity=1, reference_faces={"own": [0, 2], "nearest": [3]}, geometry="embedding",
                         centre="normalised mean embedding", search="exact", score_rule="rule", **extra)


def test_every_kind_has_a_versioned_contract_without_aliases():
    assert set(EVIDENCE) == set(KINDS) and all(issubclass(cls, Evidence) for cls in EVIDENCE.values())
    for cls in EVIDENCE.values():
        names = {f.name for f in dataclasses.fields(cls)}
        assert "version" in names and not names & ALIASES, cls
    assert evidence_json(noisy_evidence())["version"] == VERSION


def test_candidates_and_evidence_are_built_by_keyword_only():
    with pytest.raises(TypeError):
        FlagCandidate("hard", 1.0, 3, None, 0, None, "keep", None, None)  # the old nine-argument call
    with pytest.raises(TypeError):
        LowNormEvidence(["low norm"], "rule")
    flag = FlagCandidate(kind="hard", score=1.0, index=3, label=0, suggestion="keep")
    assert (flag.other_index, flag.other_label, flag.target_label, flag.evidence) == (None, None, None, None)


def test_row_keys_name_fields_of_the_contract():
    fields = {f.name for cls in EVIDENCE.values() for f in dataclasses.fields(cls)}
    nested = {("head", f.name) for f in dataclasses.fields(HeadAngles)}
    for path, _, id_key in ROW_KEYS:
        assert (path[0] in fields) if len(path) == 1 else (path in nested), path
        assert id_key.endswith("_id") or id_key.endswith("_ids")


def test_a_flags_file_line_round_trips_and_a_version_1_line_reads_as_this_version():
    flag = FlagCandidate(kind="noisy", score=2.0, index=5, label=0, suggestion="relabel", target_label=1,
                         evidence=noisy_evidence(head=HeadAngles(theta_y_deg=80.0, theta_1_deg=50.0, j_star=1)))
    line = json.loads(flag.to_json())
    assert FlagCandidate.from_dict(line) == flag
    old = dict(line["evidence"])
    del old["version"]
    old.update(angle_own_centre_deg=84.0, angle_own_prototype_centre_deg=84.0, angle_nearest_other_centre_deg=51.5)
    assert FlagCandidate.from_dict({**line, "evidence": old}) == flag
    # Only the aliases: the measure comes back under its one name.
    del old["theta_y_deg"], old["angle_own_centre_deg"]
    assert FlagCandidate.from_dict({**line, "evidence": old}).evidence.theta_y_deg == 84.0


def test_the_upgrade_renames_version_1_keys_and_leaves_the_stored_row_alone():
    stored = {"log_norm_z": -2.0, "norm": 2.0, "remove": "other_face", "percentile": 1.5}
    assert evidence_upgraded(stored) == {"version": VERSION, "norm_z": -2.0, "norm": 2.0, "remove": "other_index",
                                         "norm_percentile": 1.5}
    assert stored == {"log_norm_z": -2.0, "norm": 2.0, "remove": "other_face", "percentile": 1.5}
    assert evidence_upgraded({}) == {} and evidence_upgraded(None) == {}
    current = {"version": VERSION, "norm_z": -1.0}
    assert evidence_upgraded(current) == current and evidence_upgraded(current) is not current


def test_published_evidence_holds_ids_and_the_reader_drops_row_numbers_left_in_old_rows():
    data = evidence_json(noisy_evidence(head=HeadAngles(theta_y_deg=80.0, theta_1_deg=50.0, j_star=2)))
    published = evidence_published(data, face=lambda i: 100 + i, identity=lambda c: 10 + c)
    assert published["reference_face_ids"] == {"own": [100, 102], "nearest": [103]}
    assert published["nearest_identity_id"] == 11 and published["head"]["nearest_identity_id"] == 12
    assert "reference_faces" not in published and "j_star" not in published["head"]
    old = {"theta_y_deg": 80.0, "nearest_identity": 15, "nearest_identity_id": 11, "reference_faces": {"own": [3]},
           "head": {"j_star": 4, "nearest_identity_id": 12},
           "neighbour_votes": {"nearest_identity": 3, "best_other_identity_id": 99, "neighbours": 5}}
    read = evidence_read(old)
    assert read == {"version": VERSION, "theta_y_deg": 80.0, "nearest_identity_id": 11,
                    "head": {"nearest_identity_id": 12}, "neighbour_votes": {"nearest_identity": 3, "neighbours": 5}}
    assert old["head"] == {"j_star": 4, "nearest_identity_id": 12} and "nearest_identity" in old


def test_the_contract_is_light_to_import():
    # The web process reads stored evidence through it: no numpy, torch or faiss on that path.
    code = "import sys, ml.evidence; print(sorted({'numpy', 'torch', 'faiss'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
