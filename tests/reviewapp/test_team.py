"""The team view: holds on a queue and a flag, enforced against advisory claims, the claims-mode
setting, throughput per reviewer, and the team page over HTTP."""
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.utils import timezone

from reviewapp.models import Dataset, Decision, Flag, Membership
from reviewapp.selectors import team as team_selectors
from reviewapp.services.claims import dataset_claims_set
from reviewapp.services.flags import flag_decide, flags_claim, flags_decide_bulk
from reviewapp.services.labels import LabelConflict
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory


@pytest.fixture
def team(db, django_user_model, settings):
    settings.FLAG_CLAIM_SECONDS = 1800
    source = SourceFactory()
    dataset = source.dataset
    ada, grace = IdentityFactory(source=source, name="ada"), IdentityFactory(source=source, name="grace")
    users = SimpleNamespace(**{n: django_user_model.objects.create_user(username=n, password=f"pw-{n}-123")
                               for n in ("ann", "bob", "cy", "stranger")})
    MembershipFactory(user=users.ann, dataset=dataset, role=Membership.Role.ADMIN)
    MembershipFactory(user=users.bob, dataset=dataset)
    MembershipFactory(user=users.cy, dataset=dataset)
    MembershipFactory(user=users.stranger)
    round_ = RoundFactory(dataset=dataset, number=1)
    return SimpleNamespace(dataset=dataset, ada=ada, grace=grace, users=users, round=round_)


def flags(team, n, **extra):
    return [FlagFactory(round=team.round, face=FaceFactory(identity=team.ada), score=1.0 - i / 1000,
                        suggestion=Flag.Suggestion.RELABEL, suggested_identity=team.grace, **extra) for i in range(n)]


def hold(flag_ids, user, minutes_ago):
    taken = timezone.now() - timedelta(minutes=minutes_ago)
    Flag.objects.filter(pk__in=flag_ids).update(claimed_by=user, claimed_at=taken)


# -- holds ----------------------------------------------------------------------------------------

def test_queue_holds_group_by_reviewer_with_exact_counts(team):
    ids = [f.pk for f in flags(team, 110)]
    hold(ids[:50], team.users.bob, 10)
    hold(ids[50:100], team.users.cy, 25)
    hold(ids[100:105], team.users.ann, 40)  # expired: 40 min > 30
    holds = team_selectors.queue_holds(round_id=team.round.pk, kind="noisy", user=team.users.bob)
    assert [(h.name, h.count, h.is_you) for h in holds.holders] == [("bob", 50, True), ("cy", 50, False)]
    assert (holds.total, holds.own_count, len(holds.others)) == (100, 50, 1)
    bob, cy = holds.holders
    assert (bob.oldest_minutes, bob.expires_minutes, cy.oldest_minutes, cy.expires_minutes) == (10, 20, 25, 5)


def test_flag_hold_names_someone_else_only(team):
    [flag] = flags(team, 1)
    hold([flag.pk], team.users.bob, 18)
    flag.refresh_from_db()
    found = team_selectors.flag_hold(flag=flag, user=team.users.cy)
    assert (found.name, found.minutes) == ("bob", 12)
    assert team_selectors.flag_hold(flag=flag, user=team.users.bob) is None


def test_the_queue_page_shows_holds_and_the_exact_own_count(client, team):
    fs = flags(team, 60)
    flags_claim(round_id=team.round.pk, kind="noisy", user=team.users.bob, size=50)
    hold([fs[55].pk], team.users.cy, 3)
    client.force_login(team.users.bob)
    html = client.get(f"/datasets/{team.dataset.pk}/review/noisy/").content.decode()
    assert "your batch: 50</span>" in html
    assert "<b>Held by 2 reviewers, 51 flags</b> · you hold 50" in html
    assert "<bdi>cy</bdi>: 1 flag, taken 3 min ago, free in 27 min" in html
    assert "advisory: others skip held flags but may still decide one" in html


def test_a_hold_taken_under_a_minute_ago_says_just_now(client, team):
    [flag] = flags(team, 1)
    hold([flag.pk], team.users.cy, 0)
    client.force_login(team.users.bob)
    html = client.get(f"/datasets/{team.dataset.pk}/review/noisy/").content.decode()
    assert "<bdi>cy</bdi>: 1 flag, taken just now, free in 30 min" in html


def test_the_flag_page_says_who_holds_it(client, team):
    [flag] = flags(team, 1)
    hold([flag.pk], team.users.bob, 20)
    client.force_login(team.users.cy)
    html = client.get(f"/flags/{flag.pk}/").content.decode()
    assert "Held by <b><bdi>bob</bdi></b> for 10 more minutes" in html
    assert "(claims are advisory here: you may still decide it)" in html
    assert '<fieldset class="fc-buttons">' in html and "fc-held" not in html  # advisory: the buttons work
    client.force_login(team.users.bob)
    assert "Held by" not in client.get(f"/flags/{flag.pk}/").content.decode()


# -- claims mode ----------------------------------------------------------------------------------

def test_enforced_claims_refuse_others_with_the_holder_and_the_expiry(team):
    [flag] = flags(team, 1)
    dataset_claims_set(dataset=team.dataset, mode="enforced", by=team.users.ann)
    hold([flag.pk], team.users.bob, 10)
    flag.refresh_from_db()
    until = timezone.localtime(flag.claimed_at + timedelta(seconds=1800)).strftime("%H:%M")
    with pytest.raises(LabelConflict) as refused:
        flag_decide(flag_id=flag.pk, action="confirm", user=team.users.cy)
    assert str(refused.value) == (f"bob holds this flag for 20 more minutes (until {until}): claims are enforced on "
                                  "this dataset, so only bob can decide it until then.")
    assert refused.value.current["held_by"] == "bob"
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
    # In bulk the flag is skipped with the same reason; the holder decides it.
    result = flags_decide_bulk(flag_ids=[flag.pk], action="reject", user=team.users.cy)
    assert result.decided == [] and result.conflicts[0][1].startswith("bob holds this flag")
    flag_decide(flag_id=flag.pk, action="confirm", user=team.users.bob)
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.CONFIRMED


def test_enforced_claims_let_anyone_decide_an_expired_hold(team):
    [flag] = flags(team, 1)
    dataset_claims_set(dataset=team.dataset, mode="enforced")
    hold([flag.pk], team.users.bob, 31)
    flag_decide(flag_id=flag.pk, action="reject", user=team.users.cy)
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.REJECTED


def test_advisory_claims_let_others_decide(team):
    [flag] = flags(team, 1)
    hold([flag.pk], team.users.bob, 1)
    flag_decide(flag_id=flag.pk, action="reject", user=team.users.cy)
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.REJECTED


def test_the_claims_mode_is_audited_and_checked(team):
    dataset_claims_set(dataset=team.dataset, mode="enforced", by=team.users.ann)
    dataset_claims_set(dataset=team.dataset, mode="enforced", by=team.users.ann)  # no change, no row
    row = Decision.objects.get(action=Decision.Action.SETTING)
    assert (row.user, row.actor, row.before, row.after) == (
        team.users.ann, "ann", {"setting": "claims", "value": "advisory"}, {"setting": "claims", "value": "enforced"})
    with pytest.raises(ValueError, match="unknown claims mode 'strict'"):
        dataset_claims_set(dataset=team.dataset, mode="strict")


def test_only_admins_choose_the_claims_mode(client, team):
    url = f"/datasets/{team.dataset.pk}/team/claims"
    for user in (team.users.bob, team.users.stranger):
        client.force_login(user)
        assert client.post(url, {"claims": "enforced"}).status_code == 404
    assert Dataset.objects.get(pk=team.dataset.pk).claims == "advisory"
    client.force_login(team.users.ann)
    response = client.post(url, {"claims": "enforced"})
    assert response.status_code == 302 and response["Location"] == f"/datasets/{team.dataset.pk}/team"
    assert "Claims are enforced now." in client.get(response["Location"]).content.decode()
    assert Dataset.objects.get(pk=team.dataset.pk).claims == "enforced"
    response = client.post(url, {"claims": "strict", "back": "dataset"}, follow=True)
    assert "Claims not changed: unknown claims mode &#x27;strict&#x27;: use advisory or enforced." in (
        response.content.decode())
    # The queue's wording follows the mode.
    client.force_login(team.users.bob)
    flags(team, 1)
    html = client.get(f"/datasets/{team.dataset.pk}/review/noisy/").content.decode()
    assert "enforced: only the holder can decide a held flag" in html


def test_an_enforced_refusal_over_http(client, team):
    [flag] = flags(team, 1)
    dataset_claims_set(dataset=team.dataset, mode="enforced")
    hold([flag.pk], team.users.bob, 0)
    client.force_login(team.users.cy)
    html = client.get(f"/flags/{flag.pk}/").content.decode()
    assert "(claims are enforced here: only <bdi>bob</bdi> can decide it until then)" in html
    # The flag page shows the decision buttons disabled, saying why.
    disabled = '<fieldset class="fc-buttons" disabled>'
    assert disabled in html and "Only <b><bdi>bob</bdi></b> can decide this flag while they hold it." in html
    # From a queue card the refusal comes as a message.
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "confirm"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and "bob holds this flag for 30 more minutes" in response.content.decode()
    # From the flag page (a page opened before the hold) the card comes back disabled, no message repeats it.
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "confirm", "large": "1"}, HTTP_HX_REQUEST="true")
    text = response.content.decode()
    assert disabled in text and "holds this flag" not in text and '<p class="message' not in text
    # Without JavaScript: back on the flag page, which says it once (the banner), with no flash message.
    response = client.post(f"/flags/{flag.pk}/decide", {"action": "confirm", "large": "1"},
                           HTTP_REFERER=f"http://testserver/flags/{flag.pk}/", follow=True)
    text = response.content.decode()
    assert "Held by <b><bdi>bob</bdi></b>" in text and "holds this flag" not in text and disabled in text
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
    client.force_login(team.users.bob)  # the holder decides as usual
    assert '<fieldset class="fc-buttons">' in client.get(f"/flags/{flag.pk}/").content.decode()


# -- throughput -----------------------------------------------------------------------------------

def decided_at(team, user, when, action="keep"):
    """A review decision row at a given time (created_at is auto_now_add: set it after)."""
    row = Decision.objects.create(dataset=team.dataset, user=user, actor=user.username, action=action)
    # Decision rows are append-only through the ORM: the test moves its own row in time with SQL.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Decision._meta.db_table} SET created_at = %s WHERE id = %s", [when, row.pk])
    return row


def test_throughput_counts_review_decisions_per_reviewer(team, monkeypatch):
    now = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    for minutes in (5, 10, 30, 50):  # bob: 4 in the last hour, 20 minutes apart at most
        decided_at(team, team.users.bob, now - timedelta(minutes=minutes))
    decided_at(team, team.users.bob, now - timedelta(hours=3), action="relabel")
    decided_at(team, team.users.bob, now - timedelta(days=2))
    decided_at(team, team.users.bob, now - timedelta(days=9))  # older than 7 days
    decided_at(team, team.users.bob, now - timedelta(minutes=1), action="role")  # not review work
    decided_at(team, team.users.bob, now - timedelta(minutes=2), action="setting")
    decided_at(team, team.users.cy, now - timedelta(minutes=7), action="remove")
    # cy undid something: the undo row and the label change it made (its reversal) are not review work.
    reversal = decided_at(team, team.users.cy, now - timedelta(minutes=6), action="relabel")
    decided_at(team, team.users.cy, now - timedelta(minutes=6), action="undo")
    Decision.objects.create(dataset=team.dataset, user=team.users.cy, actor="cy", action="undo",
                            after={"undoes": None, "reversal": reversal.pk})
    rows = team_selectors.throughput(dataset_id=team.dataset.pk, now=now)
    assert [(r.name, r.last_hour, r.today, r.week) for r in rows] == [("bob", 4, 5, 6), ("cy", 1, 1, 1)]
    # bob's gaps (s): 2d-3h, 3h-50m, 20m, 20m, 5m  -> median 20 minutes.
    assert rows[0].median_gap_s == pytest.approx(1200.0) and rows[1].median_gap_s is None
    # The other databases' path (ORM rows, medians in Python) gives the same numbers.
    monkeypatch.setattr(team_selectors, "_sql_grouping", lambda: False)
    assert team_selectors.throughput(dataset_id=team.dataset.pk, now=now) == rows


def test_the_team_page(client, team):
    decided_at(team, team.users.bob, timezone.now())
    fs = flags(team, 3)
    hold([f.pk for f in fs], team.users.cy, 2)
    url = f"/datasets/{team.dataset.pk}/team"
    client.force_login(team.users.stranger)
    assert client.get(url).status_code == 404
    client.force_login(team.users.bob)
    html = client.get(url).content.decode()
    assert "<td><bdi>bob</bdi></td><td class=\"num\">1</td>" in html
    assert "<bdi>cy</bdi>: 3 flags, taken 2 min ago" in html
    assert 'name="claims"' not in html and "Claims are <b>advisory</b>" in html
    client.force_login(team.users.ann)
    assert 'name="claims"' in client.get(url).content.decode()
    client.logout()
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
