"""Security properties of the whole URL map, checked over whatever views exist.

The URL map is walked from the resolver and every route is filled with the ids of real
objects, so a view added later is covered without touching this file.
"""
import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import PathConverter
from rest_framework.authtoken.models import Token

from reviewapp.models import Decision, Flag, Job, Membership, SecondReview, Source
from tests.factories import (
    FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory, jpeg_bytes,
)

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("xss")</script>'
RAW_MARK = '<script>alert('
ESCAPED_MARK = "&lt;script&gt;alert("
NOT_LOGIN_PROTECTED = {"login", "logout"}  # the sign-in pages themselves


def _routes():
    """(url name, argument names) of every named route outside the Django admin."""
    found = []

    def walk(patterns):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                walk(pattern.url_patterns)
            elif isinstance(pattern, URLPattern):
                assert pattern.name, f"unnamed route {pattern.pattern}"
                found.append((pattern.name, tuple(pattern.pattern.regex.groupindex), pattern))

    walk(get_resolver().url_patterns)
    return found


ROUTES = _routes()
ROUTE_NAMES = [name for name, _, _ in ROUTES]


@pytest.fixture
def world(tmp_path):
    """A dataset whose names are hostile, with a real JPEG behind its first face."""
    (tmp_path / "img").mkdir()
    image = jpeg_bytes((10, 200, 30))
    (tmp_path / "img" / "a.jpg").write_bytes(image)
    source = SourceFactory(dataset__name=f"ds {HOSTILE}", root=str(tmp_path), format=Source.Format.FOLDER)
    identity = IdentityFactory(source=source, name=HOSTILE)
    other = IdentityFactory(source=source, name=f"other {HOSTILE}")
    face = FaceFactory(identity=identity, path="img/a.jpg", size=len(image))
    other_face = FaceFactory(identity=other)
    round_ = RoundFactory(dataset=source.dataset)
    flag = FlagFactory(round=round_, face=face, suggestion=Flag.Suggestion.RELABEL, suggested_identity=other,
                       evidence={"theta_y": 80.0, "theta_1": 50.0, "norm": 20.0, "nearest_name": HOSTILE})
    FlagFactory(round=round_, face=None, identity_a=identity, identity_b=other, kind=Flag.Kind.DUPLICATE_IDENTITY,
                suggestion=Flag.Suggestion.MERGE)
    decision = Decision.objects.create(dataset=source.dataset, actor=HOSTILE, action=Decision.Action.KEEP,
                                       face=other_face, identity=other, round=round_)
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=source.dataset)
    review = SecondReview.objects.create(dataset=source.dataset, flag=flag, first_decision=decision, first_answer="keep")
    values = {
        "dataset_id": source.dataset.pk, "face_id": face.pk, "round_id": round_.pk, "job_id": job.pk,
        "flag_id": flag.pk, "identity_id": identity.pk, "identity_a": identity.pk, "identity_b": other.pk,
        "decision_id": decision.pk, "kind": "noisy", "chart": "norms", "batch": "6f1c7a52-3f0e-4b8e-9a3c-1d2e3f4a5b6c",
        "review_id": review.pk,
    }
    api_objects = {"api-dataset": source.dataset.pk, "api-identity": identity.pk, "api-face": face.pk,
                   "api-flag": flag.pk, "api-decision": decision.pk, "api-round": round_.pk, "api-job": job.pk}
    return {"dataset": source.dataset, "face": face, "image": image, "values": values, "api": api_objects,
            "identity": identity, "flag": flag}


def url_of(name, args, world) -> str:
    kwargs = {}
    for arg in args:
        if arg == "pk":  # router routes: api-<thing>-<action>
            kwargs[arg] = world["api"][name.rsplit("-", 1)[0]]
        else:
            kwargs[arg] = world["values"][arg]
    return reverse(name, kwargs=kwargs)


@pytest.fixture
def member(world, django_user_model):
    """A dataset admin (so that admin pages render for the escaping checks)."""
    user = django_user_model.objects.create_user("member", password="pw-member-1")
    MembershipFactory(user=user, dataset=world["dataset"], role=Membership.Role.ADMIN)
    return user


def csrf_client(user) -> tuple[Client, str]:
    """A signed-in client that enforces CSRF like production, and its CSRF token (from the
    cookie a page sets, as htmx reads it from the page)."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.get(reverse("dataset-list"))
    assert response.status_code == 200
    return client, client.cookies[settings.CSRF_COOKIE_NAME].value


# -- login required everywhere -------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in ROUTE_NAMES if n not in NOT_LOGIN_PROTECTED])
def test_every_url_requires_a_login(name, world):
    args = next(a for n, a, _ in ROUTES if n == name)
    url = url_of(name, args, world)
    client = Client()
    for method in (client.get, client.post):
        response = method(url)
        if url.startswith("/api/"):
            assert response.status_code in (401, 403), (url, response.status_code)
        else:
            assert response.status_code == 302, (url, response.status_code)
            assert response["Location"].startswith(reverse("login")), url


def test_the_django_admin_requires_a_login():
    response = Client().get("/admin/")
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("name", [n for n, a, _ in ROUTES if a and n not in NOT_LOGIN_PROTECTED])
def test_signed_in_outsiders_get_404_for_every_object(name, world, django_user_model):
    """A user who is no member of the dataset learns nothing: every route naming one of its
    objects answers 404 (after a 405 for a GET to a POST-only route)."""
    outsider = django_user_model.objects.create_user("outsider")
    client = Client()
    client.force_login(outsider)
    url = url_of(name, next(a for n, a, _ in ROUTES if n == name), world)
    response = client.get(url)
    if response.status_code == 405:
        response = client.post(url, {"action": "confirm"})
    assert response.status_code == 404, (url, response.status_code)


# -- CSRF ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ROUTE_NAMES)
def test_posts_without_a_csrf_token_are_refused(name, world, member):
    client, _ = csrf_client(member)
    url = url_of(name, next(a for n, a, _ in ROUTES if n == name), world)
    # A form post, as a forged cross-site request would send it.
    response = client.post(url, "action=confirm", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 403, url


def test_htmx_posts_with_the_csrf_header_pass(world, member):
    client, token = csrf_client(member)
    flag = world["flag"]
    response = client.post(reverse("flag-decide", args=[flag.pk]), {"action": "reject"},
                           HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    assert response.status_code == 200, response.status_code
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.REJECTED


def test_api_posts_with_a_session_need_the_csrf_header(world, member):
    client, token = csrf_client(member)
    url = f"/api/flags/{world['flag'].pk}/decide/"
    assert client.post(url, {"action": "reject"}, content_type="application/json").status_code == 403
    response = client.post(url, {"action": "reject"}, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201, response.content


def test_api_posts_with_a_token_need_no_csrf(world, member):
    client = Client(enforce_csrf_checks=True)
    token = Token.objects.create(user=member)
    response = client.post(f"/api/flags/{world['flag'].pk}/decide/", {"action": "reject"},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 201, response.content


# -- escaping -----------------------------------------------------------------------------------------

def test_hostile_names_render_as_text_on_every_page(world, member):
    client = Client()
    client.force_login(member)
    checked, shown = [], set()
    for name, args, _ in ROUTES:
        if name in NOT_LOGIN_PROTECTED:
            continue
        url = url_of(name, args, world)
        for response in (client.get(url), client.get(url, HTTP_HX_REQUEST="true")):
            if response.status_code == 405 or not response["Content-Type"].startswith("text/html"):
                continue
            body = response.content.decode()
            assert RAW_MARK not in body, f"{url} shows a name unescaped"
            checked.append(url)
            if ESCAPED_MARK in body:
                shown.add(name)
    assert "dataset-list" in shown
    # Pages that exist and are about the identity must show its (escaped) name.
    for name in ("identity-detail", "pair-detail", "flag-card"):
        url = url_of(name, next(a for n, a, _ in ROUTES if n == name), world)
        if url in checked:
            assert name in shown, f"{url} does not show the identity name"


def test_hostile_names_in_the_api_are_json_strings(world, member):
    client = Client()
    client.force_login(member)
    body = client.get(f"/api/identities/{world['identity'].pk}/")
    assert body["Content-Type"] == "application/json"
    assert body.json()["name"] == HOSTILE


# -- image bytes only through the face id ------------------------------------------------------------

def test_no_route_takes_a_path():
    for name, _, pattern in ROUTES:
        converters = getattr(pattern.pattern, "converters", {})
        assert not any(isinstance(c, PathConverter) for c in converters.values()), name
        # Regex routes (the API router): every group is digits or one slash-free segment.
        for group in re.findall(r"\(\?P<\w+>([^)]*)\)", str(pattern.pattern)):
            assert group in ("[0-9]+", "[^/.]+"), (name, group)


@pytest.mark.parametrize("name", ["face-image", "face-thumbnail"])
def test_path_or_file_parameters_are_ignored(name, world, member, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    client = Client()
    client.force_login(member)
    url = reverse(name, args=[world["face"].pk])
    plain = client.get(url)
    assert plain.status_code == 200 and plain["Content-Type"].startswith("image/")
    for param in ("path", "file", "filename", "root"):
        for value in (str(secret), "../../../../etc/passwd"):
            response = client.get(url, {param: value})
            assert response.content == plain.content, (param, value)
    if name == "face-image":
        assert plain.content == world["image"]


def test_only_the_image_views_return_images(world, member):
    client = Client()
    client.force_login(member)
    for name, args, _ in ROUTES:
        if name in NOT_LOGIN_PROTECTED:
            continue
        response = client.get(url_of(name, args, world))
        kind = response.get("Content-Type", "")
        if kind.startswith("image/") and kind != "image/svg+xml":  # round charts are drawings
            assert name in ("face-image", "face-thumbnail"), name


# -- request size -------------------------------------------------------------------------------------

HUGE = b"action=confirm&pad=" + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024)


@pytest.mark.parametrize("name", [n for n in ROUTE_NAMES if not n.startswith("api-")])
def test_huge_form_posts_are_refused(name, world, member):
    client, token = csrf_client(member)
    url = url_of(name, next(a for n, a, _ in ROUTES if n == name), world)
    response = client.post(url, HUGE, content_type="application/x-www-form-urlencoded",
                           HTTP_X_CSRFTOKEN=token, HTTP_HX_REQUEST="true")
    assert response.status_code in (400, 413), (url, response.status_code)


@pytest.mark.parametrize("content_type, body", ids=["form", "json"], argvalues=[
    ("application/x-www-form-urlencoded", HUGE),
    ("application/json", b'{"action": "confirm", "pad": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'),
])
def test_huge_api_posts_are_refused(content_type, body, world, member):
    token = Token.objects.create(user=member)
    response = Client().post(f"/api/flags/{world['flag'].pk}/decide/", body, content_type=content_type,
                             HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code in (400, 413)
    assert Flag.objects.get(pk=world["flag"].pk).state == Flag.State.OPEN


def test_every_html_page_carries_a_content_security_policy(world, member):
    client = Client()
    client.force_login(member)
    pages = 0
    for name, args, _ in ROUTES:
        url = url_of(name, args, world)
        response = client.get(url)
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        policy = response["Content-Security-Policy"]
        assert "script-src 'self';" in policy and "object-src 'none'" in policy, url
        assert "frame-ancestors 'none'" in policy and "form-action 'self'" in policy, url
        pages += 1
    assert pages > 5
    assert "script-src 'self'" in Client().get("/accounts/login/")["Content-Security-Policy"]


def test_names_are_isolated_from_the_text_around_them(client, django_user_model):
    # A right-to-left override in a name must not turn the page's own text around it.
    from tests.factories import FaceFactory, IdentityFactory, MembershipFactory

    user = django_user_model.objects.create_user(username="iso", password="pw-iso-12345")
    identity = IdentityFactory(name="abc\u202edef", source__dataset__name="set\u202eone")
    FaceFactory(identity=identity)
    MembershipFactory(user=user, dataset=identity.dataset)
    client.force_login(user)
    listing = client.get("/").content.decode()
    assert "<bdi>set\u202eone</bdi>" in listing
    page = client.get(f"/identities/{identity.pk}/").content.decode()
    assert '<h1 class="identity-name"><bdi>abc\u202edef</bdi></h1>' in page
