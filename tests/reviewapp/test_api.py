"""The JSON API's reads: authentication, membership limits, cursor pagination, filters."""
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from reviewapp.models import Decision, Flag, Job, Membership
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory

pytestmark = pytest.mark.django_db


@dataclass
class World:
    """One dataset with a reviewer, an admin, identities, faces, a round, flags and a decision."""

    dataset: object
    identity: object
    other_identity: object
    faces: list
    round: object
    flags: list
    decision: object
    job: object


def make_world(name="ds", identity_name="person") -> World:
    identity = IdentityFactory(name=identity_name, source__dataset__name=name)
    other = IdentityFactory(name=f"{identity_name}-other", source=identity.source)
    dataset = identity.dataset
    faces = [FaceFactory(identity=identity) for _ in range(3)] + [FaceFactory(identity=other)]
    round_ = RoundFactory(dataset=dataset)
    flags = [
        FlagFactory(round=round_, face=faces[0], score=0.9),
        FlagFactory(round=round_, face=faces[1], score=0.7, kind=Flag.Kind.HARD),
        FlagFactory(round=round_, face=faces[3], score=0.5, suggestion=Flag.Suggestion.RELABEL,
                    suggested_identity=identity),
        FlagFactory(round=round_, face=None, identity_a=identity, identity_b=other, score=0.3,
                    kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion=Flag.Suggestion.MERGE),
    ]
    decision = Decision.objects.create(dataset=dataset, actor="someone", action=Decision.Action.KEEP,
                                       face=faces[2], identity=identity, round=round_)
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset, params={"format": "list"})
    return World(dataset, identity, other, faces, round_, flags, decision, job)


def member(user, dataset, role=Membership.Role.REVIEWER):
    MembershipFactory(user=user, dataset=dataset, role=role)
    return user


def api(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


@pytest.fixture
def mine(db):
    return make_world("mine", "mine")


@pytest.fixture
def theirs(db):
    return make_world("theirs", "theirs")


LISTS = ["datasets", "identities", "faces", "flags", "decisions", "rounds", "jobs"]


def detail_urls(world: World) -> dict[str, str]:
    return {
        "datasets": f"/api/datasets/{world.dataset.pk}/",
        "identities": f"/api/identities/{world.identity.pk}/",
        "faces": f"/api/faces/{world.faces[0].pk}/",
        "flags": f"/api/flags/{world.flags[0].pk}/",
        "decisions": f"/api/decisions/{world.decision.pk}/",
        "rounds": f"/api/rounds/{world.round.pk}/",
        "jobs": f"/api/jobs/{world.job.pk}/",
    }


@pytest.mark.parametrize("name", LISTS)
def test_anonymous_requests_are_refused_not_redirected(name, mine):
    for url in (f"/api/{name}/", detail_urls(mine)[name]):
        response = APIClient().get(url)
        assert response.status_code in (401, 403), url
        assert "Location" not in response


def test_token_authentication_works_without_a_session(mine, user):
    member(user, mine.dataset)
    token = Token.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert ids(client.get("/api/datasets/")) == [mine.dataset.pk]
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert client.get("/api/datasets/").status_code in (401, 403)


def test_session_authentication_works(client, mine, user):
    member(user, mine.dataset)
    client.force_login(user)
    response = client.get("/api/faces/")
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(mine.faces)


def test_lists_show_only_the_datasets_the_user_is_a_member_of(mine, theirs, user):
    member(user, mine.dataset)
    client = api(user)
    assert ids(client.get("/api/datasets/")) == [mine.dataset.pk]
    assert set(ids(client.get("/api/identities/"))) == {mine.identity.pk, mine.other_identity.pk}
    assert set(ids(client.get("/api/faces/"))) == {f.pk for f in mine.faces}
    assert set(ids(client.get("/api/flags/"))) == {f.pk for f in mine.flags}
    assert ids(client.get("/api/decisions/")) == [mine.decision.pk]
    assert ids(client.get("/api/rounds/")) == [mine.round.pk]
    # Jobs are admin work: a reviewer sees none, the dataset's admin sees its jobs.
    assert ids(client.get("/api/jobs/")) == []
    Membership.objects.filter(user=user).update(role=Membership.Role.ADMIN)
    assert ids(client.get("/api/jobs/")) == [mine.job.pk]


def test_filtering_by_another_dataset_shows_nothing(mine, theirs, user):
    member(user, mine.dataset)
    client = api(user)
    for name in ("identities", "faces", "flags", "decisions", "rounds"):
        assert ids(client.get(f"/api/{name}/", {"dataset": theirs.dataset.pk})) == [], name


@pytest.mark.parametrize("name", LISTS)
def test_objects_of_other_datasets_are_404(name, mine, theirs, user):
    member(user, mine.dataset, Membership.Role.ADMIN)
    client = api(user)
    assert client.get(detail_urls(mine)[name]).status_code == 200
    assert client.get(detail_urls(theirs)[name]).status_code == 404


def test_staff_see_every_dataset(mine, theirs, staff):
    assert set(ids(api(staff).get("/api/datasets/"))) == {mine.dataset.pk, theirs.dataset.pk}
    assert [row["role"] for row in api(staff).get("/api/datasets/").json()["results"]] == ["admin", "admin"]


def test_dataset_carries_the_users_role(mine, user):
    member(user, mine.dataset)
    assert api(user).get("/api/datasets/").json()["results"][0]["role"] == "reviewer"
    assert api(user).get(f"/api/datasets/{mine.dataset.pk}/").json()["role"] == "reviewer"


def test_faces_carry_image_urls_not_bytes(mine, user):
    member(user, mine.dataset)
    face = mine.faces[0]
    body = api(user).get(f"/api/faces/{face.pk}/").json()
    assert body["image_url"] == f"/faces/{face.pk}/image"
    assert body["thumbnail_url"] == f"/faces/{face.pk}/thumbnail"
    assert body["identity"] == mine.identity.pk and body["status"] == "active"
    assert "root" not in body


def test_hostile_names_come_back_as_plain_strings(user):
    hostile = '<script>alert("x")</script>'
    world = make_world("hostile", hostile)
    member(user, world.dataset)
    response = api(user).get(f"/api/identities/{world.identity.pk}/")
    assert response["Content-Type"] == "application/json"
    assert response.json()["name"] == hostile


def _walk(client, url, params):
    """Every page of a list, following `next`; the rows in order."""
    rows, pages = [], 0
    response = client.get(url, params)
    while True:
        pages += 1
        body = response.json()
        assert "count" not in body  # no COUNT(*) over big tables
        rows.extend(body["results"])
        if not body["next"]:
            return rows, pages
        assert "cursor" in parse_qs(urlparse(body["next"]).query)
        response = client.get(body["next"])


def test_flags_page_highest_score_first_by_cursor(mine, user):
    member(user, mine.dataset)
    extra = [FlagFactory(round=mine.round, face=mine.faces[2], score=0.7) for _ in range(3)]  # ties
    rows, pages = _walk(api(user), "/api/flags/", {"page_size": 2})
    assert pages == 4
    expected = sorted(mine.flags + extra, key=lambda f: (-f.score, -f.pk))
    assert [r["id"] for r in rows] == [f.pk for f in expected]


def test_decisions_page_newest_first_by_cursor(mine, user):
    member(user, mine.dataset)
    more = [Decision.objects.create(dataset=mine.dataset, actor="x", action="keep") for _ in range(4)]
    rows, pages = _walk(api(user), "/api/decisions/", {"page_size": 2})
    assert pages == 3
    assert [r["id"] for r in rows] == sorted([mine.decision.pk] + [d.pk for d in more], reverse=True)


def test_flag_filters(mine, user):
    member(user, mine.dataset)
    client = api(user)
    noisy, hard, relabel, pair = mine.flags
    assert ids(client.get("/api/flags/", {"kind": "hard"})) == [hard.pk]
    assert ids(client.get("/api/flags/", {"round": mine.round.pk, "kind": "noisy"})) == [noisy.pk, relabel.pk]
    assert ids(client.get("/api/flags/", {"identity": mine.other_identity.pk})) == [relabel.pk, pair.pk]
    assert ids(client.get("/api/flags/", {"face": mine.faces[0].pk})) == [noisy.pk]
    Flag.objects.filter(pk=hard.pk).update(state=Flag.State.REJECTED)
    assert ids(client.get("/api/flags/", {"state": "rejected"})) == [hard.pk]
    assert len(ids(client.get("/api/flags/", {"state": "open"}))) == 3


def test_other_filters(mine, user, django_user_model):
    member(user, mine.dataset)
    client = api(user)
    mine_decision = Decision.objects.create(dataset=mine.dataset, actor="reviewer", user=user,
                                            action=Decision.Action.REMOVE, face=mine.faces[0])
    assert ids(client.get("/api/decisions/", {"user": user.pk})) == [mine_decision.pk]
    assert ids(client.get("/api/decisions/", {"action": "keep"})) == [mine.decision.pk]
    assert ids(client.get("/api/decisions/", {"round": mine.round.pk})) == [mine.decision.pk]
    assert set(ids(client.get("/api/faces/", {"identity": mine.other_identity.pk}))) == {mine.faces[3].pk}
    assert ids(client.get("/api/identities/", {"name": mine.identity.name})) == [mine.identity.pk]
    mine.other_identity.merged_into = mine.identity
    mine.other_identity.save()
    assert ids(client.get("/api/identities/", {"merged": "true"})) == [mine.other_identity.pk]
    assert ids(client.get("/api/rounds/", {"status": "published"})) == [mine.round.pk]
    assert ids(client.get("/api/rounds/", {"status": "queued"})) == []


@pytest.mark.parametrize("url, params", [
    ("/api/flags/", {"kind": "bogus"}),
    ("/api/flags/", {"dataset": "1 OR 1=1"}),
    ("/api/decisions/", {"action": "drop"}),
    ("/api/faces/", {"identity": "x"}),
])
def test_bad_filter_values_are_400(url, params, mine, user):
    member(user, mine.dataset)
    assert api(user).get(url, params).status_code == 400


def test_a_forged_cursor_is_404_not_500(mine, user):
    member(user, mine.dataset)
    assert api(user).get("/api/flags/", {"cursor": "not-base64!"}).status_code == 404


def test_non_numeric_ids_do_not_resolve(mine, user):
    member(user, mine.dataset)
    assert api(user).get("/api/faces/abc/").status_code == 404


@pytest.mark.parametrize("name", LISTS)
def test_list_queries_do_not_grow_with_the_page(name, mine, user, django_assert_max_num_queries):
    """A page costs a fixed handful of queries (authentication, the page, a role annotation),
    not one per row."""
    member(user, mine.dataset, Membership.Role.ADMIN)
    for i in range(3):
        make_world(f"not-theirs-{i}", f"stranger-{i}")
        world = make_world(f"extra-{i}", f"extra-{i}")
        member(user, world.dataset, Membership.Role.ADMIN)
    client = api(user)
    with django_assert_max_num_queries(3):
        response = client.get(f"/api/{name}/", {"page_size": 100})
    assert len(response.json()["results"]) >= 4


def test_flags_carry_thumbnail_urls_of_their_faces(mine, user):
    member(user, mine.dataset)
    rows = {row["id"]: row for row in api(user).get("/api/flags/").json()["results"]}
    face_flag, pair_flag = mine.flags[0], mine.flags[3]
    assert rows[face_flag.pk]["face_thumbnail_url"] == f"/faces/{face_flag.face_id}/thumbnail"
    assert rows[face_flag.pk]["dataset"] == mine.dataset.pk
    assert rows[pair_flag.pk]["face_thumbnail_url"] is None
    assert (rows[pair_flag.pk]["identity_a"], rows[pair_flag.pk]["identity_b"]) == (
        mine.identity.pk, mine.other_identity.pk)
