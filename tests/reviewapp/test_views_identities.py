"""Identity pages, pairs, search, history and undo over HTTP: login and dataset access,
escaping, keyset pages, bulk actions, merges and undo through the views."""
import itertools
import os
import re

import pytest

from reviewapp.models import Decision, Face, Flag, Identity, Membership, Round
from reviewapp.services import labels
from tests.factories import (FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory,
                             SourceFactory, jpeg_bytes)
from tests.reviewapp.test_selectors_identities import axis, write_round_run

HTMX = {"HTTP_HX_REQUEST": "true"}
_colors = itertools.cycle([(200, 90, 80), (80, 160, 90), (70, 90, 200), (180, 170, 60)])


def add_face(identity, **kwargs):
    """A face whose file is a tiny real JPEG under its source's root."""
    face = FaceFactory(identity=identity, **kwargs)
    path = os.path.join(identity.source.root, face.path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(jpeg_bytes(next(_colors)))
    return face


@pytest.fixture
def world(db, tmp_path, user, django_user_model):
    source = SourceFactory(root=str(tmp_path / "images"))
    dataset = source.dataset
    MembershipFactory(user=user, dataset=dataset)
    alice = IdentityFactory(source=source, name="Alice <script>alert(1)</script>")
    bob = IdentityFactory(source=source, name="Bob")
    outsider = django_user_model.objects.create_user(username="outsider", password="pw-outsider-1")
    MembershipFactory(user=outsider)  # a reviewer of another dataset
    return {"dataset": dataset, "alice": alice, "bob": bob, "outsider": outsider,
            "alice_faces": [add_face(alice) for _ in range(4)], "bob_faces": [add_face(bob) for _ in range(2)]}


def _urls(world, decision):
    a, b, ds = world["alice"], world["bob"], world["dataset"]
    return [("get", f"/identities/{a.pk}/"), ("get", f"/identities/{a.pk}/vs/{b.pk}/"),
            ("get", f"/datasets/{ds.pk}/history"), ("get", f"/datasets/{ds.pk}/identities/search?q=Bo"),
            ("post", f"/identities/{a.pk}/bulk"), ("post", f"/identities/{a.pk}/merge"),
            ("post", f"/decisions/{decision.pk}/undo")]


def test_login_is_required_everywhere(client, world, user):
    decision = labels.face_remove(face_id=world["alice_faces"][0].pk, user=user)
    for method, url in _urls(world, decision):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_other_datasets_reviewer_gets_404_and_changes_nothing(client, world, user):
    decision = labels.face_remove(face_id=world["alice_faces"][0].pk, user=user)
    client.force_login(world["outsider"])
    for method, url in _urls(world, decision):
        data = {"ids": [world["alice_faces"][1].pk], "action": "remove", "other_id": world["bob"].pk,
                "survivor_id": world["bob"].pk} if method == "post" else None
        assert getattr(client, method)(url, data).status_code == 404, url
    assert Face.objects.filter(status="removed").count() == 1
    assert Identity.objects.get(pk=world["alice"].pk).merged_into_id is None


def test_identity_page_shows_faces_boxed_and_the_name_as_text(client, world, user, django_assert_max_num_queries):
    alice = world["alice"]
    faces = world["alice_faces"]
    round_ = RoundFactory(dataset=world["dataset"])
    FlagFactory(face=faces[0], round=round_, kind=Flag.Kind.NOISY)
    FlagFactory(face=faces[1], round=round_, kind=Flag.Kind.HARD)
    for _ in range(30):  # more faces and flags must not mean more queries
        FlagFactory(face=add_face(alice), round=round_, kind=Flag.Kind.HARD)
    duplicate = FlagFactory(face=None, round=round_, kind=Flag.Kind.DUPLICATE_IDENTITY, identity_a=world["bob"],
                            identity_b=alice, suggestion=Flag.Suggestion.MERGE)
    client.force_login(user)
    with django_assert_max_num_queries(11):
        response = client.get(f"/identities/{alice.pk}/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert re.search(rf'id="face-{faces[0].pk}"[^>]*>\s*<input[^>]*>\s*<span class="face-thumb box-noisy', html)
    assert re.search(rf'id="face-{faces[1].pk}"[^>]*>\s*<input[^>]*>\s*<span class="face-thumb box-hard', html)
    assert 'class="face-grid id-grid" id="face-grid" data-selectable' in html
    assert f'name="ids" value="{faces[2].pk}"' in html
    assert html.count('class="face-card') == 34
    assert f'/identities/{alice.pk}/vs/{world["bob"].pk}/?flag={duplicate.pk}"><bdi>Bob</bdi></a>' in html
    assert 'value="other"> the identity you pick above</label>' in html  # the merge's other survivor, plainly


def test_face_pages_load_more_by_keyset(client, world, user, settings):
    alice = world["alice"]
    more = [add_face(alice) for _ in range(70)]
    every = world["alice_faces"] + more
    client.force_login(user)
    first = client.get(f"/identities/{alice.pk}/").content.decode()
    shown = [int(i) for i in re.findall(r'data-face-id="(\d+)"', first)]
    assert shown == [f.pk for f in every[:60]]
    cursor = re.search(r"\?after=(\d+)", first).group(1)
    assert int(cursor) == every[59].pk
    second = client.get(f"/identities/{alice.pk}/?after={cursor}", **HTMX).content.decode()
    assert [int(i) for i in re.findall(r'data-face-id="(\d+)"', second)] == [f.pk for f in every[60:]]
    assert "<html" not in second and "?after=" not in second  # the last page: no more button


def test_removed_faces_show_dimmed_only_when_asked(client, world, user):
    face = world["alice_faces"][0]
    labels.face_remove(face_id=face.pk, user=user)
    client.force_login(user)
    plain = client.get(f"/identities/{world['alice'].pk}/").content.decode()
    assert f'data-face-id="{face.pk}"' not in plain
    shown = client.get(f"/identities/{world['alice'].pk}/?removed=1").content.decode()
    assert re.search(rf'class="face-card is-removed" id="face-{face.pk}"', shown)
    assert 'class="face-thumb  removed"' in shown


def test_bulk_remove_and_low_quality_report_conflicts(client, world, user):
    faces = world["alice_faces"]
    labels.face_remove(face_id=faces[2].pk, user=user)
    client.force_login(user)
    response = client.post(f"/identities/{world['alice'].pk}/bulk",
                           {"action": "remove", "ids": [faces[0].pk, faces[1].pk, faces[2].pk]}, **HTMX)
    html = response.content.decode()
    assert response.status_code == 200
    assert f'<div id="face-{faces[0].pk}" hx-swap-oob="delete">' in html
    assert "Removed 2 faces" in html and "1 face skipped" in html
    assert 'id="identity-counts" hx-swap-oob="true"' in html and "<strong>1</strong> active" in html
    assert list(Face.objects.filter(pk__in=[f.pk for f in faces]).order_by("pk").values_list("status", flat=True)) \
        == ["removed", "removed", "removed", "active"]

    # The card's own low-quality button (key l) posts just its face.
    page = client.get(f"/identities/{world['alice'].pk}/").content.decode()
    assert f"hx-vals='{{\"ids\": \"{faces[3].pk}\", \"action\": \"low_quality\"}}'" in page
    client.post(f"/identities/{world['alice'].pk}/bulk", {"action": "low_quality", "ids": [faces[3].pk]}, **HTMX)
    assert Decision.objects.filter(face=faces[3], action=Decision.Action.LOW_QUALITY).count() == 1


def test_bulk_restore_keeps_cards_when_removed_are_shown(client, world, user):
    face = world["alice_faces"][0]
    labels.face_remove(face_id=face.pk, user=user)
    client.force_login(user)
    html = client.post(f"/identities/{world['alice'].pk}/bulk",
                       {"action": "restore", "ids": [face.pk], "removed": "1"}, **HTMX).content.decode()
    assert re.search(rf'id="face-{face.pk}"[^>]*hx-swap-oob="true"', html)
    assert Face.objects.get(pk=face.pk).status == "active"


def test_bulk_relabel_moves_faces_and_refuses_foreign_targets(client, world, user):
    faces = world["alice_faces"]
    client.force_login(user)
    response = client.post(f"/identities/{world['alice'].pk}/bulk",
                           {"action": "relabel", "ids": [faces[0].pk, faces[1].pk], "identity_id": world["bob"].pk},
                           **HTMX)
    assert "Relabelled 2 faces to Bob" in response.content.decode()
    assert Face.objects.filter(identity=world["bob"]).count() == 4
    foreign = IdentityFactory()
    response = client.post(f"/identities/{world['alice'].pk}/bulk",
                           {"action": "relabel", "ids": [faces[2].pk], "identity_id": foreign.pk}, **HTMX)
    assert response.status_code == 404
    missing = client.post(f"/identities/{world['alice'].pk}/bulk", {"action": "relabel", "ids": [faces[2].pk]}, **HTMX)
    assert "Choose the identity" in missing.content.decode()
    assert Face.objects.get(pk=faces[2].pk).identity_id == world["alice"].pk


def test_pair_page_shows_both_sides_escaped(client, world, user, django_assert_max_num_queries):
    client.force_login(user)
    with django_assert_max_num_queries(12):
        response = client.get(f"/identities/{world['alice'].pk}/vs/{world['bob'].pk}/")
    html = response.content.decode()
    assert "Alice &lt;script&gt;" in html and "<script>alert" not in html
    assert html.count('name="survivor_id"') == 2
    # The larger identity is the default survivor.
    assert re.search(rf'value="{world["alice"].pk}" checked', html)
    assert "Not the same person" not in html


def test_merge_from_the_pair_page_without_a_flag(client, world, user):
    client.force_login(user)
    alice, bob = world["alice"], world["bob"]
    response = client.post(f"/identities/{alice.pk}/merge",
                           {"other_id": bob.pk, "survivor_id": bob.pk, "verdict": "same"}, **HTMX)
    html = response.content.decode()
    assert "Merged Alice &lt;script&gt;" in html and "into Bob" in html
    assert Identity.objects.get(pk=alice.pk).merged_into_id == bob.pk
    assert Face.objects.filter(identity=bob).count() == 6
    decision = Decision.objects.get(action="merge")
    assert f"/decisions/{decision.pk}/undo" in html
    # Undo from the result.
    undo = client.post(f"/decisions/{decision.pk}/undo", **HTMX).content.decode()
    assert "Undid your merge decision" in undo
    assert Face.objects.filter(identity=alice).count() == 4


def test_merge_needs_a_survivor_of_the_pair(client, world, user):
    client.force_login(user)
    third = IdentityFactory(source=world["alice"].source)
    html = client.post(f"/identities/{world['alice'].pk}/merge",
                       {"other_id": world["bob"].pk, "survivor_id": third.pk}, **HTMX).content.decode()
    assert "Choose which identity survives" in html
    assert not Decision.objects.filter(action="merge").exists()


def test_merge_from_the_identity_page_can_keep_the_other(client, world, user):
    client.force_login(user)
    client.post(f"/identities/{world['bob'].pk}/merge", {"other_id": world["alice"].pk, "survivor_id": "other"})
    assert Identity.objects.get(pk=world["bob"].pk).merged_into_id == world["alice"].pk


@pytest.fixture
def duplicate_flag(world):
    round_ = RoundFactory(dataset=world["dataset"])
    return FlagFactory(face=None, round=round_, kind=Flag.Kind.DUPLICATE_IDENTITY, identity_a=world["alice"],
                       identity_b=world["bob"], suggestion=Flag.Suggestion.MERGE, evidence={"cosine": 0.91})


def test_pair_from_a_flag_confirms_it(client, world, user, duplicate_flag):
    client.force_login(user)
    url = f"/identities/{world['alice'].pk}/vs/{world['bob'].pk}/?flag={duplicate_flag.pk}"
    html = client.get(url).content.decode()
    assert "Not the same person" in html and "centre cosine 0.910" in html
    client.post(f"/identities/{world['alice'].pk}/merge",
                {"other_id": world["bob"].pk, "survivor_id": world["alice"].pk, "flag": duplicate_flag.pk}, **HTMX)
    duplicate_flag.refresh_from_db()
    assert duplicate_flag.state == Flag.State.CONFIRMED
    assert Identity.objects.get(pk=world["bob"].pk).merged_into_id == world["alice"].pk
    assert Decision.objects.get(action="merge").flag_id == duplicate_flag.pk
    # A second reviewer on the same flag gets a message, not an error page.
    again = client.post(f"/identities/{world['alice'].pk}/merge",
                        {"other_id": world["bob"].pk, "survivor_id": world["alice"].pk, "flag": duplicate_flag.pk},
                        **HTMX)
    assert again.status_code == 200 and "Nothing changed: This flag was already decided" in again.content.decode()


def test_pair_from_a_flag_not_the_same_person(client, world, user, duplicate_flag):
    client.force_login(user)
    html = client.post(f"/identities/{world['alice'].pk}/merge",
                       {"other_id": world["bob"].pk, "flag": duplicate_flag.pk, "verdict": "different"},
                       **HTMX).content.decode()
    assert "Kept" in html
    duplicate_flag.refresh_from_db()
    assert duplicate_flag.state == Flag.State.REJECTED
    assert Identity.objects.get(pk=world["alice"].pk).merged_into_id is None


def test_a_flag_of_another_pair_is_404(client, world, user, duplicate_flag):
    client.force_login(user)
    third = IdentityFactory(source=world["alice"].source)
    assert client.get(f"/identities/{world['alice'].pk}/vs/{third.pk}/?flag={duplicate_flag.pk}").status_code == 404


def test_search_by_name_escapes_and_limits(client, world, user, django_assert_max_num_queries):
    for n in range(25):
        add_face(IdentityFactory(source=world["alice"].source, name=f"Bobby {n:02d}"))
    client.force_login(user)
    with django_assert_max_num_queries(8):
        html = client.get(f"/datasets/{world['dataset'].pk}/identities/search?q=bob").content.decode()
    assert html.count('name="identity_id"') == 20
    assert html.count("/thumbnail") == 20  # a reference face for each
    assert client.get(f"/datasets/{world['dataset'].pk}/identities/search?q=b%00ob").status_code == 200
    assert f'value="{world["bob"].pk}"' in html
    html = client.get(f"/datasets/{world['dataset'].pk}/identities/search?q=ali&field=other_id").content.decode()
    assert 'name="other_id"' in html and "Alice &lt;script&gt;" in html and "<script>" not in html


def test_search_by_face_returns_the_planted_nearest_identity(client, world, user, settings, tmp_path):
    settings.RUNS_ROOT = tmp_path / "runs"
    carol = IdentityFactory(source=world["alice"].source, name="Carol")
    carol_faces = [add_face(carol) for _ in range(2)]
    rows = [(f, axis(1, 0, 0)) for f in world["alice_faces"][1:]] + [(f, axis(0, 1, 0)) for f in world["bob_faces"]]
    rows += [(f, axis(0, 0, 1)) for f in carol_faces] + [(world["alice_faces"][0], axis(.1, .1, .9))]
    write_round_run(settings.RUNS_ROOT, RoundFactory(dataset=world["dataset"]), rows)
    client.force_login(user)
    odd = world["alice_faces"][0].pk
    html = client.get(f"/datasets/{world['dataset'].pk}/identities/search?face={odd}").content.decode()
    options = [int(i) for i in re.findall(r'name="identity_id" value="(\d+)"', html)]
    assert options[0] == carol.pk and world["alice"].pk not in options
    # The identity page's "Nearest identities" sends the checked faces as ids.
    html = client.get(f"/datasets/{world['dataset'].pk}/identities/search?ids={odd}&selected=faces"
                      f"&identity={world['alice'].pk}&exclude={world['alice'].pk}").content.decode()
    assert re.findall(r'value="(\d+)"', html)[0] == str(carol.pk)
    # A review queue sends its checked flags as ids: the flag's face is the one asked about.
    flag = FlagFactory(face=world["alice_faces"][0], round=Round.objects.get(dataset=world["dataset"]))
    html = client.get(f"/datasets/{world['dataset'].pk}/identities/search?ids={flag.pk}").content.decode()
    assert re.findall(r'value="(\d+)"', html)[0] == str(carol.pk)
    foreign = FaceFactory()
    assert client.get(f"/datasets/{world['dataset'].pk}/identities/search?face={foreign.pk}").status_code == 404


def _history_ids(html):
    return [int(i) for i in re.findall(r'<tr id="decision-(\d+)"', html)]


def test_history_lists_filters_and_pages(client, world, user, django_user_model, django_assert_max_num_queries):
    other = django_user_model.objects.create_user(username="colleague", password="pw-colleague-1")
    Membership.objects.create(user=other, dataset=world["dataset"])
    round_ = RoundFactory(dataset=world["dataset"], number=7)
    flag = FlagFactory(face=world["alice_faces"][0], round=round_)
    from reviewapp.services.flags import flag_decide

    flagged = flag_decide(flag_id=flag.pk, action="confirm", user=other)
    extra = [add_face(world["bob"]) for _ in range(55)]
    for face in extra:
        labels.face_remove(face_id=face.pk, user=user)
    relabel = labels.face_relabel(face_id=world["alice_faces"][1].pk, identity_id=world["bob"].pk, user=user)
    client.force_login(user)
    url = f"/datasets/{world['dataset'].pk}/history"
    with django_assert_max_num_queries(14):
        html = client.get(url).content.decode()
    ids = _history_ids(html)
    assert ids[0] == relabel.pk and len(ids) == 50
    assert "Alice &lt;script&gt;alert(1)&lt;/script&gt;</bdi></a> → <a" in html
    # Each of my own decisions that undo would reverse has an Undo button (all 50 rows are mine).
    assert html.count(">Undo</button>") == 50 and f"/decisions/{relabel.pk}/undo" in html
    before = re.search(r"\?before=(\d+)", html).group(1)
    rest = client.get(f"{url}?before={before}", **HTMX).content.decode()
    assert _history_ids(rest) == sorted((d for d in Decision.objects.values_list("pk", flat=True)
                                         if d < int(before)), reverse=True)
    by_colleague = client.get(f"{url}?user={other.pk}", HTTP_HX_TARGET="history-list", **HTMX).content.decode()
    assert _history_ids(by_colleague) == [flagged.pk] and 'id="history-list"' in by_colleague
    assert "<html" not in by_colleague
    assert _history_ids(client.get(f"{url}?round=7").content.decode()) == [flagged.pk]
    assert _history_ids(client.get(f"{url}?action=relabel").content.decode()) == [relabel.pk]
    assert "θy 81.0°" in client.get(f"{url}?round=7").content.decode()


def test_undo_from_history_restores_and_refuses_others(client, world, user, django_user_model):
    other = django_user_model.objects.create_user(username="colleague", password="pw-colleague-1")
    Membership.objects.create(user=other, dataset=world["dataset"])
    face = world["alice_faces"][0]
    mine = labels.face_relabel(face_id=face.pk, identity_id=world["bob"].pk, user=user)
    theirs = labels.face_remove(face_id=world["alice_faces"][1].pk, user=other)
    client.force_login(user)
    refused = client.post(f"/decisions/{theirs.pk}/undo", {"history": "1"}, **HTMX)
    assert refused.status_code == 200 and refused["HX-Reswap"] == "none"
    assert "Only your own decisions can be undone" in refused.content.decode()
    assert Face.objects.get(pk=world["alice_faces"][1].pk).status == "removed"

    response = client.post(f"/decisions/{mine.pk}/undo", {"history": "1", "user": str(user.pk)}, **HTMX)
    html = response.content.decode()
    assert "Undid your relabel decision" in html and 'id="history-list"' in html
    assert Face.objects.get(pk=face.pk).identity_id == world["alice"].pk
    # The list came back filtered as posted: my rows only, and no Undo left for me.
    assert set(Decision.objects.filter(pk__in=_history_ids(html)).values_list("user_id", flat=True)) == {user.pk}
    assert ">Undo</button>" not in html
    again = client.post(f"/decisions/{mine.pk}/undo", **HTMX)
    assert "This decision was already undone" in again.content.decode()


def test_undo_conflict_is_a_message_and_nothing_is_lost(client, world, user, django_user_model):
    other = django_user_model.objects.create_user(username="colleague", password="pw-colleague-1")
    face = world["alice_faces"][0]
    mine = labels.face_remove(face_id=face.pk, user=user)
    labels.face_relabel(face_id=face.pk, identity_id=world["bob"].pk, user=other)
    client.force_login(user)
    html = client.post(f"/decisions/{mine.pk}/undo", **HTMX).content.decode()
    assert "Cannot undo" in html and 'hx-swap-oob="true"' in html
    assert tuple(Face.objects.filter(pk=face.pk).values_list("identity_id", "status").get()) \
        == (world["bob"].pk, "removed")
    assert not Decision.objects.filter(action="undo").exists()


def test_no_published_round_needed_for_the_pages(client, world, user):
    RoundFactory(dataset=world["dataset"], status=Round.Status.TRAINING)
    client.force_login(user)
    assert client.get(f"/identities/{world['alice'].pk}/").status_code == 200
    html = client.get(f"/datasets/{world['dataset'].pk}/identities/search?identity={world['alice'].pk}").content
    assert b"No published round" in html
