"""What a review card shows (issue 11, point 5): the face's file, sizes and source, identity
sizes, the evidence in words with the numbers behind a toggle, whole images, merged-away
identities followed to their survivor; evidence published with database ids only."""
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from ml.evidence import NeighbourVotes, NoisyEvidence, VERSION, evidence_json, evidence_published
from ml.mining import FlagCandidate
from reviewapp.evidence import evidence_lines, raw_numbers, summary
from reviewapp.models import Decision, Face, Flag
from reviewapp.services.labels import identity_merge
from reviewapp.services.rounds import round_publish
from reviewapp.services.round_data import round_faces_current
from reviewapp.views_review import middle_truncated
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, jpeg_bytes
from tests.reviewapp.test_rounds import Candidate, _mining_round, people  # noqa: F401 (a fixture)
from tests.reviewapp.test_views_review import HTMX, noisy, queue_url, world  # noqa: F401 (a fixture)

HOSTILE_PATH = 'dir/<img src=x onerror=alert(1)>/"quoted"/' + "a" * 60 + "/face.jpg"


def card_html(html: str, flag_id: int) -> str:
    return re.search(rf'<article class="face-card[^"]*" id="flag-{flag_id}".*?</article>', html, re.S).group(0)


# -- the face's file ------------------------------------------------------------------------------

def test_a_card_shows_the_path_escaped_and_cut_in_the_middle_with_size_and_source(client, user, world):
    flag = noisy(world, 0.9)
    Face.objects.filter(pk=flag.face_id).update(path=HOSTILE_PATH, size=12_800)
    world.source.name = "vgg<2>"
    world.source.save()
    client.force_login(user)
    response = client.get(queue_url(world))
    assert response.status_code == 200
    card = card_html(response.content.decode(), flag.pk)
    assert "<img src=x" not in card and '"quoted"' not in card
    short = middle_truncated(HOSTILE_PATH)
    assert short.startswith("dir/") and short.endswith("/face.jpg") and "…" in short and len(short) == 44
    escaped_full = HOSTILE_PATH.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    escaped_short = short.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    assert f'<bdi class="fc-path" title="{escaped_full}">{escaped_short}</bdi> · 12.5 KB · source vgg&lt;2&gt;' in card
    # Pixel sizes are read on the flag page only, never for the sixteen cards of a queue page.
    assert " px" not in card


def test_the_flag_page_adds_the_pixel_size_from_the_image_header(client, user, world):
    flag = noisy(world, 0.9)
    face = Face.objects.get(pk=flag.face_id)
    (world.root / face.path).write_bytes(jpeg_bytes(size=(80, 60)))
    client.force_login(user)
    html = client.get(f"/flags/{flag.pk}/").content.decode()
    assert " · 80×60 px · source main" in html
    # An unreadable image still shows its card, without a pixel size.
    (world.root / face.path).write_bytes(b"not an image")
    response = client.get(f"/flags/{flag.pk}/")
    assert response.status_code == 200 and " px · " not in response.content.decode()


def test_identity_sizes_count_active_faces_of_current_and_suggested(client, user, world):
    flag = noisy(world, 0.9)  # alice: the flagged face; suggested: bob
    for _ in range(3):
        FaceFactory(identity=world.alice)
    removed = FaceFactory(identity=world.alice)
    Face.objects.filter(pk=removed.pk).update(status=Face.Status.REMOVED)
    FaceFactory(identity=world.bob)
    client.force_login(user)
    card = card_html(client.get(queue_url(world)).content.decode(), flag.pk)
    assert re.search(r'<bdi>alice</bdi> <span class="fc-size">· 4 faces</span>', card)
    assert re.search(r'<bdi>&lt;script&gt;alert\(1\)&lt;/script&gt;</bdi> <span class="fc-size">· 1 face</span>', card)


# -- the evidence ---------------------------------------------------------------------------------

def test_evidence_in_words_on_the_card_and_the_numbers_behind_a_toggle(client, user, world):
    flag = noisy(world, 0.9, evidence={"theta_y_deg": 84.0, "theta_1_deg": 51.5, "reason": "closed_set",
                                       "neighbour_votes": {"nearest_identity": 7, "neighbours": 10},
                                       "reference_face_ids": {"own": [1]}, "nearest_identity_id": world.bob.pk})
    client.force_login(user)
    card = card_html(client.get(queue_url(world)).content.decode(), flag.pk)
    words = re.search(r'<div class="fc-evidence">(.*?)<details', card, re.S).group(1)
    assert "Looks more like &lt;script&gt;alert(1)&lt;/script&gt; than like alice" in words
    assert "θ" not in words and "84" not in words  # no angles in the words
    raw = re.search(r'<details class="fc-raw"><summary>Numbers</summary><dl>(.*?)</dl></details>', card).group(1)
    assert "<dt>θy: angle to its own identity (°)</dt><dd>84</dd>" in raw  # jsonb keeps 84.0 as 84
    assert "<dt>neighbour_votes · nearest_identity</dt><dd>7</dd>" in raw
    assert "reference_face_ids" not in raw and "nearest_identity_id" not in raw  # ids are not numbers to weigh


def test_one_wording_for_cards_and_the_history_summary():
    evidence = {"theta_y_deg": 81.0, "theta_1_deg": 52.0, "reason": "open_set", "norm": 20.0}
    assert evidence_lines(evidence, kind="noisy")[0].startswith("Looks like nobody in this dataset")
    # The history knows no kind: it is read from the evidence, and the main numbers follow.
    assert summary(evidence) == ("Looks like nobody in this dataset: far from its own identity and from everyone "
                                 "else. Remove it? · θy 81.0° · θ1 52.0° · norm 20.0")
    assert summary({"exact": True, "same_identity": True}).startswith("The same file twice")
    assert summary({"reasons": ["no face found"]}) == "The face detector found no face in this image."
    assert summary({}) == "" and summary("garbage") == "" and evidence_lines(None) == []


# -- whole faces ----------------------------------------------------------------------------------

def test_thumbnails_keep_the_whole_image_and_cards_never_crop_it(client, user, world):
    flag = noisy(world, 0.9)
    face = Face.objects.get(pk=flag.face_id)
    # A wide image: a centre crop would cut its sides off; a letterbox keeps them.
    wide = Image.new("RGB", (200, 50), (0, 200, 0))
    for x in range(0, 20):
        for y in range(50):
            wide.putpixel((x, y), (255, 0, 0))
    out = io.BytesIO()
    wide.save(out, format="JPEG", quality=95)
    (world.root / face.path).write_bytes(out.getvalue())
    client.force_login(user)
    response = client.get(f"/faces/{face.pk}/thumbnail")
    assert response.status_code == 200
    thumb = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert thumb.size == (112, 112)
    left = thumb.getpixel((2, 56))
    assert left[0] > 150 and left[1] < 100  # the red left edge is still there
    assert thumb.getpixel((56, 5)) < (40, 40, 40)  # letterbox bars above and below
    css = (Path(__file__).resolve().parents[2] / "static/css/review.css").read_text()
    assert ".review-grid .face-thumb img { object-fit: contain; }" in css


# -- merged-away identities -----------------------------------------------------------------------

def test_a_suggested_identity_merged_away_shows_its_survivor_and_relabels_into_it(client, user, world):
    carol = IdentityFactory(source=world.source, name="carol")
    flag = noisy(world, 0.9)  # suggests bob
    FaceFactory(identity=carol)
    identity_merge(identity_id=world.bob.pk, into_id=carol.pk, user=user)
    client.force_login(user)
    card = card_html(client.get(queue_url(world)).content.decode(), flag.pk)
    assert ('<bdi>carol</bdi> <span class="fc-merged">(merged from <bdi>&lt;script&gt;alert(1)&lt;/script&gt;'
            '</bdi>)</span>') in card
    assert f'href="/identities/{carol.pk}/"' in card and f'href="/identities/{world.bob.pk}/"' not in card
    assert f'name="identity_id" value="{carol.pk}" checked' in card
    assert "no other faces" not in card.split('class="suggested"')[1]  # carol's faces, not the dead one's
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}, **HTMX)
    assert response.status_code == 200 and "Relabelled by <bdi>reviewer</bdi>" in response.content.decode()
    assert Face.objects.get(pk=flag.face_id).identity_id == carol.pk


def test_a_pair_whose_side_was_merged_away_merges_the_survivors(client, user, world):
    carol = IdentityFactory(source=world.source, name="carol")
    for identity in (world.alice, world.bob, carol):
        FaceFactory(identity=identity)
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob, suggested_identity=world.bob)
    identity_merge(identity_id=world.alice.pk, into_id=carol.pk, user=user)  # the side that goes
    client.force_login(user)
    card = card_html(client.get(queue_url(world, "duplicate_identity")).content.decode(), pair.pk)
    assert '<bdi>carol</bdi> <span class="fc-merged">(merged from <bdi>alice</bdi>)</span>' in card
    assert "A merge keeps <b><bdi>&lt;script&gt;alert(1)&lt;/script&gt;</bdi></b>" in card
    response = client.post(f"/flags/{pair.pk}/decide", {"action": "confirm"}, **HTMX)
    assert response.status_code == 200 and '<p class="message' not in response.content.decode()
    carol.refresh_from_db()
    world.alice.refresh_from_db()
    # The survivor of the gone side is merged, not the dead identity (that was a conflict before).
    assert carol.merged_into_id == world.bob.pk and world.alice.merged_into_id == world.bob.pk
    assert Flag.objects.get(pk=pair.pk).state == Flag.State.CONFIRMED


def test_a_pair_already_merged_into_one_says_so_and_confirming_records_it(client, user, world):
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob)
    identity_merge(identity_id=world.alice.pk, into_id=world.bob.pk, user=user)
    client.force_login(user)
    card = card_html(client.get(queue_url(world, "duplicate_identity")).content.decode(), pair.pk)
    assert "Already one identity: merged since this round." in card
    merges = Decision.objects.filter(action=Decision.Action.MERGE).count()
    response = client.post(f"/flags/{pair.pk}/decide", {"action": "confirm"}, **HTMX)
    assert response.status_code == 200 and "Done as suggested by <bdi>reviewer</bdi>" in response.content.decode()
    assert Decision.objects.filter(action=Decision.Action.MERGE).count() == merges


# -- kinds ----------------------------------------------------------------------------------------

def test_queue_tabs_follow_kind_order_with_plural_titles_and_the_card_says_its_kind(client, user, world):
    flag = noisy(world, 0.9, kind=Flag.Kind.LOW_NORM, suggestion=Flag.Suggestion.REMOVE, suggested_identity=None,
                 evidence={"norm": 2.0, "norm_percentile": 1.0})
    client.force_login(user)
    html = client.get(queue_url(world, "low_norm")).content.decode()
    tabs = re.search(r'<nav class="kind-tabs"[^>]*>(.*?)</nav>', html, re.S).group(1)
    assert re.findall(r">([^<]+)</a>", tabs) == ["Noisy", "Hard", "Low quality", "Near duplicates",
                                                 "Duplicate identities"]
    assert 'aria-current="page">Low quality</a>' in tabs
    card = card_html(html, flag.pk)
    assert '<span class="fc-kind">Low quality</span>' in card
    assert ">Mark low quality <kbd>l</kbd></button>" in card
    assert "Low Norm" not in html and "Low norm" not in html
    other = FaceFactory(identity=world.bob)
    copy = FlagFactory(round=world.round, face=Face.objects.get(pk=flag.face_id), other_face=other,
                       kind=Flag.Kind.NEAR_DUPLICATE, suggestion="keep", evidence={"same_identity": False})
    card = card_html(client.get(queue_url(world, "near_duplicate")).content.decode(), copy.pk)
    assert '<span class="fc-kind">Near duplicate</span>' in card  # one flag: the singular


# -- the decision's answer ------------------------------------------------------------------------

def test_a_decision_answers_with_the_decided_head_and_foot_only(client, user, world, django_assert_max_num_queries):
    flag = noisy(world, 0.9)
    client.force_login(user)
    # session, user, access (flag, membership); the decision's transaction; the flag's new state
    with django_assert_max_num_queries(16):
        response = client.post(f"/flags/{flag.pk}/decide", {"action": "reject"}, **HTMX)
    html = response.content.decode()
    assert re.search(rf'<article class="face-card fc-kind-noisy decided" id="flag-{flag.pk}"', html)
    # The faces, names and evidence stay as the page shows them: htmx keeps them (hx-preserve).
    assert f'<div class="fc-main" id="fc-main-{flag.pk}" hx-preserve="true"></div>' in html
    assert "alice" not in html and "/thumbnail" not in html
    assert "Kept as is by <bdi>reviewer</bdi>" in html and 'data-key="u"' in html


# -- evidence keys --------------------------------------------------------------------------------

def test_published_evidence_names_faces_and_identities_by_database_id_only(people):  # noqa: F811
    ids, faces = people
    snapshot = round_faces_current(dataset_id=ids["a"].dataset_id)  # classes a, b, c = 0, 1, 2
    round_ = _mining_round(ids["a"].dataset)
    evidence = {"theta_y_deg": 80.0, "nearest_identity": 1, "reference_faces": {"own": [1, 2], "nearest": [3, -1]},
                "neighbour_votes": {"nearest_identity": 4, "best_other_label": 2, "neighbours": 5},
                "head": {"theta_y_deg": 70.0, "j_star": np.int64(2)}}
    candidates = [Candidate("hard", 1.0, index=0, label=0, suggestion="keep", evidence=evidence)]
    assert round_publish(round_id=round_.pk, worker="w", candidates=candidates, index_to_face=snapshot.face_ids,
                         class_to_identity=snapshot.identity_ids) == 1
    published = Flag.objects.get(round=round_).evidence
    row_face = dict(enumerate(snapshot.face_ids))
    assert published == {
        "theta_y_deg": 80.0, "nearest_identity_id": ids["b"].pk,
        "reference_face_ids": {"own": [int(row_face[1]), int(row_face[2])], "nearest": [int(row_face[3])]},
        # best_other_label counts votes (ml.evidence.NeighbourVotes): not a class, so it stays as it is.
        "neighbour_votes": {"nearest_identity": 4, "best_other_label": 2, "neighbours": 5},
        "head": {"theta_y_deg": 70.0, "nearest_identity_id": ids["c"].pk},
    }
    assert candidates[0].evidence["nearest_identity"] == 1  # the mining's own record is left alone


def test_old_evidence_with_row_numbers_still_reads(client, user, world):
    # Rows published before the change carry both keys: the ids are read, the row numbers ignored.
    flag = noisy(world, 0.9, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP, suggested_identity=None,
                 evidence={"reason": "margin_band", "nearest_identity": 15, "nearest_identity_id": world.bob.pk,
                           "reference_faces": {"own": [3]}, "reference_face_ids": {"own": []}})
    client.force_login(user)
    card = card_html(client.get(queue_url(world, "hard")).content.decode(), flag.pk)
    assert "<dt>Nearest</dt>" in card and "&lt;script&gt;alert(1)&lt;/script&gt;" in card
    assert "reference_faces" not in card and "<dd>15</dd>" not in card


def _noisy_evidence(**extra) -> NoisyEvidence:
    return NoisyEvidence(reason="closed_set", band="noisy", theta_y_deg=84.0, theta_1_deg=51.5, margin_deg=32.5,
                         nearest_identity=1, reference_faces={"own": [0, 2], "nearest": [3]}, cos_own_prototypes=0.31,
                         cos_nearest_prototypes=0.55, geometry="embedding", centre="normalised mean embedding",
                         search="exact", score_rule="theta_y - theta_1 - noise_margin (degrees)", **extra)


def test_typed_evidence_is_published_versioned_with_database_ids_only(people):  # noqa: F811
    ids, faces = people
    snapshot = round_faces_current(dataset_id=ids["a"].dataset_id)  # classes a, b, c = 0, 1, 2
    round_ = _mining_round(ids["a"].dataset)
    evidence = _noisy_evidence(neighbour_votes=NeighbourVotes(nearest_identity=4, best_other_label=1, neighbours=5))
    candidate = FlagCandidate(kind="noisy", score=1.0, index=0, label=0, suggestion="relabel", target_label=1,
                              evidence=evidence)
    mined = evidence_json(evidence)
    round_publish(round_id=round_.pk, worker="w", candidates=[candidate], index_to_face=snapshot.face_ids,
                  class_to_identity=snapshot.identity_ids)
    published = Flag.objects.get(round=round_).evidence
    row_face = dict(enumerate(snapshot.face_ids))
    assert published["version"] == VERSION and published["theta_y_deg"] == 84.0
    assert published["nearest_identity_id"] == ids["b"].pk
    assert published["reference_face_ids"] == {"own": [int(row_face[0]), int(row_face[2])],
                                               "nearest": [int(row_face[3])]}
    assert published["neighbour_votes"] == {"nearest_identity": 4, "best_other_label": 1, "neighbours": 5}
    assert not {"nearest_identity", "reference_faces"} & set(published)
    assert evidence_json(candidate.evidence) == mined  # the mining's own record is left alone


# Version 1 rows as rounds before the contract stored them (no "version"; the angle to the own
# centre under three names, the norm's z-score under two, row numbers beside the ids), and the
# same measures as this version stores them: both read alike.
def _stored_pairs(face_id: int, bob: int) -> list[tuple[str, dict, dict]]:
    new_noisy = evidence_published(evidence_json(_noisy_evidence()), face=lambda i: face_id, identity=lambda c: bob)
    old_noisy = {"reason": "closed_set", "band": "noisy", "theta_y_deg": 84.0, "theta_1_deg": 51.5, "margin_deg": 32.5,
                 "nearest_identity": 1, "angle_own_centre_deg": 84.0, "angle_nearest_other_centre_deg": 51.5,
                 "angle_own_prototype_centre_deg": 84.0, "reference_faces": {"own": [0, 2], "nearest": [3]},
                 "reference_face_ids": {"own": [face_id, face_id], "nearest": [face_id]},
                 "nearest_identity_id": bob, "cos_own_prototypes": 0.31, "cos_nearest_prototypes": 0.55,
                 "geometry": "embedding", "centre": "normalised mean embedding", "search": "exact",
                 "score_rule": "theta_y - theta_1 - noise_margin (degrees)"}
    old_low = {"norm_z": -2.0, "norm": 2.05, "norm_source": "norms", "median_norm": 24.0, "log_norm_z": -2.0,
               "reasons": ["low norm"]}
    new_low = {"version": VERSION, "norm_z": -2.0, "norm": 2.05, "norm_source": "norms", "median_norm": 24.0,
               "reasons": ["low norm"]}
    oldest = {"theta_y": 81.0, "theta_1": 52.0, "norm": 21.5}  # tests.factories' default, the first shape
    current = {"version": VERSION, "theta_y_deg": 81.0, "theta_1_deg": 52.0, "norm": 21.5}
    return [("noisy", old_noisy, new_noisy), ("low_norm", old_low, new_low), ("noisy", oldest, current)]


def test_old_evidence_shapes_read_like_the_current_contract():
    for kind, old, new in _stored_pairs(face_id=7, bob=3):
        assert evidence_lines(old, kind=kind) == evidence_lines(new, kind=kind) != []
        assert summary(old) == summary(new)
        assert raw_numbers(old) == raw_numbers(new)
    assert ("θy: angle to its own identity (°)", "84") in raw_numbers(_stored_pairs(7, 3)[0][1])
    # No alias, no row number, no version among the numbers shown.
    shown = {label for _, old, _ in _stored_pairs(7, 3) for label, _ in raw_numbers(old)}
    assert not {"angle_own_centre_deg", "log_norm_z", "nearest_identity", "version", "theta_y"} & shown


def test_an_old_row_and_a_new_row_show_the_same_evidence_on_the_page(client, user, world):
    face_id = FaceFactory(identity=world.alice).pk
    kind, old, new = _stored_pairs(face_id, world.bob.pk)[0]
    flags = [noisy(world, 0.9, evidence=old), noisy(world, 0.8, evidence=new)]
    client.force_login(user)
    html = client.get(queue_url(world)).content.decode()
    shown = [re.search(r'<div class="fc-evidence">.*?</details>', card_html(html, f.pk), re.S).group(0)
             for f in flags]
    assert shown[0] == shown[1] and "Looks more like" in shown[0] and "<dd>84</dd>" in shown[0]


# -- keys ------------------------------------------------------------------------------------------

def _hint(html: str) -> str:
    return re.search(r'<p class="hint">Press <kbd>\?</kbd>.*?</p>', html, re.S).group(0)


def test_the_keys_are_named_as_the_buttons_are(client, user, world):
    noisy(world, 0.9)
    keep = FlagFactory(round=world.round, face=FaceFactory(identity=world.alice), kind=Flag.Kind.HARD,
                       suggestion=Flag.Suggestion.KEEP, suggested_identity=world.bob)
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob)
    client.force_login(user)
    html = client.get(queue_url(world)).content.decode()
    shortcuts = re.search(r'<dialog id="shortcuts".*?</dialog>', html, re.S).group(0)
    assert "<td><kbd>r</kbd></td><td>keep: leave the face as it is" in shortcuts and "reject" not in shortcuts
    assert "<td><kbd>l</kbd></td><td>mark low quality</td>" in shortcuts
    assert "<kbd>r</kbd> keep, <kbd>x</kbd> remove." in _hint(html)
    # A pair has no Remove: the duplicate-identity queue's hint does not offer x.
    pairs = client.get(queue_url(world, "duplicate_identity")).content.decode()
    assert f'id="flag-{pair.pk}"' in pairs
    assert "<kbd>x</kbd>" not in _hint(pairs) and "<kbd>r</kbd> different people." in _hint(pairs)
    # Where Keep is the suggestion, c and r both keep: its button shows both keys.
    card = card_html(client.get(queue_url(world, "hard")).content.decode(), keep.pk)
    assert 'data-key="c r">Keep <kbd>c</kbd> <kbd>r</kbd></button>' in card


def _crumbs(html: str) -> str:
    text = re.search(r'<nav class="crumbs">(.*?)</nav>', html, re.S).group(1)
    return re.sub(r"<[^>]+>", "", text)


def test_breadcrumbs_name_the_review_pages_alike(client, user, world):
    flag = noisy(world, 0.9)
    client.force_login(user)
    name = world.dataset.name
    assert _crumbs(client.get(queue_url(world)).content.decode()) == f"Datasets › {name} › Review › Noisy"
    assert _crumbs(client.get(f"/flags/{flag.pk}/").content.decode()) == \
        f"Datasets › {name} › Review › Noisy › Flag {flag.pk}"
    bulk = client.get(f"/datasets/{world.dataset.pk}/bulk/?kind=noisy").content.decode()
    assert _crumbs(bulk) == f"Datasets › {name} › Review › Noisy › Apply to all matching"
