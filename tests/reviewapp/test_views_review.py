"""The review pages over HTTP: access, queue pages, decisions, conflicts, bulk and claims."""
import re
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone
from django.test.utils import CaptureQueriesContext

from reviewapp.models import Decision, Face, Flag, Membership
from reviewapp.selectors.review import PAGE_SIZE
from reviewapp.services.flags import flag_decide, flags_claim
from tests.factories import (
    FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory, jpeg_bytes,
)

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def world(db, tmp_path, user):
    source = SourceFactory(root=str(tmp_path))
    alice = IdentityFactory(source=source, name="alice")
    bob = IdentityFactory(source=source, name="<script>alert(1)</script>")
    round_ = RoundFactory(dataset=source.dataset, number=1)
    MembershipFactory(user=user, dataset=source.dataset)
    return SimpleNamespace(dataset=source.dataset, source=source, alice=alice, bob=bob, round=round_, root=tmp_path)


@pytest.fixture
def other_user(django_user_model, world):
    other = django_user_model.objects.create_user(username="second", password="pw-second-1")
    MembershipFactory(user=other, dataset=world.dataset)
    return other


def real_face(world, identity, color=(150, 110, 90)):
    face = FaceFactory(identity=identity)
    path = world.root / face.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(color=color))
    return face


def noisy(world, score, **extra):
    extra.setdefault("suggestion", Flag.Suggestion.RELABEL)
    extra.setdefault("suggested_identity", world.bob)
    return FlagFactory(round=world.round, face=real_face(world, world.alice), score=score, **extra)


def queue_url(world, kind="noisy"):
    return f"/datasets/{world.dataset.pk}/review/{kind}/"


def card_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<article class="face-card[^"]*"\s+id="flag-(\d+)"', html)]


# -- access ---------------------------------------------------------------------------------------

def test_every_review_url_requires_a_login(client, world):
    flag = noisy(world, 0.9)
    for method, url in [("get", queue_url(world)), ("get", f"/flags/{flag.pk}/"),
                        ("post", f"/flags/{flag.pk}/decide"), ("post", f"/datasets/{world.dataset.pk}/flags/bulk"),
                        ("post", queue_url(world) + "claim")]:
        response = getattr(client, method)(url, {"action": "confirm"} if method == "post" else {})
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert Flag.objects.get().state == Flag.State.OPEN


def test_a_reviewer_of_another_dataset_gets_404_everywhere(client, world, django_user_model):
    stranger = django_user_model.objects.create_user(username="stranger", password="pw-stranger-1")
    MembershipFactory(user=stranger)  # a member of some other dataset
    flag = noisy(world, 0.9)
    client.force_login(stranger)
    assert client.get(queue_url(world)).status_code == 404
    assert client.get(f"/flags/{flag.pk}/").status_code == 404
    assert client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}).status_code == 404
    assert client.post(f"/datasets/{world.dataset.pk}/flags/bulk",
                       {"action": "confirm", "ids": [flag.pk]}).status_code == 404
    assert client.post(queue_url(world) + "claim").status_code == 404
    assert Flag.objects.get().state == Flag.State.OPEN and not Flag.objects.get().claimed_by_id


def test_relabel_to_an_identity_of_another_dataset_is_404(client, user, world):
    flag = noisy(world, 0.9)
    foreign = IdentityFactory()
    client.force_login(user)
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "relabel", "identity_id": foreign.pk}, **HTMX)
    assert response.status_code == 404
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "relabel", "identity_id": "9" * 30}, **HTMX)
    assert response.status_code == 200 and "Choose the identity" in response.content.decode()
    MembershipFactory(user=user, dataset=foreign.dataset)  # even when the user may see it
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "relabel", "identity_id": foreign.pk}, **HTMX)
    assert response.status_code == 404
    assert Flag.objects.get().state == Flag.State.OPEN


def test_unknown_kind_round_and_cursor(client, user, world):
    client.force_login(user)
    assert client.get(f"/datasets/{world.dataset.pk}/review/pretty/").status_code == 404
    assert client.get(queue_url(world) + "?round=9").status_code == 404
    assert client.get(queue_url(world) + "?round=x").status_code == 404
    assert client.get(queue_url(world) + "?round=99999999999999").status_code == 404
    assert client.get(queue_url(world) + "?after=garbage!").status_code == 400


# -- the queue page -------------------------------------------------------------------------------

def test_queue_shows_cards_highest_score_first_with_boxes_and_escaped_names(client, user, world):
    flags = [noisy(world, s) for s in (0.3, 0.9, 0.6)]
    real_face(world, world.bob)
    client.force_login(user)
    response = client.get(queue_url(world))
    html = response.content.decode()
    assert response.status_code == 200 and "<!doctype html>" in html
    assert card_ids(html) == [flags[1].pk, flags[2].pk, flags[0].pk]
    assert html.count('class="face-thumb box-noisy') == 3
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'data-selectable' in html and 'id="bulk-form"' in html
    assert f'/faces/{flags[1].face_id}/thumbnail' in html
    # Batches are advisory, and the page says so where a reviewer takes one.
    assert "advisory: others skip held flags but may still decide one" in html


def test_thumbnails_of_the_cards_are_served(client, user, world):
    flag = noisy(world, 0.9)
    client.force_login(user)
    response = client.get(f"/faces/{flag.face_id}/thumbnail")
    assert response.status_code == 200 and response.content.startswith(b"\xff\xd8")


def test_htmx_gets_a_fragment_not_the_page(client, user, world):
    flag = noisy(world, 0.9)
    client.force_login(user)
    html = client.get(queue_url(world), **HTMX).content.decode()
    assert card_ids(html) == [flag.pk]
    assert "<html" not in html and "<body" not in html and 'id="bulk-form"' not in html


def test_keyset_pages_through_load_more(client, user, world):
    flags = [noisy(world, 1.0 - i / 1000) for i in range(PAGE_SIZE + 5)]
    client.force_login(user)
    first = client.get(queue_url(world)).content.decode()
    assert card_ids(first) == [f.pk for f in flags[:PAGE_SIZE]]
    next_url = re.search(r'hx-get="([^"]*after=[^"]+)"', first).group(1).replace("&amp;", "&")
    assert "round=1" in next_url and "offset" not in next_url
    second = client.get(next_url, **HTMX).content.decode()
    assert card_ids(second) == [f.pk for f in flags[PAGE_SIZE:]]
    assert "after=" not in second  # the last page has no "load more"


def test_hard_cards_get_the_yellow_box_and_pairs_link_to_the_pair_page(client, user, world):
    FlagFactory(round=world.round, face=real_face(world, world.alice), kind=Flag.Kind.HARD, suggestion="keep")
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob, evidence={"cosine": 0.6})
    client.force_login(user)
    assert 'class="face-thumb box-hard' in client.get(queue_url(world, "hard")).content.decode()
    html = client.get(queue_url(world, "duplicate_identity")).content.decode()
    assert card_ids(html) == [pair.pk]
    assert f'/identities/{world.alice.pk}/vs/{world.bob.pk}/?flag={pair.pk}' in html
    assert "pair-card" in html


def test_no_published_round_says_so(client, user, world):
    world.round.status = "training"
    world.round.save()
    client.force_login(user)
    response = client.get(queue_url(world))
    assert response.status_code == 200 and "No published round yet" in response.content.decode()


def test_queue_page_queries_do_not_grow_with_the_cards(client, user, world):
    def count(n):
        Flag.objects.all().delete()
        for i in range(n):
            noisy(world, 1.0 - i / 100)
        with CaptureQueriesContext(connection) as captured:
            assert client.get(queue_url(world)).status_code == 200
        return len(captured)

    client.force_login(user)
    few, many = count(2), count(PAGE_SIZE)
    # session, user, membership, dataset, round, own batch, queue, reference faces, holds (team view)
    assert few == many <= 9, (few, many)


# -- decisions ------------------------------------------------------------------------------------

def test_htmx_decision_swaps_in_the_decided_card(client, user, world):
    flag = noisy(world, 0.9)
    client.force_login(user)
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert card_ids(html) == [flag.pk]
    assert re.search(r'<article class="face-card fc-kind-noisy decided"', html)
    assert 'name="action"' not in html  # no buttons on a decided card
    assert "Relabelled by <bdi>reviewer</bdi>" in html
    assert 'id="messages"' in html and 'hx-swap-oob="true"' in html
    assert "<html" not in html
    assert Face.objects.get(pk=flag.face_id).identity_id == world.bob.pk


def test_second_reviewer_gets_the_current_card_and_a_message_not_an_error(client, user, other_user, world):
    flag = noisy(world, 0.9)
    flag_decide(flag_id=flag.pk, action="reject", user=other_user)
    client.force_login(user)
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert "Kept as is by <bdi>second</bdi>" in html
    messages = re.search(r'<div id="messages"[^>]*hx-swap-oob="true"[^>]*>(.*?)</div>', html, re.S).group(1)
    assert "already decided by second" in messages and "warning" in messages
    assert Decision.objects.count() == 1
    assert Face.objects.get(pk=flag.face_id).identity_id == world.alice.pk


def test_decision_without_htmx_redirects_back_with_a_message(client, user, world):
    flag = noisy(world, 0.9)
    client.force_login(user)
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "remove"}, HTTP_REFERER="http://testserver"
                           + queue_url(world), follow=True)
    assert response.redirect_chain[0][0].endswith(queue_url(world))
    assert "Decision saved." in response.content.decode()
    assert Face.objects.get(pk=flag.face_id).status == Face.Status.REMOVED


@pytest.mark.parametrize("action, said", [("remove", "Removed by"), ("low_quality", "Marked low quality by"),
                                          ("reject", "Kept as is by")])
def test_a_decided_card_says_once_what_was_done_and_by_whom(client, user, world, action, said):
    flag = noisy(world, 0.9)
    client.force_login(user)
    html = client.post(f"/flags/{flag.pk}/decide", {"action": action}, **HTMX).content.decode()
    decided = re.search(r'<p class="fc-decided">(.*?)</p>', html, re.S).group(1)
    assert f"{said} <bdi>reviewer</bdi>" in decided and ":" not in decided.split("<button")[0]


def test_relabel_through_the_form_and_a_bad_action(client, user, world):
    flag = noisy(world, 0.9)
    carol = IdentityFactory(source=world.source, name="carol")
    client.force_login(user)
    assert client.post(f"/flags/{flag.pk}/decide", {"action": "explode"}, **HTMX).status_code == 400
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "relabel", "identity_id": carol.pk}, **HTMX)
    assert "Relabelled by <bdi>reviewer</bdi>" in response.content.decode()
    assert Face.objects.get(pk=flag.face_id).identity_id == carol.pk


def test_a_refused_action_answers_with_the_open_card_and_an_error(client, user, world):
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob)
    client.force_login(user)
    response = client.post(f"/flags/{pair.pk}/decide", {"action": "remove"}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200 and 'class="message error"' in html
    assert 'name="action" value="confirm"' in html  # still open


def test_merge_from_the_queue_with_a_chosen_survivor(client, user, world):
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=world.bob)
    client.force_login(user)
    client.post(f"/flags/{pair.pk}/decide", {"action": "confirm", "survivor_id": world.alice.pk}, **HTMX)
    world.bob.refresh_from_db()
    assert world.bob.merged_into_id == world.alice.pk


# -- flag page ------------------------------------------------------------------------------------

def test_flag_card_page_shows_the_large_face_references_and_evidence(client, user, world):
    refs = [real_face(world, world.bob) for _ in range(2)]
    flag = noisy(world, 0.9, evidence={"theta_y_deg": 78.2, "theta_1_deg": 49.9, "reason": "closed_set"})
    client.force_login(user)
    response = client.get(f"/flags/{flag.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "face-thumb box-noisy large" in html
    assert "Looks more like &lt;script&gt;alert(1)&lt;/script&gt; than like alice" in html
    # The angles behind the toggle.
    assert re.search(r'<details class="fc-raw"><summary>Numbers</summary><dl>.*<dd>78.2</dd>', html)
    assert all(f"/faces/{r.pk}/thumbnail" in html for r in refs)
    assert 'name="large" value="1"' in html
    fragment = client.get(f"/flags/{flag.pk}/", **HTMX).content.decode()
    assert "<html" not in fragment and card_ids(fragment) == [flag.pk]


# -- bulk -----------------------------------------------------------------------------------------

def test_bulk_reports_decided_and_conflicted_counts_and_swaps_the_cards(client, user, other_user, world):
    flags = [noisy(world, s, suggestion="remove", suggested_identity=None) for s in (0.9, 0.8, 0.7)]
    flag_decide(flag_id=flags[1].pk, action="reject", user=other_user)
    client.force_login(user)
    response = client.post(f"/datasets/{world.dataset.pk}/flags/bulk",
                           {"action": "confirm", "ids": [f.pk for f in flags]}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-decided="2" data-conflicts="1"' in html
    assert "Decided 2 flags; 1 conflict skipped." in html
    assert sorted(card_ids(html)) == sorted(f.pk for f in flags)
    assert html.count('hx-swap-oob="outerHTML"') == 3
    assert [Face.objects.get(pk=f.face_id).status for f in flags] == ["removed", "active", "removed"]


def test_bulk_relabel_ignores_flags_of_other_datasets(client, user, world):
    flags = [noisy(world, s) for s in (0.9, 0.8)]
    foreign = FlagFactory()
    carol = IdentityFactory(source=world.source, name="carol")
    client.force_login(user)
    response = client.post(f"/datasets/{world.dataset.pk}/flags/bulk",
                           {"action": "relabel", "identity_id": carol.pk,
                            "ids": [f.pk for f in flags] + [foreign.pk]}, **HTMX)
    assert 'data-decided="2" data-conflicts="1"' in response.content.decode()
    assert Flag.objects.get(pk=foreign.pk).state == Flag.State.OPEN
    assert {Face.objects.get(pk=f.face_id).identity_id for f in flags} == {carol.pk}


def test_bulk_without_a_selection_or_target_says_so(client, user, world):
    flag = noisy(world, 0.9)
    client.force_login(user)
    url = f"/datasets/{world.dataset.pk}/flags/bulk"
    assert "Select some cards first." in client.post(url, {"action": "confirm"}, **HTMX).content.decode()
    html = client.post(url, {"action": "relabel", "ids": [flag.pk]}, **HTMX).content.decode()
    assert "Choose the identity to relabel to" in html
    assert Flag.objects.get().state == Flag.State.OPEN


# -- claims ---------------------------------------------------------------------------------------

def test_take_a_batch_hides_it_from_the_other_reviewer(client, user, other_user, world):
    flags = [noisy(world, 1.0 - i / 100) for i in range(60)]
    client.force_login(user)
    response = client.post(queue_url(world) + "claim", {"round": 1, "size": 50})
    assert response.status_code == 302 and response["Location"] == queue_url(world) + "?round=1"
    assert Flag.objects.filter(claimed_by=user).count() == 50
    mine = client.get(queue_url(world)).content.decode()
    assert "your batch: 50</span>" in mine  # the exact count held, not the page's "16+"
    client.force_login(other_user)
    theirs = card_ids(client.get(queue_url(world)).content.decode())
    assert theirs == [f.pk for f in flags[50:]]
    assert Flag.objects.filter(claimed_by=user).count() == 50


def test_taking_one_flag_says_flag_in_the_singular(client, user, world):
    noisy(world, 0.9)
    client.force_login(user)
    response = client.post(queue_url(world) + "claim", {"round": 1, "size": 50}, follow=True)
    assert "You hold 1 flag for 30 minutes." in response.content.decode()
    response = client.post(queue_url(world) + "claim", {"action": "release"}, follow=True)
    assert "Released 1 flag." in response.content.decode()


def test_release_gives_the_batch_back(client, user, world):
    [noisy(world, 0.9 - i / 100) for i in range(3)]
    flags_claim(round_id=world.round.pk, kind="noisy", user=user, size=3)
    client.force_login(user)
    response = client.post(queue_url(world) + "claim", {"action": "release"}, follow=True)
    assert "Released 3 flags." in response.content.decode()
    assert not Flag.objects.filter(claimed_by__isnull=False).exists()


def test_admin_of_the_dataset_and_staff_may_review(client, staff, world, django_user_model):
    admin = django_user_model.objects.create_user(username="adm", password="pw-adm-12345")
    MembershipFactory(user=admin, dataset=world.dataset, role=Membership.Role.ADMIN)
    flag = noisy(world, 0.9)
    for who in (admin, staff):
        client.force_login(who)
        assert card_ids(client.get(queue_url(world)).content.decode()) == [flag.pk]


def test_queue_page_and_decision_stay_within_a_few_queries(client, user, world, django_assert_max_num_queries):
    flags = [noisy(world, 1.0 - i / 100) for i in range(PAGE_SIZE + 2)]
    client.force_login(user)
    # session, user, dataset with the membership, round, holds (the team view), queue, reference
    # faces: the reviewer holds nothing, so their batch is not looked for.
    with django_assert_max_num_queries(7):
        assert len(card_ids(client.get(queue_url(world)).content.decode())) == PAGE_SIZE
    # ... and the decision: session, user, access (the flag with the membership); BEGIN, the
    # locked flag, labels.face_relabel's savepoint, face, identity, face, update, decision,
    # release; the flag's state, COMMIT.
    with django_assert_max_num_queries(14):
        client.post(f"/flags/{flags[0].pk}/decide", {"action": "confirm"}, **HTMX)
    # Holding a batch costs the one query that finds it, and the batch comes first.
    held = flags[-1]  # the lowest score: first only because it is held
    Flag.objects.filter(pk=held.pk).update(claimed_by=user, claimed_at=timezone.now())
    with django_assert_max_num_queries(8):
        assert card_ids(client.get(queue_url(world)).content.decode())[0] == held.pk


def test_decided_cards_offer_undo_of_my_own_decision_and_reload_small(client, user, other_user, world):
    mine, theirs = noisy(world, 0.9), noisy(world, 0.8)
    decision = flag_decide(flag_id=mine.pk, action="confirm", user=user)
    flag_decide(flag_id=theirs.pk, action="confirm", user=other_user)
    client.force_login(user)
    html = client.get(f"/flags/{mine.pk}/?size=card", **HTMX).content.decode()
    assert f'hx-post="/decisions/{decision.pk}/undo"' in html and 'data-key="u"' in html
    assert f'data-reload="/flags/{mine.pk}/?size=card"' in html and " large" not in html
    assert 'data-key="u"' not in client.get(f"/flags/{theirs.pk}/?size=card", **HTMX).content.decode()
    assert client.post(f"/decisions/{decision.pk}/undo", **HTMX).status_code == 200
    reopened = client.get(f"/flags/{mine.pk}/?size=card", **HTMX).content.decode()
    assert 'name="action" value="confirm"' in reopened
    assert Face.objects.get(pk=mine.face_id).identity_id == world.alice.pk


# -- near duplicates ------------------------------------------------------------------------------

def copy_pair(world, other_identity, remove, suggestion=Flag.Suggestion.REMOVE):
    face, other = real_face(world, world.alice), real_face(world, other_identity)
    flag = FlagFactory(round=world.round, face=face, other_face=other, kind=Flag.Kind.NEAR_DUPLICATE, score=0.99,
                       suggestion=suggestion,
                       evidence={"exact": False, "pixel_distance": 0.42, "hamming": 2, "remove": remove,
                                 "same_identity": other_identity == world.alice,
                                 "thresholds": {"pixel_distance": {"value": 2.0}}})
    return flag, face, other


def test_a_copy_across_identities_shows_both_faces_and_keeps_both_by_default(client, user, world):
    flag, face, other = copy_pair(world, world.bob, None, suggestion=Flag.Suggestion.KEEP)
    client.force_login(user)
    html = client.get(queue_url(world, "near_duplicate")).content.decode()
    assert f"/faces/{face.pk}/thumbnail" in html and f"/faces/{other.pk}/thumbnail" in html
    assert "Practically the same pixels" in html and "which label is right?" in html
    assert "<dt>pixel distance (0–255)</dt><dd>0.42</dd>" in html
    assert "Keep <kbd>c</kbd>" in html and "alice" in html and "&lt;script&gt;" in html
    card = re.search(r'<article class="face-card.*?</article>', html, re.S).group(0)
    assert card.count('name="remove_face"') == 2 and 'value="remove"' not in card

    client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}, **HTMX)
    assert set(Face.objects.filter(pk__in=[face.pk, other.pk]).values_list("status", flat=True)) == {"active"}


def test_the_reviewer_picks_which_copy_to_remove(client, user, world):
    flag, face, other = copy_pair(world, world.bob, "other_index")
    client.force_login(user)
    html = client.get(f"/flags/{flag.pk}/").content.decode()
    assert "Suggested: remove the copy under &lt;script&gt;" in html
    response = client.post(f"/flags/{flag.pk}/decide", {"remove_face": face.pk}, **HTMX)
    assert response.status_code == 200
    assert Face.objects.get(pk=face.pk).status == "removed" and Face.objects.get(pk=other.pk).status == "active"
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OVERRIDDEN


def test_remove_duplicate_of_one_identity_removes_the_named_copy(client, user, world):
    flag, face, other = copy_pair(world, world.alice, "other_index")
    client.force_login(user)
    html = client.get(queue_url(world, "near_duplicate")).content.decode()
    assert "Remove duplicate <kbd>c</kbd>" in html and "one copy is enough" in html
    client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}, **HTMX)
    assert Face.objects.get(pk=other.pk).status == "removed" and Face.objects.get(pk=face.pk).status == "active"


def test_a_copy_of_another_dataset_cannot_be_removed_through_the_pair(client, user, world):
    flag, face, other = copy_pair(world, world.bob, None, suggestion=Flag.Suggestion.KEEP)
    stranger = FaceFactory()
    client.force_login(user)
    html = client.post(f"/flags/{flag.pk}/decide", {"remove_face": stranger.pk}, **HTMX).content.decode()
    assert "one of the two copies" in html
    assert Face.objects.get(pk=stranger.pk).status == "active"
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
