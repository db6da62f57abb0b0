"""Double review: sampling, blind answers, agreement and Cohen's kappa, resolving disagreements;
through the services and over HTTP (who may set the share, answer, and resolve)."""
import re
from types import SimpleNamespace

import pytest

from reviewapp.models import Dataset, Decision, Face, Flag, Membership, SecondReview
from reviewapp.selectors import team as team_selectors
from reviewapp.services import double_review
from reviewapp.services.double_review import (
    DATA_CHANGED, NotYourSecondLook, dataset_double_review_set, is_sampled, second_review_answer,
    second_review_resolve,
)
from reviewapp.services.flags import flag_decide
from reviewapp.services.labels import LabelConflict, face_relabel
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def team(db, django_user_model):
    source = SourceFactory()
    dataset = source.dataset
    people = SimpleNamespace(**{n: IdentityFactory(source=source, name=n) for n in ("ada", "grace", "alan")})
    users = SimpleNamespace(**{n: django_user_model.objects.create_user(username=n, password=f"pw-{n}-123")
                               for n in ("ann", "bob", "cy", "stranger")})
    MembershipFactory(user=users.ann, dataset=dataset, role=Membership.Role.ADMIN)
    MembershipFactory(user=users.bob, dataset=dataset)
    MembershipFactory(user=users.cy, dataset=dataset)
    MembershipFactory(user=users.stranger)  # another dataset's reviewer
    round_ = RoundFactory(dataset=dataset, number=1)
    return SimpleNamespace(dataset=dataset, people=people, users=users, round=round_)


def relabel_flag(team, **extra):
    """A noisy face under ada that the model says is grace."""
    extra.setdefault("suggestion", Flag.Suggestion.RELABEL)
    extra.setdefault("suggested_identity", team.people.grace)
    return FlagFactory(round=team.round, face=FaceFactory(identity=team.people.ada), **extra)


def sampled_flag(team, share=0.5, **extra):
    """A new flag whose id the hash samples at `share` (ids are consecutive: skip unsampled ones,
    deleted with their faces so that the identities' face counts do not depend on how many)."""
    for _ in range(200):
        flag = relabel_flag(team, **extra)
        if is_sampled(flag.pk, share):
            return flag
        face = flag.face
        flag.delete()
        face.delete()
    raise AssertionError("no sampled flag id in 200 tries")


def share(team, value):
    Dataset.objects.filter(pk=team.dataset.pk).update(double_review_share=value)


# -- sampling -------------------------------------------------------------------------------------

def test_sampling_is_a_pure_function_of_the_flag_id():
    ids = range(1, 20001)
    at_10 = {i for i in ids if is_sampled(i, 0.10)}
    assert at_10 == {i for i in ids if is_sampled(i, 0.10)}  # the same every time
    assert 1800 < len(at_10) < 2200  # about the share
    assert at_10 <= {i for i in ids if is_sampled(i, 0.25)}  # a larger share samples a superset
    assert not any(is_sampled(i, 0.0) for i in ids)


def test_a_decision_on_a_sampled_flag_is_asked_again_and_an_unsampled_one_not(team):
    share(team, 0.5)
    flag = sampled_flag(team)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=team.users.bob)
    review = SecondReview.objects.get(flag=flag)
    assert (review.first_decision, review.first_reviewer, review.first_answer, review.state) == (
        decision, team.users.bob, f"relabel:{team.people.grace.pk}", "pending")
    other = relabel_flag(team)
    while is_sampled(other.pk, 0.5):
        other = relabel_flag(team)
    flag_decide(flag_id=other.pk, action="confirm", user=team.users.bob)
    assert not SecondReview.objects.filter(flag=other).exists()


def test_without_a_share_nothing_is_sampled(team):
    flag = sampled_flag(team, share=0.5)
    flag_decide(flag_id=flag.pk, action="reject", user=team.users.bob)
    assert SecondReview.objects.count() == 0


def test_setting_the_share_samples_flags_decided_before_and_is_audited(team):
    flags = [relabel_flag(team) for _ in range(40)]
    for flag in flags:
        flag_decide(flag_id=flag.pk, action="reject", user=team.users.bob)
    sampled = dataset_double_review_set(dataset=team.dataset, share=0.25, by=team.users.ann)
    expected = {f.pk for f in flags if is_sampled(f.pk, 0.25)}
    assert sampled == len(expected) and set(SecondReview.objects.values_list("flag_id", flat=True)) == expected
    assert set(SecondReview.objects.values_list("first_answer", flat=True)) == {"keep"}
    row = Decision.objects.get(action=Decision.Action.SETTING)
    assert (row.user, row.before, row.after) == (team.users.ann, {"setting": "double_review_share", "value": 0.0},
                                                 {"setting": "double_review_share", "value": 0.25})
    # Setting it again samples only what was not sampled yet, and an unchanged value is not audited.
    assert dataset_double_review_set(dataset=team.dataset, share=0.25, by=team.users.ann) == 0
    assert Decision.objects.filter(action=Decision.Action.SETTING).count() == 1
    with pytest.raises(ValueError, match="between 0 and 50%"):
        dataset_double_review_set(dataset=team.dataset, share=0.6)


def test_the_backfill_is_bounded(team, monkeypatch):
    monkeypatch.setattr(double_review, "BACKFILL_LIMIT", 3)
    for _ in range(30):
        flag_decide(flag_id=relabel_flag(team).pk, action="reject", user=team.users.bob)
    assert dataset_double_review_set(dataset=team.dataset, share=0.5) == 3


# -- verdicts -------------------------------------------------------------------------------------

def test_verdicts_compare_what_would_happen_to_the_data(team):
    remove = relabel_flag(team, suggestion=Flag.Suggestion.REMOVE, suggested_identity=None)
    verdict = double_review.answer_verdict
    d = team.dataset.pk
    assert verdict(remove, action="confirm", dataset_id=d) == verdict(remove, action="remove", dataset_id=d) == "remove"
    assert verdict(remove, action="low_quality", dataset_id=d) == "low_quality"
    relabel = relabel_flag(team)
    grace = f"relabel:{team.people.grace.pk}"
    assert verdict(relabel, action="confirm", dataset_id=d) == grace
    assert verdict(relabel, action="relabel", identity_id=team.people.grace.pk, dataset_id=d) == grace
    assert verdict(relabel, action="reject", dataset_id=d) == "keep"
    # Relabelling to the label it already had keeps it.
    assert verdict(relabel, action="relabel", identity_id=team.people.ada.pk, dataset_id=d,
                   before_identity=team.people.ada.pk) == "keep"
    keep = relabel_flag(team, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP)
    assert verdict(keep, action="confirm", dataset_id=d) == "keep"
    with pytest.raises(ValueError, match="Choose the identity to relabel to"):
        verdict(relabel, action="relabel", dataset_id=d)
    foreign = IdentityFactory()
    with pytest.raises(ValueError, match="The target identity is not in this dataset"):
        verdict(relabel, action="relabel", identity_id=foreign.pk, dataset_id=d)


def test_a_near_duplicate_verdict_names_the_copy_it_removes(team):
    face, copy = FaceFactory(identity=team.people.ada), FaceFactory(identity=team.people.grace)
    flag = FlagFactory(round=team.round, face=face, other_face=copy, kind=Flag.Kind.NEAR_DUPLICATE,
                       suggestion=Flag.Suggestion.REMOVE, evidence={"remove": "other_index", "same_identity": False})
    verdict = double_review.answer_verdict
    d = team.dataset.pk
    assert verdict(flag, action="confirm", dataset_id=d) == f"remove:{copy.pk}"
    assert verdict(flag, action="remove", remove_face_id=face.pk, dataset_id=d) == f"remove:{face.pk}"
    with pytest.raises(ValueError, match="Choose one of the two copies to remove"):
        verdict(flag, action="remove", remove_face_id=FaceFactory().pk, dataset_id=d)
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=team.users.bob)
    assert double_review.decision_verdict(decision, flag) == f"remove:{copy.pk}"
    assert double_review.verdict_action(f"remove:{face.pk}") == {"action": "remove", "remove_face_id": face.pk}


# -- answering ------------------------------------------------------------------------------------

@pytest.fixture
def pending(team):
    """bob relabelled a sampled flag's face from ada to grace; it waits for a second look."""
    share(team, 0.5)
    flag = sampled_flag(team)
    flag_decide(flag_id=flag.pk, action="confirm", user=team.users.bob)
    return SecondReview.objects.get(flag=flag)


def test_a_blind_answer_writes_no_label_and_no_decision(team, pending):
    face = Face.objects.get(pk=pending.flag.face_id)
    decisions = Decision.objects.count()
    review = second_review_answer(review_id=pending.pk, user=team.users.cy, action="reject")
    assert (review.state, review.answer, review.reviewer) == ("disagreed", "keep", team.users.cy)
    assert Decision.objects.count() == decisions
    assert Face.objects.get(pk=face.pk).identity_id == team.people.grace.pk  # still as bob left it
    assert Flag.objects.get(pk=pending.flag_id).state == Flag.State.CONFIRMED


def test_an_agreeing_answer(team, pending):
    review = second_review_answer(review_id=pending.pk, user=team.users.cy, action="relabel",
                                  identity_id=team.people.grace.pk)
    assert (review.state, review.answer) == ("agreed", f"relabel:{team.people.grace.pk}")
    with pytest.raises(LabelConflict, match="^The second look agreed with the first decision: nothing to resolve.$"):
        second_review_resolve(review_id=pending.pk, user=team.users.ann, keep="second")


def test_a_pending_second_look_has_nothing_to_resolve(team, pending):
    with pytest.raises(LabelConflict, match="^Nobody has given this flag its second look yet: nothing to resolve.$"):
        second_review_resolve(review_id=pending.pk, user=team.users.ann, keep="first")


def test_the_first_reviewer_cannot_answer_and_a_second_answer_conflicts(team, pending):
    with pytest.raises(NotYourSecondLook, match="You gave the first answer to this flag"):
        second_review_answer(review_id=pending.pk, user=team.users.bob, action="reject")
    second_review_answer(review_id=pending.pk, user=team.users.cy, action="reject")
    with pytest.raises(LabelConflict, match="^Another reviewer already gave this flag its second look.$"):
        second_review_answer(review_id=pending.pk, user=team.users.ann, action="confirm")


def test_the_blind_queue_shows_the_label_from_before_the_first_decision(team, pending):
    assert team_selectors.second_look_queue(dataset_id=team.dataset.pk, user=team.users.bob) == []
    [look] = team_selectors.second_look_queue(dataset_id=team.dataset.pk, user=team.users.cy)
    assert look.review == pending
    assert look.card.is_open and look.card.current == team.people.ada and look.card.last_decision is None
    # The face counts too are as before: ada still had the face, grace did not.
    assert look.card.sizes == {team.people.ada.pk: 1, team.people.grace.pk: 0}
    # Nothing was saved by showing it.
    assert Flag.objects.get(pk=pending.flag_id).state == Flag.State.CONFIRMED
    assert Face.objects.get(pk=pending.flag.face_id).identity_id == team.people.grace.pk


# -- agreement ------------------------------------------------------------------------------------

def test_cohen_kappa_on_a_hand_made_example():
    # 10 items: both say keep 4 times, both remove 3 times; 2 keep/remove, 1 remove/keep.
    pairs = [("keep", "keep")] * 4 + [("remove", "remove")] * 3 + [("keep", "remove")] * 2 + [("remove", "keep")]
    # observed 0.7; first: keep 6, remove 4; second: keep 5, remove 5; expected 0.6*0.5 + 0.4*0.5 = 0.5
    assert team_selectors.cohen_kappa(pairs) == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert team_selectors.cohen_kappa([("keep", "keep")] * 5) is None  # chance agreement is total
    assert team_selectors.cohen_kappa([]) is None


def test_agreement_per_reviewer_and_kind(client, team):
    dataset = team.dataset
    for i in range(12):
        flag = relabel_flag(team, kind=Flag.Kind.NOISY if i < 10 else Flag.Kind.HARD)
        decision = flag_decide(flag_id=flag.pk, action="reject", user=team.users.bob if i < 10 else team.users.cy)
        SecondReview.objects.create(dataset=dataset, flag=flag, first_decision=decision,
                                    first_reviewer=decision.user, first_answer="keep", reviewer=team.users.ann,
                                    answer="keep" if i % 3 else "remove",
                                    state="agreed" if i % 3 else "disagreed")
    SecondReview.objects.create(dataset=dataset, flag=relabel_flag(team), first_answer="keep",
                                first_decision=Decision.objects.create(dataset=dataset, actor="bob", action="keep",
                                                                       user=team.users.bob),
                                first_reviewer=team.users.bob)  # pending: not counted
    result = team_selectors.agreement(dataset_id=dataset.pk)
    bob, cy = result["reviewers"]
    # bob: i = 0..9, disagreeing at 0, 3, 6, 9.
    assert (bob.label, bob.answered, bob.agreed, bob.enough, bob.percent) == ("bob", 10, 6, True, 60.0)
    # bob always said keep: agreement is what chance gives (0.6 observed, 1.0 x 0.6 expected), kappa 0.
    assert bob.kappa == pytest.approx(0.0)
    assert (cy.label, cy.answered, cy.enough) == ("cy", 2, False)
    assert [(k.label, k.answered) for k in result["kinds"]] == [("Noisy", 10), ("Hard", 2)]
    assert (result["overall"].answered, result["overall"].agreed) == (12, 8)
    # The dataset page and the team page show both tables.
    client.force_login(team.users.cy)
    for url in (f"/datasets/{dataset.pk}/", f"/datasets/{dataset.pk}/team"):
        html = client.get(url).content.decode()
        assert ('<td><bdi>bob</bdi></td><td class="num">10</td>\n      <td class="num">60 % (6)</td>\n'
                '      <td class="num">0.00</td>') in html
        assert '<td class="num muted" colspan="2">not enough answers (2 of 2 agreed)</td>' in html
        assert "<td><bdi>Hard</bdi></td>" in html


# -- resolving ------------------------------------------------------------------------------------

def test_resolving_by_keeping_the_first_changes_nothing(team, pending):
    second_review_answer(review_id=pending.pk, user=team.users.cy, action="reject")
    decisions = Decision.objects.count()
    review = second_review_resolve(review_id=pending.pk, user=team.users.ann, keep="first")
    assert (review.state, review.resolution, review.resolved_by) == ("resolved", "kept_first", team.users.ann)
    assert Decision.objects.count() == decisions
    with pytest.raises(LabelConflict, match="^ann already resolved this disagreement.$"):
        second_review_resolve(review_id=pending.pk, user=team.users.ann, keep="second")


def test_applying_the_second_undoes_the_first_and_decides_again(team, pending):
    second_review_answer(review_id=pending.pk, user=team.users.cy, action="remove")
    review = second_review_resolve(review_id=pending.pk, user=team.users.ann, keep="second")
    assert (review.state, review.resolution) == ("resolved", "applied_second")
    face = Face.objects.get(pk=pending.flag.face_id)
    assert (face.identity_id, face.status) == (team.people.ada.pk, Face.Status.REMOVED)
    undo = Decision.objects.get(action=Decision.Action.UNDO)
    assert (undo.undoes_id, undo.user) == (pending.first_decision_id, team.users.ann)
    last = Decision.objects.filter(flag=pending.flag).latest("id")
    assert (last.action, last.user) == (Decision.Action.REMOVE, team.users.ann)
    assert Flag.objects.get(pk=pending.flag_id).state == Flag.State.OVERRIDDEN
    assert SecondReview.objects.filter(flag=pending.flag).count() == 1  # the admin's decision is not sampled


def test_a_face_changed_since_is_not_applied(team, pending):
    second_review_answer(review_id=pending.pk, user=team.users.cy, action="remove")
    face_relabel(face_id=pending.flag.face_id, identity_id=team.people.alan.pk, user=team.users.bob)
    decisions = Decision.objects.count()
    with pytest.raises(LabelConflict, match=f"^{DATA_CHANGED}$"):
        second_review_resolve(review_id=pending.pk, user=team.users.ann, keep="second")
    assert Decision.objects.count() == decisions
    assert SecondReview.objects.get(pk=pending.pk).state == "disagreed"
    assert Face.objects.get(pk=pending.flag.face_id).identity_id == team.people.alan.pk


# -- over HTTP ------------------------------------------------------------------------------------

def test_only_admins_set_the_share(client, team):
    url = f"/datasets/{team.dataset.pk}/team/double-review"
    client.force_login(team.users.bob)
    assert client.post(url, {"share": "5"}).status_code == 404
    client.force_login(team.users.stranger)
    assert client.post(url, {"share": "5"}).status_code == 404
    client.force_login(team.users.ann)
    response = client.post(url, {"share": "5", "back": "dataset"})
    assert response.status_code == 302 and response["Location"] == f"/datasets/{team.dataset.pk}/"
    assert Dataset.objects.get(pk=team.dataset.pk).double_review_share == 0.05
    assert "Double review is off." in client.post(url, {"share": "0"}, follow=True).content.decode()
    client.post(url, {"share": "5"})
    page = client.get(response["Location"]).content.decode()
    assert "Double review asks 5 % of decided flags again." in page
    response = client.post(url, {"share": "60"}, follow=True)
    assert "Double review not changed: the share must be between 0 and 50 %." in response.content.decode()
    response = client.post(url, {"share": "lots"}, follow=True)
    assert "Double review not changed: give the share as a number of percent, 0 to 50." in response.content.decode()
    assert Dataset.objects.get(pk=team.dataset.pk).double_review_share == 0.05


def test_second_look_over_http(client, team, pending):
    page_url = f"/datasets/{team.dataset.pk}/second-look/"
    answer_url = f"{page_url}{pending.pk}/answer"
    client.force_login(team.users.bob)  # the first reviewer: nothing for him, and answering is forbidden
    assert "Nothing is waiting for a second look from you." in client.get(page_url).content.decode()
    response = client.post(answer_url, {"action": "reject"})
    assert response.status_code == 403
    assert response.content.decode() == (
        "You gave the first answer to this flag: the second look is for another reviewer.")
    client.force_login(team.users.stranger)
    assert client.get(page_url).status_code == 404 and client.post(answer_url, {"action": "reject"}).status_code == 404
    client.force_login(team.users.cy)
    html = client.get(page_url).content.decode()
    assert f'id="flag-{pending.flag_id}"' in html and answer_url in html
    assert "bob" not in html  # blind: neither who decided nor what (the card shows the label before: ada)
    assert ">ada</bdi>" in html and "Relabelled" not in html
    assert "Load the next ones" not in html  # the one waiting is on the page: nothing more to load
    crumbs = re.sub(r"<[^>]+>", "", re.search(r'<nav class="crumbs">(.*?)</nav>', html, re.S).group(1))
    assert crumbs == f"Datasets › {team.dataset.name} › Team › Second look"
    assert client.post(answer_url, {"action": "bogus"}).status_code == 400
    response = client.post(answer_url, {"action": "relabel"}, **HTMX)  # no target: the card again, open
    assert response.status_code == 200 and "Choose the identity to relabel to" in response.content.decode()
    assert 'class="fc-actions"' in response.content.decode()
    response = client.post(answer_url, {"action": "reject"}, **HTMX)
    assert response.status_code == 200 and "Answer recorded." in response.content.decode()
    assert SecondReview.objects.get(pk=pending.pk).state == "disagreed"
    response = client.post(answer_url, {"action": "reject"}, follow=True)
    assert "Another reviewer already gave this flag its second look." in response.content.decode()


def test_only_admins_see_and_resolve_disagreements(client, team, pending):
    second_review_answer(review_id=pending.pk, user=team.users.cy, action="reject")
    list_url = f"/datasets/{team.dataset.pk}/disagreements/"
    resolve_url = f"{list_url}{pending.pk}/resolve"
    for reviewer in (team.users.bob, team.users.cy, team.users.stranger):
        client.force_login(reviewer)
        assert client.get(list_url).status_code == 404
        assert client.post(resolve_url, {"keep": "first"}).status_code == 404
    client.force_login(team.users.ann)
    html = client.get(list_url).content.decode()
    assert f'id="disagreement-{pending.pk}"' in html
    assert "Relabel to <b><bdi>grace</bdi></b>" in html and "Keep as is" in html
    crumbs = re.sub(r"<[^>]+>", "", re.search(r'<nav class="crumbs">(.*?)</nav>', html, re.S).group(1))
    assert crumbs == f"Datasets › {team.dataset.name} › Team › Disagreements"
    response = client.post(resolve_url, {"keep": "neither"}, follow=True)
    assert "Choose the first decision or the second answer" in response.content.decode()
    response = client.post(resolve_url, {"keep": "first"})
    assert response.status_code == 302 and response["Location"] == list_url
    assert "Kept the first decision." in client.get(list_url).content.decode()
    assert SecondReview.objects.get(pk=pending.pk).resolution == "kept_first"
    assert client.post(f"{list_url}999999/resolve", {"keep": "first"}).status_code == 404


def test_the_dataset_page_shows_agreement_and_links(client, team, pending):
    client.force_login(team.users.cy)
    html = client.get(f"/datasets/{team.dataset.pk}/").content.decode()
    assert "Second look (1 for you)" in html and "none answered yet" in html
    assert "Disagreements" not in html and 'name="claims"' not in html  # a reviewer: no admin forms
    client.force_login(team.users.ann)
    html = client.get(f"/datasets/{team.dataset.pk}/").content.decode()
    assert "Open disagreements (0)" in html and 'name="claims"' in html and 'name="share"' in html


def test_an_undone_first_decision_leaves_the_queue(team, pending):
    from reviewapp.services.undo import decision_undo

    decision_undo(decision_id=pending.first_decision_id, user=team.users.bob)
    assert team_selectors.second_look_queue(dataset_id=team.dataset.pk, user=team.users.cy) == []
    with pytest.raises(LabelConflict, match="^The first decision on this flag was undone since"):
        second_review_answer(review_id=pending.pk, user=team.users.cy, action="reject")
    # Decided again, the flag is sampled again (same id, same hash).
    flag_decide(flag_id=pending.flag_id, action="reject", user=team.users.bob)
    assert SecondReview.objects.filter(flag_id=pending.flag_id, state="pending").count() == 2
