"""The identity list (search, sorts, keyset pages, merged ones), face find, the identity page's
flag filters and batch undo over HTTP: login, dataset access, escaping, exact answers."""
import re
import uuid

import pytest

from reviewapp.models import Decision, Face, Flag
from reviewapp.services import labels
from reviewapp.services.faces import faces_bulk_action
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def world(db, user, django_user_model):
    source = SourceFactory(root="/data/set")
    dataset = source.dataset
    MembershipFactory(user=user, dataset=dataset)
    outsider = django_user_model.objects.create_user(username="outsider", password="pw-outsider-1")
    MembershipFactory(user=outsider)  # a reviewer of another dataset
    alice = IdentityFactory(source=source, name="Alice <script>alert(1)</script>")
    bob = IdentityFactory(source=source, name="bob")
    carol = IdentityFactory(source=source, name="Carol")
    faces = {"alice": [FaceFactory(identity=alice, path=f"Alice/{i}.jpg") for i in range(3)],
             "bob": [FaceFactory(identity=bob, path=f"Bob/{i}.jpg") for i in range(5)],
             "carol": [FaceFactory(identity=carol, path=f"Carol/{i}.jpg") for i in range(1)]}
    round_ = RoundFactory(dataset=dataset)
    # Open flags of the latest round: alice 2 noisy of 3 faces, bob 1 noisy + 1 hard of 5.
    FlagFactory(face=faces["alice"][0], round=round_, score=0.9)
    FlagFactory(face=faces["alice"][1], round=round_, score=0.4)
    FlagFactory(face=faces["bob"][0], round=round_, score=0.7)
    FlagFactory(face=faces["bob"][1], round=round_, kind=Flag.Kind.HARD, score=0.8)
    return {"dataset": dataset, "source": source, "alice": alice, "bob": bob, "carol": carol, "faces": faces,
            "outsider": outsider, "round": round_}


def _names(html: str) -> list[str]:
    return re.findall(r'<tr id="identity-\d+"[^>]*>\s*<td><a href="/identities/\d+/"><bdi>(.*?)</bdi>', html)


def _urls(world):
    ds = world["dataset"].pk
    return [("get", f"/datasets/{ds}/identities/"), ("get", f"/datasets/{ds}/faces/find?q=Bob"),
            ("post", f"/datasets/{ds}/batches/{uuid.uuid4()}/undo")]


def test_login_is_required(client, world):
    for method, url in _urls(world):
        response = getattr(client, method)(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_another_datasets_member_gets_404(client, world):
    client.force_login(world["outsider"])
    for method, url in _urls(world):
        assert getattr(client, method)(url).status_code == 404, url


def test_list_by_name_escapes_and_hides_merged_ones(client, world, user):
    client.force_login(user)
    url = f"/datasets/{world['dataset'].pk}/identities/"
    html = client.get(url).content.decode()
    assert _names(html) == ["Alice &lt;script&gt;alert(1)&lt;/script&gt;", "Carol", "bob"]
    assert "<script>alert(1)" not in html
    labels.identity_merge(identity_id=world["carol"].pk, into_id=world["bob"].pk, user=user)
    assert _names(client.get(url).content.decode()) == ["Alice &lt;script&gt;alert(1)&lt;/script&gt;", "bob"]
    shown = client.get(f"{url}?merged=1").content.decode()
    assert "Carol" in _names(shown) and re.search(r'merged into <a href="/identities/\d+/"><bdi>bob</bdi>', shown)


def test_search_is_a_case_insensitive_substring(client, world, user):
    client.force_login(user)
    url = f"/datasets/{world['dataset'].pk}/identities/"
    assert _names(client.get(f"{url}?q=AROL").content.decode()) == ["Carol"]
    assert _names(client.get(f"{url}?q=o&sort=size").content.decode()) == ["bob", "Carol"]
    fragment = client.get(f"{url}?q=b", HTTP_HX_TARGET="identity-table", **HTMX).content.decode()
    assert 'id="identity-table"' in fragment and "<html" not in fragment and _names(fragment) == ["bob"]
    assert "No identities whose name contains “<bdi>zz&lt;b&gt;</bdi>”" in client.get(f"{url}?q=zz<b>").content.decode()


def test_sorts_by_size_open_flags_and_noise(client, world, user):
    client.force_login(user)
    url = f"/datasets/{world['dataset'].pk}/identities/"
    alice = "Alice &lt;script&gt;alert(1)&lt;/script&gt;"
    assert _names(client.get(f"{url}?sort=size").content.decode()) == ["bob", alice, "Carol"]
    html = client.get(f"{url}?sort=flags").content.decode()
    assert _names(html) == ["bob", alice, "Carol"]  # 2 each: the larger first
    noise = client.get(f"{url}?sort=noise").content.decode()
    assert _names(noise) == [alice, "bob", "Carol"]  # 2 of 3, 1 of 5, 0 of 1
    row = re.search(rf'identity-{world["alice"].pk}".*?</tr>', noise, re.S).group(0)
    assert re.findall(r'<td class="num">(?:<a[^>]*>)?([^<]*)', row) == ["3", "2", "66.7 %"]


def test_keyset_pages_without_gaps_or_repeats(client, world, user, django_assert_max_num_queries):
    for i in range(60):
        identity = IdentityFactory(source=world["source"], name=f"zz-{i:02d}")
        for _ in range(i % 4):
            FaceFactory(identity=identity)
    client.force_login(user)
    url = f"/datasets/{world['dataset'].pk}/identities/"
    # By name the page counts its own 50 identities; by size the table is counted once, then cached.
    for sort, queries in (("name", 12), ("size", 9)):
        client.get(f"{url}?sort={sort}&q=zz")
        with django_assert_max_num_queries(queries):
            html = client.get(f"{url}?sort={sort}&q=zz").content.decode()
        first = _names(html)
        assert len(first) == 50
        more = re.search(r'hx-get="([^"]*after=\d+)"', html).group(1).replace("&amp;", "&")
        assert f"sort={sort}" in more or sort == "name"
        rest = client.get(more, **HTMX).content.decode()
        second = _names(rest)
        assert len(second) == 10 and not set(first) & set(second)
        assert 'id="identity-more"' in rest and "after=" not in rest.split('id="identity-more"')[1]
        if sort == "name":
            assert first + second == [f"zz-{i:02d}" for i in range(60)]
        else:
            sizes = [i % 4 for i in range(60)]
            assert [sizes[int(n[3:])] for n in first + second] == sorted(sizes, reverse=True)


def test_face_find_by_id_path_prefix_and_suffix(client, world, user):
    client.force_login(user)
    ds = world["dataset"].pk
    bob0, alice1 = world["faces"]["bob"][0], world["faces"]["alice"][1]
    response = client.get(f"/datasets/{ds}/faces/find?q=%23{bob0.pk}")
    assert response.status_code == 302
    assert response["Location"] == f"/identities/{world['bob'].pk}/?at={bob0.pk}#face-{bob0.pk}"
    assert client.get(f"/datasets/{ds}/faces/find?q=Alice/1.jpg")["Location"].endswith(f"#face-{alice1.pk}")
    assert client.get(f"/datasets/{ds}/faces/find?q=/data/set/Alice/1.jpg")["Location"].endswith(f"#face-{alice1.pk}")
    labels.face_remove(face_id=alice1.pk, user=user)
    assert client.get(f"/datasets/{ds}/faces/find?q=Alice/1.jpg")["Location"] == \
        f"/identities/{world['alice'].pk}/?at={alice1.pk}&removed=1#face-{alice1.pk}"
    listed = client.get(f"/datasets/{ds}/faces/find?q=Bob/")
    assert listed.status_code == 200 and listed.content.decode().count('<li><a href="/identities/') == 5
    suffix = client.get(f"/datasets/{ds}/faces/find?q=/2.jpg").content.decode()
    assert sorted(re.findall(r"#\d+ <bdi>(.*?)</bdi>", suffix)) == ["Alice/2.jpg", "Bob/2.jpg"]
    stranger = FaceFactory()  # another dataset's face: not found by its id
    html = client.get(f"/datasets/{ds}/faces/find?q={stranger.pk}").content.decode()
    assert "No face of this dataset has that id or a path like “<bdi>" in html


def test_identity_page_filters_by_kind_and_score_and_pages_with_the_filter(client, world, user):
    bob = world["bob"]
    flagged = [FaceFactory(identity=bob) for _ in range(70)]
    for i, face in enumerate(flagged):
        FlagFactory(face=face, round=world["round"], score=1.0 + i / 100)
    client.force_login(user)
    url = f"/identities/{bob.pk}/"
    ids = lambda html: [int(i) for i in re.findall(r'id="face-(\d+)"', html)]  # noqa: E731
    html = client.get(f"{url}?kind=noisy&min_score=1.045").content.decode()
    assert ids(html) == [f.pk for f in flagged[5:65]]
    more = re.search(r'hx-get="([^"]*after=\d+[^"]*)"', html).group(1).replace("&amp;", "&")
    assert "kind=noisy" in more and "min_score=1.045" in more
    assert ids(client.get(more, **HTMX).content.decode()) == [f.pk for f in flagged[65:]]
    assert ids(client.get(f"{url}?kind=hard").content.decode()) == [world["faces"]["bob"][1].pk]
    anything = ids(client.get(f"{url}?kind=any&min_score=0.75").content.decode())
    assert anything == [world["faces"]["bob"][1].pk] + [f.pk for f in flagged[:59]]
    assert "No faces match this filter" in client.get(f"{url}?kind=low_norm").content.decode()
    # Nonsense filter values are ignored: every active face, a page of them.
    assert len(ids(client.get(f"{url}?kind=bogus&min_score=nan").content.decode())) == 60


def _bulk_remove(world, faces, user):
    result = faces_bulk_action(face_ids=[f.pk for f in faces], action="remove", user=user, dataset=world["dataset"],
                               from_identity_id=faces[0].identity_id)
    return result.batch


def test_history_offers_undo_batch_and_batch_undo_answers(client, world, user, django_user_model):
    bob_faces = world["faces"]["bob"]
    batch = _bulk_remove(world, bob_faces[2:5], user)
    client.force_login(user)
    ds = world["dataset"].pk
    html = client.get(f"/datasets/{ds}/history").content.decode()
    assert html.count(f'data-undo-batch="{batch}"') == 1 and f"?batch={batch}" in html
    filtered = client.get(f"/datasets/{ds}/history?batch={batch}").content.decode()
    assert "3 decisions by <bdi>reviewer</bdi>" in filtered
    assert len(re.findall(r'id="decision-\d+"', filtered)) == 3

    other = django_user_model.objects.create_user(username="colleague", password="pw-colleague-1")
    MembershipFactory(user=other, dataset=world["dataset"])
    labels.face_restore(face_id=bob_faces[3].pk, user=other)
    response = client.post(f"/datasets/{ds}/batches/{batch}/undo", {"batch": str(batch)}, **HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and 'id="history-list"' in body
    conflict = Decision.objects.get(batch=batch, face=bob_faces[3])
    assert ("Undid 2 decisions; 1 could not be undone (changed since). First: decision "
            f"#{conflict.pk}: The face was changed since this decision.") in body
    assert list(Face.objects.filter(pk__in=[f.pk for f in bob_faces[2:5]]).values_list("status", flat=True)) \
        == ["active"] * 3
    assert f'data-undo-batch="{batch}"' not in body  # nothing of it left to undo
    again = client.post(f"/datasets/{ds}/batches/{batch}/undo")
    assert again.status_code == 302 and again["Location"] == f"/datasets/{ds}/history?batch={batch}"
    assert client.get(f"/datasets/{ds}/batches/{batch}/undo").status_code == 405
    assert client.post(f"/datasets/{ds}/batches/not-a-uuid/undo").status_code == 404


def test_batch_undo_of_someone_elses_batch_changes_nothing(client, world, user, django_user_model):
    other = django_user_model.objects.create_user(username="colleague", password="pw-colleague-1")
    MembershipFactory(user=other, dataset=world["dataset"])
    batch = _bulk_remove(world, world["faces"]["bob"][:2], other)
    client.force_login(user)
    response = client.post(f"/datasets/{world['dataset'].pk}/batches/{batch}/undo", **HTMX)
    assert response.status_code == 200 and response["HX-Reswap"] == "none"
    assert "You took no decision in this batch." in response.content.decode()
    assert not Decision.objects.filter(action=Decision.Action.UNDO).exists()
