"""The dataset page, rounds (start, progress, cancel, charts), imports, exports and job
downloads over HTTP: who may do what, and what each answer says."""
import os
import re

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from reviewapp import queueing
from reviewapp.models import Dataset, Flag, Job, Membership, Round
from reviewapp.services.labels import face_relabel, face_remove
from tests.factories import (
    DatasetFactory, FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory,
)

SUMMARY = {
    "faces": 6,
    "angles": {"source": "head", "counted": "all", "theta_y": [30.0, 50.0, 70.0], "theta_1": [80.0, 55.0, 40.0],
               "band": [0, 1, 2], "counts": {"easy": 1, "hard": 1, "noisy": 1}, "margin_deg": 28.6,
               "margin_m1_deg": 8.6},
    "norms": {"edges": [1.0, 2.0, 3.0], "counts": [2, 4], "below": 0, "above": 0, "median": 2.2,
              "threshold": 1.5, "faces": 6},
    "flags": {"noisy": 3, "hard": 1, "low_norm": 0, "duplicate_identity": 1, "near_duplicate": 0},
    "previous": {"round": 1, "flags": {"noisy": 5, "hard": 1}},
}


@pytest.fixture
def dataset(db):
    return DatasetFactory(name="set <one>")


@pytest.fixture
def admin(dataset, django_user_model):
    user = django_user_model.objects.create_user(username="admin1", password="pw-admin-1")
    MembershipFactory(user=user, dataset=dataset, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def reviewer(dataset, django_user_model):
    user = django_user_model.objects.create_user(username="rev1", password="pw-rev-1")
    MembershipFactory(user=user, dataset=dataset, role=Membership.Role.REVIEWER)
    return user


@pytest.fixture
def queued(monkeypatch):
    """Round and job messages caught instead of sent to a broker."""
    sent = {"rounds": [], "jobs": []}
    monkeypatch.setattr(queueing, "round_send", lambda round_id, countdown=None: sent["rounds"].append(round_id))
    monkeypatch.setattr(queueing, "job_send", lambda job_id: sent["jobs"].append(job_id))
    return sent


# -- access -----------------------------------------------------------------------------------------

def test_every_page_needs_a_login(client, dataset):
    round_ = RoundFactory(dataset=dataset)
    for url in (reverse("dataset-detail", args=[dataset.pk]), reverse("round-detail", args=[round_.pk]),
                reverse("round-progress", args=[round_.pk]), reverse("round-chart", args=[round_.pk, "angles"]),
                reverse("dataset-import"), reverse("dataset-members", args=[dataset.pk])):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    response = client.post(reverse("round-start", args=[dataset.pk]), {"method": "arcface"})
    assert response.status_code == 302 and Round.objects.count() == 1


def test_a_reviewer_gets_404_on_every_admin_action(client, dataset, reviewer, queued):
    round_ = RoundFactory(dataset=dataset, status=Round.Status.TRAINING)
    job = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset, status=Job.Status.DONE, file="x.txt")
    client.force_login(reviewer)
    for method, url, data in (
        ("post", reverse("round-start", args=[dataset.pk]), {"method": "arcface"}),
        ("post", reverse("round-cancel", args=[round_.pk]), {}),
        ("post", reverse("export-start", args=[dataset.pk]), {"format": "list"}),
        ("get", reverse("dataset-members", args=[dataset.pk]), {}),
        ("post", reverse("dataset-members", args=[dataset.pk]), {"username": "rev1", "role": "admin"}),
        ("get", reverse("job-detail", args=[job.pk]), {}),
        ("get", reverse("job-download", args=[job.pk]), {}),
        ("get", reverse("dataset-import"), {}),
    ):
        assert getattr(client, method)(url, data).status_code == 404, url
    round_.refresh_from_db()
    assert round_.status == Round.Status.TRAINING and Round.objects.count() == 1
    assert Job.objects.count() == 1 and queued == {"rounds": [], "jobs": []}
    assert Membership.objects.get(user=reviewer).role == Membership.Role.REVIEWER


def test_other_datasets_are_404(client, admin):
    other = RoundFactory(dataset=DatasetFactory())
    client.force_login(admin)
    assert client.get(reverse("dataset-detail", args=[other.dataset_id])).status_code == 404
    assert client.get(reverse("round-detail", args=[other.pk])).status_code == 404
    assert client.get(reverse("round-chart", args=[other.pk, "flags"])).status_code == 404


# -- the dataset page -------------------------------------------------------------------------------

def _dataset_with_flags(dataset, user):
    identity = IdentityFactory(source__dataset=dataset, name="<script>x</script>")
    other = IdentityFactory(source=identity.source)
    faces = [FaceFactory(identity=identity) for _ in range(8)] + [FaceFactory(identity=other) for _ in range(2)]
    round_ = RoundFactory(dataset=dataset, number=1, status=Round.Status.PUBLISHED, finished_at=timezone.now())
    for face in faces[:4]:
        FlagFactory(round=round_, face=face, kind=Flag.Kind.NOISY)
    FlagFactory(round=round_, face=faces[4], kind=Flag.Kind.HARD, suggestion="keep")
    decided = FlagFactory(round=round_, face=faces[5], kind=Flag.Kind.NOISY, state=Flag.State.REJECTED)
    FlagFactory(round=round_, face=faces[6], kind=Flag.Kind.NOISY, state=Flag.State.CONFIRMED)
    face_remove(face_id=faces[6].pk, user=user)
    face_relabel(face_id=faces[7].pk, identity_id=other.pk, user=user)
    return round_, decided


def test_dataset_page_counts_and_estimates_noise(client, dataset, reviewer, django_assert_max_num_queries):
    _dataset_with_flags(dataset, reviewer)
    client.force_login(reviewer)
    url = reverse("dataset-detail", args=[dataset.pk])
    response = client.get(url)
    assert response.status_code == 200
    stats = response.context["stats"]
    assert (stats.faces, stats.active, stats.removed, stats.relabelled, stats.identities) == (10, 9, 1, 1, 2)
    assert stats.open_flags == {"noisy": 4, "hard": 1}
    # One of two decided noisy flags was noise: 4 open x 0.5 + 1 removed + 1 relabelled, over 10 faces.
    assert stats.confirmation_rate == 0.5 and stats.noise_rate == pytest.approx(0.4)
    html = response.content.decode()
    assert "40 %" in html and "40.0 %" not in html and "How the noise rate is estimated" in html
    assert reverse("review-queue", args=[dataset.pk, "noisy"]) in html
    assert reverse("history", args=[dataset.pk]) in html
    assert "set &lt;one&gt;" in html and "<one>" not in html
    assert "Start a round" not in html and "Export the cleaned dataset" not in html  # reviewer
    with django_assert_max_num_queries(12):  # counts come from the cache the first view filled
        assert client.get(url).status_code == 200


def test_counts_change_with_the_next_decision(client, dataset, reviewer):
    round_, _ = _dataset_with_flags(dataset, reviewer)
    client.force_login(reviewer)
    url = reverse("dataset-detail", args=[dataset.pk])
    assert client.get(url).context["stats"].removed == 1
    face = Flag.objects.filter(round=round_, state="open", kind="noisy").first().face
    face_remove(face_id=face.pk, user=reviewer)
    assert client.get(url).context["stats"].removed == 2


def test_admin_sees_round_and_export_forms_and_dataset_list_links(client, dataset, admin):
    client.force_login(admin)
    html = client.get(reverse("dataset-detail", args=[dataset.pk])).content.decode()
    assert "Start a round" in html and "Export the cleaned dataset" in html
    assert reverse("dataset-members", args=[dataset.pk]) in html
    listing = client.get(reverse("dataset-list")).content.decode()
    assert reverse("dataset-detail", args=[dataset.pk]) in listing
    assert reverse("dataset-import") in listing  # an admin may import


# -- imports ----------------------------------------------------------------------------------------

@pytest.fixture
def data_root(settings, tmp_path):
    root = tmp_path / "data"
    (root / "faces" / "ann").mkdir(parents=True)
    settings.DATA_ROOT = root
    return root


@pytest.mark.parametrize("path", ["../outside", "/etc", "faces/../../outside", "escape", "missing"])
def test_import_outside_the_data_root_is_refused_and_creates_nothing(client, admin, data_root, queued, path):
    (data_root.parent / "outside").mkdir()
    os.symlink(data_root.parent / "outside", data_root / "escape")
    client.force_login(admin)
    response = client.post(reverse("dataset-import"), {"path": path, "name": "new", "format": "folder"})
    assert response.status_code == 400
    text = response.content.decode()
    reason = {"../outside": "is not allowed", "/etc": "outside the data root", "faces/../../outside": "is not allowed",
              "escape": "symbolic link", "missing": "does not exist"}[path]
    assert reason in text and str(data_root) in text
    assert not Job.objects.exists() and not Dataset.objects.filter(name="new").exists() and queued["jobs"] == []


def test_import_inside_the_data_root_queues_a_job(client, admin, data_root, queued, django_capture_on_commit_callbacks):
    client.force_login(admin)
    page = client.get(reverse("dataset-import")).content.decode()
    assert str(data_root) in page  # the form says where imports come from
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("dataset-import"), {"path": "faces", "name": "new", "format": "folder"})
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("job-detail", args=[job.pk])
    assert job.params == {"path": str((data_root / "faces").resolve()), "name": "new", "format": "folder"}
    assert queued["jobs"] == [job.pk] and job.created_by == admin
    assert "Waiting for a worker" in client.get(response["Location"]).content.decode()


def test_import_refuses_a_taken_name(client, admin, dataset, data_root, queued):
    client.force_login(admin)
    response = client.post(reverse("dataset-import"), {"path": "faces", "name": dataset.name, "format": "folder"})
    assert response.status_code == 400 and "already exists" in response.content.decode()
    assert not Job.objects.exists()


# -- rounds -----------------------------------------------------------------------------------------

def test_start_round_creates_it_enqueues_and_refuses_a_second(client, dataset, admin, queued,
                                                             django_capture_on_commit_callbacks):
    client.force_login(admin)
    url = reverse("round-start", args=[dataset.pk])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"method": "subcenter", "epochs": "2", "config": '{"mining": {"seed": 3}}'})
    round_ = Round.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("round-detail", args=[round_.pk])
    assert (round_.method, round_.status, round_.created_by) == ("subcenter", "queued", admin)
    assert round_.config == {"epochs": 2, "mining": {"seed": 3}}
    assert queued["rounds"] == [round_.pk]

    with django_capture_on_commit_callbacks(execute=True):
        second = client.post(url, {"method": "arcface"})
    assert second.status_code == 409 and "already under way" in second.content.decode()
    assert Round.objects.count() == 1 and queued["rounds"] == [round_.pk]


@pytest.mark.parametrize("config, message", [
    ("{epochs: 1}", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"epochs": 0}', "at least 1"),
    ('{"no_such_setting": 1}', "unknown config key"),
    ('{"data": {"path": "/etc"}}', "cannot be set from the browser"),
])
def test_start_round_refuses_bad_settings_with_the_reason(client, dataset, admin, queued, config, message):
    client.force_login(admin)
    response = client.post(reverse("round-start", args=[dataset.pk]), {"method": "arcface", "config": config})
    assert response.status_code == 400 and message in response.content.decode()
    assert not Round.objects.exists()


def test_embeddings_round_reads_only_inside_the_data_root(client, dataset, admin, data_root, queued):
    np.save(data_root / "emb.npy", np.ones((2, 4), dtype=np.float32))
    outside = data_root.parent / "emb.npy"
    np.save(outside, np.ones((2, 4), dtype=np.float32))
    client.force_login(admin)
    url = reverse("round-start", args=[dataset.pk])
    for path in (str(outside), "../emb.npy"):
        response = client.post(url, {"method": "embeddings", "embeddings": path})
        assert response.status_code == 400, path
        assert "data root" in response.content.decode()
    assert not Round.objects.exists()
    assert client.post(url, {"method": "embeddings", "embeddings": "emb.npy"}).status_code == 302
    assert Round.objects.get().config["embeddings"] == str((data_root / "emb.npy").resolve())


def test_progress_fragment_polls_while_running_and_stops_when_finished(client, dataset, reviewer):
    round_ = RoundFactory(dataset=dataset, status=Round.Status.TRAINING, heartbeat_at=timezone.now(),
                          progress={"stage": "training", "percent": 42.5, "samples_per_s": 812.3, "eta_s": 130})
    client.force_login(reviewer)
    url = reverse("round-progress", args=[round_.pk])
    running = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 2s"' in running and 'aria-valuenow="42.5"' in running
    assert "2 min 10 s" in running and "812.3" in running
    assert "Cancel round" not in running  # reviewers cannot cancel

    Round.objects.filter(pk=round_.pk).update(status=Round.Status.PUBLISHED, summary=SUMMARY,
                                              progress={"flags": 5, "percent": 100.0}, finished_at=timezone.now())
    finished = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in finished and "Published" in finished and "5 flags" in finished
    assert 'id="round-charts"' in finished and 'hx-swap-oob="true"' in finished
    assert reverse("round-chart", args=[round_.pk, "angles"]) in finished


def test_cancel_stops_the_round_and_answers_without_polling(client, dataset, admin):
    round_ = RoundFactory(dataset=dataset, status=Round.Status.MINING, progress={"stage": "mining"})
    client.force_login(admin)
    url = reverse("round-cancel", args=[round_.pk])
    page = client.get(reverse("round-detail", args=[round_.pk])).content.decode()
    assert "Cancel round" in page and url in page
    response = client.post(url, HTTP_HX_REQUEST="true")
    round_.refresh_from_db()
    assert round_.status == Round.Status.CANCELLED and "admin1" in round_.error
    text = response.content.decode()
    assert "hx-trigger" not in text and "Cancelled" in text and 'id="messages"' in text
    again = client.post(url)  # nothing left to cancel: a message, not an error page
    assert again.status_code == 302
    assert "Nothing to cancel" in client.get(again["Location"]).content.decode()


def test_charts_are_svg_with_a_summary_and_a_placeholder_without(client, dataset, reviewer):
    published = RoundFactory(dataset=dataset, number=2, summary=SUMMARY, finished_at=timezone.now())
    bare = RoundFactory(dataset=dataset, number=3, summary={})
    running = RoundFactory(dataset=DatasetFactory(), status=Round.Status.TRAINING)
    MembershipFactory(user=reviewer, dataset=running.dataset)
    client.force_login(reviewer)
    for chart in ("angles", "norms", "flags", "change"):
        response = client.get(reverse("round-chart", args=[published.pk, chart]))
        assert response.status_code == 200 and response["Content-Type"] == "image/svg+xml"
        body = response.content.decode()
        assert "<svg" in body and "<path" in body and "<script" not in body
        assert "default-src 'none'" in response["Content-Security-Policy"]
    assert "against round 1" in client.get(reverse("round-chart", args=[published.pk, "change"])).content.decode()
    placeholder = client.get(reverse("round-chart", args=[bare.pk, "angles"]))
    assert placeholder.status_code == 200 and "without chart data" in placeholder.content.decode()
    waiting = client.get(reverse("round-chart", args=[running.pk, "norms"])).content.decode()
    assert "when the round publishes" in waiting
    assert client.get(reverse("round-chart", args=[published.pk, "nope"])).status_code == 404


def test_round_page_shows_flags_per_kind_with_the_change(client, dataset, reviewer):
    round_ = RoundFactory(dataset=dataset, number=2, summary=SUMMARY, finished_at=timezone.now(),
                          progress={"flags": 5})
    client.force_login(reviewer)
    html = client.get(reverse("round-detail", args=[round_.pk])).content.decode()
    assert "hx-trigger" not in html  # a finished round does not poll
    assert '<span class="down">-2</span>' in html  # noisy 5 -> 3
    assert f"{reverse('review-queue', args=[dataset.pk, 'noisy'])}?round=2" in html


# -- exports and downloads --------------------------------------------------------------------------

def test_export_start_queues_a_job_and_htmx_gets_its_polling_fragment(client, dataset, admin, queued,
                                                                     django_capture_on_commit_callbacks):
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("export-start", args=[dataset.pk]), {"format": "recordio"},
                               HTTP_HX_REQUEST="true")
    job = Job.objects.get()
    assert (job.kind, job.params, job.dataset) == ("export", {"format": "recordio"}, dataset)
    assert queued["jobs"] == [job.pk]
    assert 'hx-trigger="every 2s"' in response.content.decode()
    bad = client.post(reverse("export-start", args=[dataset.pk]), {"format": "zip"})
    assert bad.status_code == 400 and Job.objects.count() == 1


def test_download_is_by_job_id_and_only_for_its_dataset_admins(client, dataset, admin, settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    other = DatasetFactory()
    theirs = Job.objects.create(kind=Job.Kind.EXPORT, dataset=other, status=Job.Status.DONE,
                                file=f"{1}/x.txt", result={"files": ["1/x.txt"]})
    (tmp_path / "exports" / str(theirs.pk)).mkdir(parents=True)
    (tmp_path / "exports" / str(theirs.pk) / "x.txt").write_text("secret\n")
    Job.objects.filter(pk=theirs.pk).update(file=f"{theirs.pk}/x.txt", result={"files": [f"{theirs.pk}/x.txt"]})
    mine = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset, status=Job.Status.RUNNING)
    escaping = Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset, status=Job.Status.DONE,
                                  file=f"{theirs.pk}/x.txt", result={"files": [f"{theirs.pk}/x.txt"]})
    client.force_login(admin)
    assert client.get(reverse("job-download", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("job-detail", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("job-download", args=[mine.pk])).status_code == 404  # not done
    assert client.get(reverse("job-download", args=[escaping.pk])).status_code == 404  # not its own folder
    assert client.get(reverse("job-download", args=[escaping.pk]) + "?part=x").status_code == 404


@pytest.mark.parametrize("method, skipped", [("pretrained", ["training"]), ("embeddings", ["training", "extracting"]),
                                             ("robustface", [])])
def test_round_page_strikes_out_the_stages_a_method_does_not_need(client, dataset, reviewer, method, skipped):
    round_ = RoundFactory(dataset=dataset, method=method, status=Round.Status.MINING, heartbeat_at=timezone.now())
    client.force_login(reviewer)
    html = client.get(reverse("round-detail", args=[round_.pk])).content.decode()
    struck = re.findall(r'<li class="stage skipped"[^>]*>(\w+)</li>', html)
    assert struck == skipped
    assert '<li class="stage current">mining</li>' in html


def test_round_page_says_how_a_cross_fitted_round_judged(client, dataset, reviewer):
    note = {"folds": 2, "median_faces_per_identity": 5.0, "median_faces_learned": 2.5}
    round_ = RoundFactory(dataset=dataset, method="robustface", progress={"crossfit": note})
    client.force_login(reviewer)
    html = client.get(reverse("round-detail", args=[round_.pk])).content.decode()
    assert "Cross-fitted: 2 models" in html
    assert "a median of 5 faces, so each model learned an identity from about 2.5" in html
    plain = RoundFactory(dataset=dataset, method="pretrained")
    assert "Cross-fitted" not in client.get(reverse("round-detail", args=[plain.pk])).content.decode()
