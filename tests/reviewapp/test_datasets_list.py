"""The datasets list shows each dataset's open work (issue 11 point 6 h): faces, the latest
published round's open flags by kind, a running round's stage, and the user's held batch."""
import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from reviewapp.models import Flag, Membership, Round
from tests.factories import DatasetFactory, FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory


@pytest.fixture
def reviewer(db, django_user_model):
    return django_user_model.objects.create_user(username="rev", password="pw-rev-1")


def _dataset(user, name: str, *, faces: int = 3):
    dataset = DatasetFactory(name=name)
    MembershipFactory(user=user, dataset=dataset, role=Membership.Role.REVIEWER)
    identity = IdentityFactory(source__dataset=dataset)
    return dataset, [FaceFactory(identity=identity) for _ in range(faces)]


def _row(html: str, dataset) -> str:
    match = re.search(rf'<tr class="dataset-row" data-dataset="{dataset.pk}">(.*?)</tr>', html, re.S)
    assert match, f"no row for {dataset.name}"
    return re.sub(r"\s+", " ", match.group(1))


def test_each_dataset_shows_its_open_work(client, reviewer, django_user_model):
    busy, faces = _dataset(reviewer, "busy <one>", faces=6)
    old = RoundFactory(dataset=busy, number=1, finished_at=timezone.now())
    FlagFactory(round=old, face=faces[5])  # an older round's flag: not counted
    latest = RoundFactory(dataset=busy, number=2, finished_at=timezone.now())
    for face in faces[:3]:
        FlagFactory(round=latest, face=face, kind=Flag.Kind.NOISY)
    FlagFactory(round=latest, face=faces[3], kind=Flag.Kind.NEAR_DUPLICATE, suggestion="remove")
    FlagFactory(round=latest, face=faces[4], kind=Flag.Kind.HARD, suggestion="keep", state=Flag.State.REJECTED)
    RoundFactory(dataset=busy, number=3, status=Round.Status.TRAINING, progress={"stage": "training", "percent": 42.4})
    # Two of the noisy flags are the reviewer's batch; one more is someone else's, one expired.
    someone = django_user_model.objects.create_user(username="other", password="pw-other-1")
    noisy = list(Flag.objects.filter(round=latest, kind="noisy").order_by("pk"))
    Flag.objects.filter(pk__in=[noisy[0].pk, noisy[1].pk]).update(claimed_by=reviewer, claimed_at=timezone.now())
    Flag.objects.filter(pk=noisy[2].pk).update(claimed_by=someone, claimed_at=timezone.now())
    Flag.objects.filter(pk=Flag.objects.get(round=latest, kind="near_duplicate").pk).update(
        claimed_by=reviewer, claimed_at=timezone.now() - timedelta(days=1))
    quiet, _ = _dataset(reviewer, "quiet", faces=2)

    client.force_login(reviewer)
    response = client.get(reverse("dataset-list"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "busy &lt;one&gt;" in html and "<one>" not in html and "<bdi>busy &lt;one&gt;</bdi>" in html
    row = _row(html, busy)
    assert '<span class="num">6</span> active' in row
    chips = re.findall(r'<li class="kind-chip kind-(\w+)"><a href="([^"]+)"><span class="num">(\d+)</span> ([^<]+)</a>', row)
    assert chips == [("noisy", reverse("review-queue", args=[busy.pk, "noisy"]), "3", "Noisy"),
                     ("near_duplicate", reverse("review-queue", args=[busy.pk, "near_duplicate"]), "1",
                      "Near duplicate")]
    assert "Round 3</a>" in row and "status-training" in row and "42.4 %" in row
    assert '<span class="status status-training">Training</span>' in row  # the dataset page's label
    held = re.search(r'<td class="held">(.*?)</td>', row).group(1)
    assert f'<a href="{reverse("review-queue", args=[busy.pk, "noisy"])}">2 Noisy</a>' in held
    assert "Near duplicate" not in held  # the expired claim is not a batch any more

    quiet_row = _row(html, quiet)
    assert "no round published yet" in quiet_row and "—" in quiet_row


def test_a_finished_round_shows_its_status_label(client, reviewer):
    dataset, _ = _dataset(reviewer, "done")
    RoundFactory(dataset=dataset, number=1, finished_at=timezone.now())
    client.force_login(reviewer)
    row = _row(client.get(reverse("dataset-list")).content.decode(), dataset)
    assert '<span class="status status-published">Published</span>' in row


def test_the_list_costs_the_same_queries_for_one_dataset_or_many(client, reviewer, django_assert_max_num_queries):
    def fill(name):
        dataset, faces = _dataset(reviewer, name)
        round_ = RoundFactory(dataset=dataset, number=1, finished_at=timezone.now())
        FlagFactory(round=round_, face=faces[0])
        RoundFactory(dataset=dataset, number=2, status=Round.Status.MINING)

    fill("a")
    client.force_login(reviewer)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as one:
        assert client.get(reverse("dataset-list")).status_code == 200
    for name in ("b", "c", "d"):
        fill(name)
    with django_assert_max_num_queries(len(one.captured_queries)):
        html = client.get(reverse("dataset-list")).content.decode()
    assert html.count('class="dataset-row"') == 4


def test_a_reviewer_sees_only_their_datasets(client, reviewer):
    mine, _ = _dataset(reviewer, "mine")
    theirs = DatasetFactory(name="theirs")
    client.force_login(reviewer)
    html = client.get(reverse("dataset-list")).content.decode()
    assert "mine" in html and "theirs" not in html and reverse("dataset-detail", args=[theirs.pk]) not in html


def test_the_list_needs_a_login(client, db):
    response = client.get(reverse("dataset-list"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
