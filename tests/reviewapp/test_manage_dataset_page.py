"""The dataset page's counts and its live view of a running round (issue 11 point 6: b, c, d)."""
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from reviewapp.models import Flag, Membership, Round
from reviewapp.services.labels import face_relabel, identity_merge
from reviewapp.services.undo import decision_undo
from tests.factories import DatasetFactory, FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory
from tests.reviewapp.test_views_manage import admin, dataset, reviewer  # noqa: F401 (fixtures)


def _page(client, dataset):
    response = client.get(reverse("dataset-detail", args=[dataset.pk]))
    assert response.status_code == 200
    return response


# -- c: the "faces relabelled" tile ---------------------------------------------------------------

def test_relabelled_counts_faces_whose_original_identity_was_merged_later(client, dataset, reviewer):
    """The issue's case: 9 relabels, 8 shown. A face relabelled out of an identity that was
    merged afterwards is still a relabelled face; faces only moved by the merge are not."""
    ann = IdentityFactory(source__dataset=dataset, name="ann")
    bob, cid, dan = (IdentityFactory(source=ann.source, name=n) for n in ("bob", "cid", "dan"))
    faces = [FaceFactory(identity=ann) for _ in range(9)] + [FaceFactory(identity=bob) for _ in range(3)]
    for face in faces[:8]:
        face_relabel(face_id=face.pk, identity_id=cid.pk, user=reviewer)
    face_relabel(face_id=faces[9].pk, identity_id=dan.pk, user=reviewer)  # out of bob, merged below
    identity_merge(identity_id=bob.pk, into_id=ann.pk, user=reviewer)  # moves faces[10], faces[11]: no relabel
    client.force_login(reviewer)
    response = _page(client, dataset)
    assert response.context["stats"].relabelled == 9
    html = response.content.decode()
    tile = re.search(r'<div class="tile" title="([^"]*)"><span class="tile-value">9</span>'
                     r'<span class="tile-label">faces relabelled</span>', html)
    assert tile, "the tile shows 9 and says what it counts"
    assert "merges followed" in tile.group(1) and "moved only by a merge" in tile.group(1)


def test_relabelled_follows_merge_chains_and_undos(client, dataset, reviewer):
    ann = IdentityFactory(source__dataset=dataset, name="ann")
    bob, cid = IdentityFactory(source=ann.source, name="bob"), IdentityFactory(source=ann.source, name="cid")
    moved = FaceFactory(identity=bob)
    back_home = FaceFactory(identity=bob)
    relabel = face_relabel(face_id=back_home.pk, identity_id=cid.pk, user=reviewer)
    identity_merge(identity_id=bob.pk, into_id=cid.pk, user=reviewer)  # bob -> cid
    identity_merge(identity_id=cid.pk, into_id=ann.pk, user=reviewer)  # cid -> ann: bob's survivor is ann
    client.force_login(reviewer)
    # back_home sits on ann, the survivor of its original bob: the merges explain it.
    assert _page(client, dataset).context["stats"].relabelled == 0
    face_relabel(face_id=moved.pk, identity_id=IdentityFactory(source=ann.source).pk, user=reviewer)
    assert _page(client, dataset).context["stats"].relabelled == 1
    assert relabel.pk  # the first relabel stays in the audit; the count is about labels now


def test_an_undone_relabel_is_not_counted(client, dataset, reviewer):
    ann = IdentityFactory(source__dataset=dataset)
    bob = IdentityFactory(source=ann.source)
    face = FaceFactory(identity=ann)
    decision = face_relabel(face_id=face.pk, identity_id=bob.pk, user=reviewer)
    client.force_login(reviewer)
    assert _page(client, dataset).context["stats"].relabelled == 1
    decision_undo(decision_id=decision.pk, user=reviewer)
    assert _page(client, dataset).context["stats"].relabelled == 0


# -- d: kinds named and ordered by reviewapp.kinds ------------------------------------------------

def test_dataset_and_round_pages_name_kinds_as_the_queue_does(client, dataset, reviewer):
    face = FaceFactory(identity=IdentityFactory(source__dataset=dataset))
    round_ = RoundFactory(dataset=dataset, number=1, finished_at=timezone.now(),
                          summary={"flags": {"noisy": 2, "low_norm": 1, "near_duplicate": 1}})
    FlagFactory(round=round_, face=face, kind=Flag.Kind.LOW_NORM, suggestion="remove")
    FlagFactory(round=round_, face=FaceFactory(identity=face.identity), kind=Flag.Kind.NEAR_DUPLICATE,
                suggestion="remove")
    client.force_login(reviewer)
    html = _page(client, dataset).content.decode()
    assert "Low Norm" not in html and "Low norm" not in html
    labels = re.findall(r'<span class="kind-count">(\d+)</span><span class="kind-label">([^<]+)</span>', html)
    assert labels == [("0", "Noisy"), ("0", "Hard"), ("1", "Low quality"), ("1", "Near duplicate"),
                      ("0", "Duplicate identities")]
    page = client.get(reverse("round-detail", args=[round_.pk])).content.decode()
    rows = re.findall(r'<span class="dot kind-(\w+)"></span>([^<]+)</td>', page)
    assert rows == [("noisy", "Noisy"), ("hard", "Hard"), ("low_norm", "Low quality"),
                    ("near_duplicate", "Near duplicates"), ("duplicate_identity", "Duplicate identities")]
    chart = client.get(reverse("round-chart", args=[round_.pk, "flags"])).content.decode()
    assert "Low quality" in chart and "low norm" not in chart.lower()


# -- b: the first round while it runs -------------------------------------------------------------

def test_dataset_page_while_the_first_round_trains(client, dataset, admin):
    FaceFactory(identity=IdentityFactory(source__dataset=dataset))
    round_ = RoundFactory(dataset=dataset, number=1, status=Round.Status.TRAINING, heartbeat_at=timezone.now(),
                          progress={"stage": "training", "percent": 42.5, "eta_s": 130})
    client.force_login(admin)
    html = _page(client, dataset).content.decode()
    assert "No round has been published yet" not in html and "start one" not in html
    assert "0.0 %" not in html and "upper bound" not in html
    assert "Round 1 is training: 42.5 %" in html
    assert reverse("round-detail", args=[round_.pk]) in html
    live = reverse("dataset-live", args=[dataset.pk])
    assert f'hx-get="{live}"' in html and 'hx-trigger="every 2s"' in html


def test_start_panel_names_no_status_that_goes_stale(client, dataset, admin):
    # The start panel is not polled: it says the round runs, the live panel says how far.
    RoundFactory(dataset=dataset, number=1, status=Round.Status.QUEUED)
    client.force_login(admin)
    html = _page(client, dataset).content.decode()
    start = html[html.index('id="round-start"'):]
    assert "Round 1 is running:" in start and "Queued" not in start[:start.index("</section>")]


def test_dataset_page_while_the_first_round_is_queued(client, dataset, reviewer):
    RoundFactory(dataset=dataset, number=1, status=Round.Status.QUEUED)
    client.force_login(reviewer)
    html = _page(client, dataset).content.decode()
    assert "Round 1 is queued" in html and "No round has been published yet" not in html


def test_live_fragment_polls_while_the_round_runs_and_stops_with_fresh_counts(client, dataset, reviewer):
    face = FaceFactory(identity=IdentityFactory(source__dataset=dataset))
    round_ = RoundFactory(dataset=dataset, number=1, status=Round.Status.MINING, heartbeat_at=timezone.now(),
                          progress={"stage": "mining", "percent": 60.0})
    client.force_login(reviewer)
    url = reverse("dataset-live", args=[dataset.pk])
    running = client.get(url, HTTP_HX_REQUEST="true")
    assert running.status_code == 200
    text = running.content.decode()
    assert 'hx-trigger="every 2s"' in text and "Round 1 is mining: 60 %" in text
    assert 'aria-valuenow="60.0"' in text

    Round.objects.filter(pk=round_.pk).update(status=Round.Status.PUBLISHED, finished_at=timezone.now(),
                                              progress={"flags": 1, "percent": 100.0})
    FlagFactory(round=round_, face=face)
    done = client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in done
    assert "Round 1 published" in done and "1 flag to review:" in done
    # The counts, open flags and rounds table come with it out of band.
    assert done.count('hx-swap-oob="true"') >= 3
    assert re.search(r'<span class="kind-count">1</span><span class="kind-label">Noisy</span>', done)


def test_live_fragment_needs_a_login_and_membership(client, dataset, django_user_model):
    url = reverse("dataset-live", args=[dataset.pk])
    response = client.get(url)
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    stranger = django_user_model.objects.create_user(username="x", password="pw-x-1")
    client.force_login(stranger)
    assert client.get(url).status_code == 404


def test_no_round_yet_invites_an_admin_to_start_one(client, dataset, admin):
    client.force_login(admin)
    html = _page(client, dataset).content.decode()
    assert "No round has been published yet: start one to get flags to review." in html
    assert 'hx-trigger="every' not in html  # nothing runs, nothing polls


# -- f: export feedback at the button --------------------------------------------------------------

def test_the_export_form_answers_next_to_its_button_above_the_round_form(client, dataset, admin):
    client.force_login(admin)
    html = _page(client, dataset).content.decode()
    form = re.search(r'<form method="post" action="([^"]+)" class="form-row"\s+hx-post="[^"]+" '
                     r'hx-target="#export-result" hx-swap="innerHTML"\s+data-busy-label="Exporting…" '
                     r'data-busy-while="#export .job\[hx-trigger\]">', html)
    assert form and form.group(1) == reverse("export-start", args=[dataset.pk])
    # The result box follows the form directly, and the export panel comes before the long round form.
    assert re.search(r'</form>\s*<div id="export-result"', html)
    assert html.index('id="export"') < html.index('id="round-start"')


def test_the_export_panel_lists_only_exports(client, dataset, admin):
    from reviewapp.models import Job

    Job.objects.create(kind=Job.Kind.EXPORT, dataset=dataset, status=Job.Status.RUNNING, params={"format": "list"})
    Job.objects.create(kind=Job.Kind.IMPORT, dataset=dataset, status=Job.Status.DONE, params={"name": "x"})
    client.force_login(admin)
    html = _page(client, dataset).content.decode()
    panel = html[html.index('id="export"'):html.index('id="round-start"')]
    assert panel.count('class="job job-') == 1 and "Export (list)" in panel


# -- g: the start-round form's fields by method ----------------------------------------------------

def test_round_form_groups_fields_by_the_methods_that_take_them(client, dataset, admin):
    client.force_login(admin)
    html = _page(client, dataset).content.decode()
    training = re.search(r'<fieldset class="method-fields" data-methods="([^"]+)" aria-label="Training settings">'
                         r'(.*?)</fieldset>', html, re.S)
    embeddings = re.search(r'<fieldset class="method-fields" data-methods="([^"]+)" aria-label="Your embeddings">'
                           r'(.*?)</fieldset>', html, re.S)
    assert training.group(1).split() == ["arcface", "subcenter", "robustface", "comining"]
    assert 'name="epochs"' in training.group(2) and 'name="batch_size"' in training.group(2)
    assert 'name="embeddings"' not in training.group(2)
    assert embeddings.group(1) == "embeddings"
    for name in ("embeddings", "paths", "norms"):
        assert f'name="{name}"' in embeddings.group(2)
    # Without JavaScript every field shows, with the note; nothing is hidden server-side.
    assert "hidden" not in training.group(0) and "hidden" not in embeddings.group(0)
    assert 'class="hint method-note"' in html


def test_the_server_still_refuses_fields_of_another_method(client, dataset, admin, monkeypatch):
    from reviewapp import queueing

    monkeypatch.setattr(queueing, "round_send", lambda round_id, countdown=None: None)
    client.force_login(admin)
    response = client.post(reverse("round-start", args=[dataset.pk]), {"method": "pretrained", "epochs": "3"})
    assert response.status_code == 400
    assert "method &#x27;pretrained&#x27; takes only mining settings, not [&#x27;epochs&#x27;]" in response.content.decode()
    assert not Round.objects.exists()


# -- a: messages ---------------------------------------------------------------------------------------

def test_messages_sit_in_the_bottom_corner_and_the_script_dismisses_them():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    css = (root / "static/css/faceclean.css").read_text()
    rule = re.search(r"\.messages \{([^}]*)\}", css).group(1)
    assert "bottom: 1rem" in rule and "left: 1rem" in rule and "top:" not in rule
    js = (root / "static/js/faceclean.js").read_text()
    assert 'message.classList.contains("error")) return; // errors stay until closed' in js


def test_while_it_runs_the_poll_swaps_only_the_panel_and_the_rounds_table(client, dataset, admin):
    FaceFactory(identity=IdentityFactory(source__dataset=dataset))
    RoundFactory(dataset=dataset, number=1, finished_at=timezone.now())
    RoundFactory(dataset=dataset, number=2, status=Round.Status.EXTRACTING, progress={"percent": 12.0})
    client.force_login(admin)
    text = client.get(reverse("dataset-live", args=[dataset.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert re.findall(r'id="([\w-]+)"[^>]*hx-swap-oob="true"', text) == ["rounds"]
    assert "12 %" in text and "12.0 %" not in text  # the table's percent follows the round
