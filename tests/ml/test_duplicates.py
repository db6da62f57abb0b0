"""Duplicate identities, and the cell-join search behind them at scale (near-duplicate images:
test_copies.py)."""
import json
import math

import numpy as np
import pytest

from ml.mining import MiningConfig, mine
from ml.mining.search import knn, plan_search
from tests.ml.test_mining import unit


def make_identities(seed=1, classes=60, dim=128, duplicates=((0, 1), (2, 3), (4, 5)), within=0.6):
    """Identities of 25 faces; each duplicate pair's second id is the same person (centre at
    cosine 0.9) with 10 faces."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((classes, dim)))
    for a, b in duplicates:
        centres[b] = unit(0.9 * centres[a] + math.sqrt(1 - 0.81) * unit(rng.standard_normal(dim)))
    sizes = np.full(classes, 25)
    sizes[[b for _, b in duplicates]] = 10
    labels = np.repeat(np.arange(classes), sizes)
    x = math.sqrt(within) * centres[labels] + math.sqrt(1 - within) * unit(rng.standard_normal((len(labels), dim)))
    return unit(x).astype(np.float16), labels


def plant_copies(embeddings, labels, pairs, seed=2):
    """Overwrite face b of each (a, b) with a slightly perturbed copy of face a (cosine > 0.99)."""
    rng = np.random.default_rng(seed)
    out = embeddings.astype(np.float32)
    for a, b in pairs:
        out[b] = unit(out[a] + 0.005 * rng.standard_normal(out.shape[1]))
    return out.astype(np.float16)


DUPLICATES = {(0, 1), (2, 3), (4, 5)}


def pairs_of(flags):
    return {(f.label, f.other_label) for f in flags if f.kind == "duplicate_identity"}


@pytest.mark.parametrize("exact_pairs", [1e8, 0.0], ids=["exact", "cell-join"])
def test_duplicate_identities_are_found_and_merged_into_the_larger(exact_pairs):
    embeddings, labels = make_identities()
    flags = mine(embeddings=embeddings, labels=labels,
                 config=MiningConfig(exact_search_max_pairs=exact_pairs))
    found = pairs_of(flags)
    assert found >= DUPLICATES
    assert len(found - DUPLICATES) <= 1
    for f in (f for f in flags if f.kind == "duplicate_identity" and (f.label, f.other_label) in DUPLICATES):
        assert f.suggestion == "merge" and f.index is None
        assert f.target_label == f.label  # the 25-face identity survives the 10-face one
        assert (f.evidence.size, f.evidence.other_size) == (25, 10)
        assert f.evidence.reference_faces["label"] and f.evidence.reference_faces["other_label"]
        threshold = f.evidence.thresholds["duplicate_score"]
        assert f.evidence.cross_margin >= threshold["value"]
        # Shown to reviewers: >= 0, the cross margin's distance above the null in its sigmas.
        assert f.score == pytest.approx((f.evidence.cross_margin - threshold["median"]) / threshold["sigma"],
                                        rel=1e-3) and f.score > 0
        assert f.evidence.mutual and -1.0 < f.evidence.cross_margin <= 0.05
        assert f.evidence.cosine > 0.7
        json.dumps(f.to_dict(), allow_nan=False)
    # Faces split between the two ids are explained by the merge, not flagged for relabelling.
    relabel = [f for f in flags if f.kind == "noisy" and f.suggestion == "relabel"]
    assert not [f for f in relabel if (min(f.label, f.target_label), max(f.label, f.target_label)) in DUPLICATES]


def test_duplicate_threshold_is_calibrated_unless_configured():
    embeddings, labels = make_identities()
    flags = mine(embeddings=embeddings, labels=labels, config=MiningConfig(kinds=("duplicate_identity",)))
    record = flags[0].evidence.thresholds["duplicate_score"]
    assert record["rule"].startswith("mean + z*sigma of a normal through") and record["samples"] == 60
    assert record["median"] < record["value"] < 0.0
    strict = mine(embeddings=embeddings, labels=labels,
                  config=MiningConfig(kinds=("duplicate_identity",), duplicate_score=0.5))
    assert strict == []


def test_duplicate_pairs_must_be_each_others_best_candidate():
    # However lax the bound, a pair is only a merge when each is the other's best candidate:
    # an identity is in one pair at most, and the planted half goes with its original.
    embeddings, labels = make_identities(duplicates=((0, 1),))
    flags = mine(embeddings=embeddings, labels=labels,
                 config=MiningConfig(kinds=("duplicate_identity",), duplicate_score=-2.0))
    pairs = pairs_of(flags)
    assert (0, 1) in pairs
    ends = [x for p in pairs for x in p]
    assert len(ends) == len(set(ends)), "an identity is in at most one mutual pair"


def test_cell_join_search_finds_what_exact_search_finds():
    embeddings, labels = make_identities(duplicates=())
    rows = np.arange(len(labels))
    exact = knn(embeddings, rows, embeddings, rows, 5, plan_search(len(rows), len(rows), 3, 1e12), batch_size=256)
    plan = plan_search(len(rows), len(rows), 3, 0.0)
    assert not plan.exact and plan.cells >= 4
    joined = knn(embeddings, rows, embeddings, rows, 5, plan, batch_size=256)
    assert (joined[1][:, 0] == rows).all()  # every face finds itself first
    # The true second neighbour (a face of the same identity) is found for nearly every face.
    recall = np.mean([exact[1][i, 1] in joined[1][i] for i in rows])
    assert recall > 0.9
    found = joined[1] >= 0
    assert np.all(np.diff(np.where(found, joined[0], -np.inf), axis=1) <= 1e-6)


def test_search_against_another_base_maps_positions_to_base_rows():
    rng = np.random.default_rng(3)
    base = unit(rng.standard_normal((400, 32))).astype(np.float32)
    base_rows = np.arange(0, 400, 2)                   # only even rows form the base
    queries = unit(base[base_rows[:50]] + 0.01 * rng.standard_normal((50, 32))).astype(np.float32)
    for exact_pairs in (1e12, 0.0):
        sims, positions = knn(base, base_rows, queries, np.arange(50), 1,
                              plan_search(len(base_rows), 50, 3, exact_pairs), batch_size=64)
        assert (positions[:, 0] == np.arange(50)).all() and (sims[:, 0] > 0.99).all()


def test_embeddings_alone_never_make_near_duplicate_flags():
    # Two faces at cosine > 0.99 are as likely two photos of one person as one picture twice:
    # without the images' fingerprints no near_duplicate flag is raised (issue 9, point 3).
    embeddings, labels = make_identities(duplicates=())
    embeddings = plant_copies(embeddings, labels, [(10, 11), (30, 40), (60, 400)])
    flags = mine(embeddings=embeddings, labels=labels)
    assert not [f for f in flags if f.kind == "near_duplicate"]
