"""Queue-wide bulk decisions: the batch id every multi-flag action stamps, the filter over open
flags, the preview, the job that decides them (services.bulk) and its resumption."""
import os
import signal
import uuid
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from reviewapp.models import Dataset, Decision, Face, Flag, Job, Membership, SecondReview
from reviewapp.selectors.bulk import bulk_preview, selection_flags, selection_resolve
from reviewapp.services import bulk as bulk_service
from reviewapp.services import jobs
from reviewapp.services.bulk import BulkRefused, bulk_start
from reviewapp.services.faces import faces_bulk_action
from reviewapp.services.flags import LabelConflict, flag_decide, flags_decide_bulk
from tests.factories import (
    FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory,
)
from tests.worker import celery_worker, purge_queues, wait_for


@pytest.fixture
def world(db):
    source = SourceFactory()
    alice = IdentityFactory(source=source, name="alice")
    bob = IdentityFactory(source=source, name="bob")
    round_ = RoundFactory(dataset=source.dataset)
    return SimpleNamespace(source=source, dataset=source.dataset, alice=alice, bob=bob, round=round_)


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="second", password="pw-second-1")


def face_flag(world, *, kind=Flag.Kind.NOISY, suggestion=Flag.Suggestion.REMOVE, identity=None, suggested=None,
              round_=None, **extra):
    face = FaceFactory(identity=identity or world.alice)
    return FlagFactory(round=round_ or world.round, face=face, kind=kind, suggestion=suggestion,
                       suggested_identity=suggested, **extra)


# -- the batch id ---------------------------------------------------------------------------------

def test_a_single_decision_carries_no_batch_unless_given_one(world, user):
    alone = flag_decide(flag_id=face_flag(world).pk, action="confirm", user=user)
    batch = uuid.uuid4()
    given = flag_decide(flag_id=face_flag(world).pk, action="reject", user=user, batch=batch)
    assert alone.batch is None
    assert given.batch == batch


@pytest.mark.parametrize("action", ["confirm", "reject", "remove", "low_quality", "relabel"])
def test_the_page_bulk_stamps_one_fresh_batch_on_every_row(world, user, action):
    flags = [face_flag(world, suggestion=Flag.Suggestion.RELABEL, suggested=world.bob) for _ in range(3)]
    result = flags_decide_bulk(flag_ids=[f.pk for f in flags], action=action, user=user,
                               identity_id=world.bob.pk if action == "relabel" else None)
    again = flags_decide_bulk(flag_ids=[face_flag(world).pk], action="reject", user=user)
    assert len(result.decided) == 3 and isinstance(result.batch, uuid.UUID)
    rows = Decision.objects.filter(flag__in=flags)
    assert rows.count() == 3
    assert set(rows.values_list("batch", flat=True)) == {result.batch}
    assert again.batch != result.batch


def test_a_merge_in_a_page_bulk_carries_the_batch(world, user):
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY,
                       suggestion=Flag.Suggestion.MERGE, identity_a=world.alice, identity_b=world.bob)
    result = flags_decide_bulk(flag_ids=[pair.pk], action="confirm", user=user)
    assert Decision.objects.get(flag=pair).batch == result.batch
    assert Decision.objects.get(flag=pair).action == "merge"


def test_the_identity_page_bulk_stamps_one_batch(world, user):
    faces = [FaceFactory(identity=world.alice) for _ in range(2)]
    result = faces_bulk_action(face_ids=[f.pk for f in faces], action="relabel", user=user, dataset=world.dataset,
                               identity_id=world.bob.pk)
    assert isinstance(result.batch, uuid.UUID)
    assert list(Decision.objects.filter(face__in=faces).values_list("batch", flat=True)) == [result.batch] * 2


# -- the filter and the preview -------------------------------------------------------------------

def flags_by_score(world, scores, **extra):
    return [face_flag(world, score=s, **extra) for s in scores]


def test_the_round_defaults_to_the_latest_published(world):
    newer = RoundFactory(dataset=world.dataset, number=world.round.number + 1)
    RoundFactory(dataset=world.dataset, number=world.round.number + 2, status="training")
    assert selection_resolve(dataset_id=world.dataset.pk, kind="noisy").round_id == newer.pk
    assert selection_resolve(dataset_id=world.dataset.pk, kind="noisy", round_id=world.round.pk).round_id \
        == world.round.pk


def test_ids_of_another_dataset_are_field_errors(world):
    stranger = IdentityFactory()
    foreign_round = RoundFactory()
    with pytest.raises(ValueError) as raised:
        selection_resolve(dataset_id=world.dataset.pk, kind="noisy", round_id=foreign_round.pk,
                          identity_id=stranger.pk, suggested_identity_id=stranger.pk, min_score=0.9, max_score=0.1)
    assert raised.value.args[0] == {
        "round": "Not a published round of this dataset.",
        "identity": "Not an identity of this dataset.",
        "suggested_identity": "Not an identity of this dataset.",
        "max_score": "The highest score must not be below the lowest.",
    }


def test_the_filter_matches_open_flags_by_score_identity_and_suggestion(world, user):
    low, mid, high = flags_by_score(world, [0.2, 0.5, 0.9])
    on_bob = face_flag(world, identity=world.bob, score=0.6)
    suggests_bob = face_flag(world, suggested=world.bob, suggestion="relabel", score=0.7)
    decided = face_flag(world, score=0.95)
    flag_decide(flag_id=decided.pk, action="reject", user=user)
    face_flag(world, kind=Flag.Kind.HARD, score=0.99)  # another queue
    FlagFactory(face=FaceFactory(identity=world.alice), score=0.99)  # another round

    def match(**kwargs):
        selection = selection_resolve(dataset_id=world.dataset.pk, kind="noisy", round_id=world.round.pk, **kwargs)
        return set(selection_flags(selection).values_list("pk", flat=True))

    assert match() == {low.pk, mid.pk, high.pk, on_bob.pk, suggests_bob.pk}
    assert match(min_score=0.5, max_score=0.7) == {mid.pk, on_bob.pk, suggests_bob.pk}
    assert match(identity_id=world.bob.pk) == {on_bob.pk}
    assert match(suggested_identity_id=world.bob.pk) == {suggests_bob.pk}


def test_the_identity_filter_takes_either_side_of_a_pair(world):
    carol = IdentityFactory(source=world.source, name="carol")
    pair = FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                       identity_a=world.alice, identity_b=carol)
    twin = FlagFactory(round=world.round, face=FaceFactory(identity=world.bob), kind=Flag.Kind.NEAR_DUPLICATE,
                       other_face=FaceFactory(identity=carol))
    for kind, flag in (("duplicate_identity", pair), ("near_duplicate", twin)):
        selection = selection_resolve(dataset_id=world.dataset.pk, kind=kind, identity_id=carol.pk)
        assert list(selection_flags(selection)) == [flag]


def test_the_preview_counts_samples_the_highest_and_says_what_others_hold(world, user, other_user):
    flags = flags_by_score(world, [i / 20 for i in range(20)])
    Flag.objects.filter(pk__in=[flags[0].pk, flags[1].pk]).update(claimed_by=other_user, claimed_at=timezone.now())
    # An expired claim and the user's own batch do not hold anything back.
    Flag.objects.filter(pk=flags[2].pk).update(claimed_by=other_user, claimed_at=timezone.now() - timedelta(days=1))
    Flag.objects.filter(pk=flags[3].pk).update(claimed_by=user, claimed_at=timezone.now())
    preview = bulk_preview(selection=selection_resolve(dataset_id=world.dataset.pk, kind="noisy"), user=user)
    assert (preview.count, preview.held_by_others, preview.to_decide) == (20, 2, 18)
    assert [s.flag for s in preview.sample] == [f.pk for f in reversed(flags)][:12]
    assert preview.sample[0].score == 0.95 and preview.sample[0].face == flags[-1].face_id


# -- starting -------------------------------------------------------------------------------------

def test_start_queues_one_job_with_a_fresh_batch(world, user, django_capture_on_commit_callbacks):
    flags_by_score(world, [0.5, 0.6])
    selection = selection_resolve(dataset_id=world.dataset.pk, kind="noisy")
    with django_capture_on_commit_callbacks() as sent:
        job = bulk_start(dataset=world.dataset, selection=selection, action="remove", user=user, expected_count=2)
    assert len(sent) == 1  # sent to the broker after the commit
    assert (job.kind, job.status, job.dataset, job.created_by) == ("bulk_decide", "queued", world.dataset, user)
    assert job.params["selection"]["round_id"] == world.round.pk and job.params["action"] == "remove"
    assert uuid.UUID(job.params["batch"]) and job.params["matched"] == 2


@pytest.mark.parametrize("action, kind, identity, message", [
    ("remove", "noisy", None, "No open flag matches this filter: there is nothing to decide."),
    ("relabel", "hard", None, "Choose the identity to relabel to."),
    ("remove", "duplicate_identity", None, "Identity pairs can only be merged (confirm) or kept apart (reject)."),
    ("explode", "hard", None, "Unknown action 'explode'; choose one of confirm, reject, remove, low_quality, relabel."),
])
def test_start_refuses_with_a_reason(world, user, action, kind, identity, message):
    face_flag(world, kind=Flag.Kind.HARD)
    selection = selection_resolve(dataset_id=world.dataset.pk, kind=kind)
    with pytest.raises(BulkRefused) as refused:
        bulk_start(dataset=world.dataset, selection=selection, action=action, user=user, identity_id=identity)
    assert str(refused.value) == message
    assert not Job.objects.exists()


def test_start_refuses_when_far_more_match_than_were_previewed(world, user):
    flags_by_score(world, [0.1] * 12)
    selection = selection_resolve(dataset_id=world.dataset.pk, kind="noisy")
    with pytest.raises(BulkRefused, match="12 open flags match now, not the 10 you previewed: preview again"):
        bulk_start(dataset=world.dataset, selection=selection, action="remove", user=user, expected_count=10)
    assert bulk_start(dataset=world.dataset, selection=selection, action="remove", user=user, expected_count=11)
    assert bulk_start(dataset=world.dataset, selection=selection, action="remove", user=user, expected_count=40)


# -- running --------------------------------------------------------------------------------------

def start_and_run(world, user, action="remove", identity_id=None, **filters):
    selection = selection_resolve(dataset_id=world.dataset.pk, kind=filters.pop("kind", "noisy"), **filters)
    job = bulk_start(dataset=world.dataset, selection=selection, action=action, user=user, identity_id=identity_id)
    assert jobs.job_execute(job_id=job.pk, worker="here") == "done", Job.objects.get(pk=job.pk).error
    job.refresh_from_db()
    return job


def test_the_job_decides_every_match_under_its_batch(world, user, monkeypatch):
    monkeypatch.setattr("reviewapp.services.bulk.CHUNK", 3)  # several chunks, ties across a boundary
    flags = flags_by_score(world, [0.5] * 5 + [0.8] * 3 + [0.1, 0.3])
    outside = face_flag(world, score=0.05)
    job = start_and_run(world, user, action="relabel", identity_id=world.bob.pk, min_score=0.1)
    batch = uuid.UUID(job.params["batch"])
    assert job.status == "done"
    assert job.result == {"decided": 10, "conflicts": 0, "conflict_sample": [], "batch": str(batch),
                          "held_by_others": 0, "summary": "10 flags relabelled."}
    rows = Decision.objects.filter(batch=batch)
    assert sorted(rows.values_list("flag_id", flat=True)) == sorted(f.pk for f in flags)
    assert set(rows.values_list("action", "user_id", "after__identity")) == {("relabel", user.pk, world.bob.pk)}
    assert Flag.objects.get(pk=outside.pk).state == "open"


def test_conflicts_and_held_flags_are_skipped_and_reported(world, user, other_user, monkeypatch):
    flags = flags_by_score(world, [0.9, 0.8, 0.7, 0.6], suggestion="relabel")  # no suggested identity
    held = face_flag(world, score=0.95)
    Flag.objects.filter(pk=held.pk).update(claimed_by=other_user, claimed_at=timezone.now())
    job = start_and_run(world, user, action="confirm")
    assert job.result["decided"] == 0 and job.result["conflicts"] == 4 and job.result["held_by_others"] == 1
    assert job.result["conflict_sample"] == [[f.pk, "This flag suggests no identity to relabel to"]
                                             for f in sorted(flags, key=lambda f: f.pk)]
    assert job.result["summary"] == ("0 flags confirmed; 4 skipped as conflicts, "
                                     "1 held by other reviewers left alone.")
    assert Flag.objects.get(pk=held.pk).state == "open"


def test_a_flag_decided_meanwhile_is_a_conflict_not_a_failure(world, user, other_user, monkeypatch):
    flags = flags_by_score(world, [0.9, 0.8, 0.7])
    real_next_chunk = bulk_service._next_chunk

    def racing(*args):
        chunk = real_next_chunk(*args)
        if chunk and Flag.objects.get(pk=flags[1].pk).state == "open":  # another reviewer is faster
            flag_decide(flag_id=flags[1].pk, action="reject", user=other_user)
        return chunk

    monkeypatch.setattr(bulk_service, "_next_chunk", racing)
    job = start_and_run(world, user, action="remove")
    assert (job.result["decided"], job.result["conflicts"]) == (2, 1)
    assert job.result["conflict_sample"] == [[flags[1].pk, "This flag was already decided by second (Rejected)."]]


def test_a_job_whose_worker_died_is_queued_again_and_resumes_under_its_batch(world, user, settings, monkeypatch):
    settings.JOB_STALE_SECONDS = 30
    monkeypatch.setattr("reviewapp.services.bulk.CHUNK", 2)
    flags = flags_by_score(world, [0.9, 0.8, 0.7, 0.6, 0.5])
    selection = selection_resolve(dataset_id=world.dataset.pk, kind="noisy")
    job = bulk_start(dataset=world.dataset, selection=selection, action="reject", user=user)
    batch = uuid.UUID(job.params["batch"])
    # The first worker decides one chunk, then dies (its chunk committed, nothing else).
    jobs.job_claim(job_id=job.pk, worker="dead")
    for flag in flags[:2]:
        flag_decide(flag_id=flag.pk, action="reject", user=user, batch=batch)
    old = (timezone.now() - timedelta(seconds=300)).isoformat()
    Job.objects.filter(pk=job.pk).update(result={"worker": "dead", "heartbeat_at": old})

    assert jobs.jobs_fail_stale() == 0
    job.refresh_from_db()
    assert job.status == "queued" and job.result["attempts"] == 2
    assert jobs.job_execute(job_id=job.pk, worker="second") == "done"
    job.refresh_from_db()
    assert (job.result["decided"], job.result["conflicts"], job.result["batch"]) == (5, 0, str(batch))
    assert job.result["attempts"] == 2
    assert Decision.objects.filter(batch=batch).count() == 5
    assert not Flag.objects.filter(state="open").exists()


def test_a_job_that_killed_its_workers_too_often_is_failed(world, user, settings):
    settings.JOB_STALE_SECONDS = 30
    face_flag(world)
    job = bulk_start(dataset=world.dataset, selection=selection_resolve(dataset_id=world.dataset.pk, kind="noisy"),
                     action="reject", user=user)
    old = (timezone.now() - timedelta(seconds=300)).isoformat()
    Job.objects.filter(pk=job.pk).update(status="running", result={"worker": "w", "heartbeat_at": old, "attempts": 3})
    assert jobs.jobs_fail_stale() == 1
    assert "stopped reporting" in Job.objects.get(pk=job.pk).error


# -- a chunk decides as flag_decide does ----------------------------------------------------------

class _Rollback(Exception):
    pass


def _outcome(flag_ids, conflicts):
    rows = Decision.objects.filter(flag_id__in=flag_ids).order_by("flag_id", "id")
    return {
        "decisions": [(d.flag_id, d.action, d.face_id, d.identity_id, d.before, d.after, d.round_id, d.evidence,
                       d.actor, d.batch, d.dataset_id) for d in rows],
        "flags": sorted(Flag.objects.filter(pk__in=flag_ids).values_list("pk", "state", "claimed_by_id")),
        "faces": sorted(Face.objects.values_list("pk", "identity_id", "status")),
        "conflicts": sorted(conflicts),
        "second_looks": sorted(SecondReview.objects.filter(flag_id__in=flag_ids)
                               .values_list("flag_id", "first_answer", "first_reviewer_id")),
    }


def _mixed_flags(world, user):
    merged = IdentityFactory(source=world.source, name="merged-into-bob", merged_into=world.bob)
    shared = FaceFactory(identity=world.alice)
    flags = [
        face_flag(world, suggestion="remove"),
        face_flag(world, suggestion="relabel", suggested=world.bob),
        face_flag(world, suggestion="relabel", suggested=merged),
        face_flag(world, suggestion="relabel"),  # suggests no identity
        face_flag(world, suggestion="keep", identity=world.bob),
        FlagFactory(round=world.round, face=shared, suggestion="remove"),
        FlagFactory(round=world.round, face=shared, suggestion="relabel", suggested_identity=world.bob),  # same face
        face_flag(world, kind=Flag.Kind.LOW_NORM, suggestion="remove"),
        FlagFactory(round=world.round, kind=Flag.Kind.NEAR_DUPLICATE, face=FaceFactory(identity=world.alice),
                    other_face=FaceFactory(identity=world.bob), suggestion="remove",
                    evidence={"remove": "other_index"}),
        FlagFactory(round=world.round, kind=Flag.Kind.NEAR_DUPLICATE, face=FaceFactory(identity=world.alice),
                    other_face=FaceFactory(identity=world.bob), suggestion="remove", evidence={"remove": None}),
        FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                    identity_a=IdentityFactory(source=world.source), identity_b=world.bob),
    ]
    gone = face_flag(world, suggestion="remove")
    Face.objects.filter(pk=gone.face_id).update(status="removed")
    decided = face_flag(world)
    flag_decide(flag_id=decided.pk, action="reject", user=user)
    return [f.pk for f in flags + [gone, decided]]


@pytest.mark.parametrize("share", [0, 0.5])  # a second look asked for about half the decided flags
@pytest.mark.parametrize("action", ["confirm", "reject", "remove", "low_quality", "relabel"])
def test_a_chunk_writes_what_flag_decide_one_by_one_writes(world, user, action, share):
    Dataset.objects.filter(pk=world.dataset.pk).update(double_review_share=share)
    flag_ids = _mixed_flags(world, user)
    batch = uuid.uuid4()
    target = world.bob.pk if action == "relabel" else None
    try:
        with transaction.atomic():
            conflicts = []
            for flag_id in flag_ids:
                try:
                    flag_decide(flag_id=flag_id, action=action, user=user, identity_id=target, batch=batch)
                except (LabelConflict, ValueError) as error:
                    conflicts.append((flag_id, str(error)))
            one_by_one = _outcome(flag_ids, conflicts)
            raise _Rollback
    except _Rollback:
        pass
    result = bulk_service.flags_decide_chunk(flag_ids=flag_ids, action=action, user=user, identity_id=target,
                                             batch=batch)
    chunked = _outcome(flag_ids, result.conflicts)
    assert chunked == one_by_one
    assert len(result.decided) + len(result.conflicts) == len(flag_ids)
    assert len(one_by_one["decisions"]) > 1 + len(flag_ids) // 3  # the comparison is about real decisions


# -- the pages ------------------------------------------------------------------------------------

@pytest.fixture
def reviewer(world, user):
    MembershipFactory(user=user, dataset=world.dataset, role=Membership.Role.REVIEWER)
    return user


def test_the_queue_links_to_the_bulk_page_with_its_kind_and_round(client, world, reviewer):
    face_flag(world)
    client.force_login(reviewer)
    html = client.get(reverse("review-queue", args=[world.dataset.pk, "noisy"])).content.decode()
    link = f'{reverse("bulk-form", args=[world.dataset.pk])}?kind=noisy&amp;round={world.round.pk}'
    assert f'href="{link}"' in html and "Apply to all matching…" in html


def test_the_page_previews_the_filter_and_carries_it_into_the_start_form(client, world, reviewer):
    flags = flags_by_score(world, [0.2, 0.6, 0.9])
    client.force_login(reviewer)
    url = reverse("bulk-form", args=[world.dataset.pk])
    response = client.get(url, {"kind": "noisy", "round": world.round.pk, "min_score": "0.5", "max_score": ""})
    assert response.status_code == 200
    html = response.content.decode()
    assert '<span data-count>2</span> open noisy flags match' in html
    assert html.index(f'/faces/{flags[2].face_id}/thumbnail') < html.index(f'/faces/{flags[1].face_id}/thumbnail')
    assert f'/faces/{flags[0].face_id}/thumbnail' not in html
    for hidden in ('name="kind" value="noisy"', f'name="round" value="{world.round.pk}"',
                   'name="min_score" value="0.5"', 'name="expected_count" value="2"'):
        assert f'<input type="hidden" {hidden}>' in html
    assert "Apply to 2 flags" in html
    fragment = client.get(url, {"kind": "noisy", "min_score": "x"}, HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    assert fragment.content.decode().startswith("{# The preview") is False
    assert '<section id="bulk-preview"' in fragment.content.decode() and "<html" not in fragment.content.decode()
    assert "min score: A valid number is required." in fragment.content.decode()


def test_starting_redirects_to_the_job_page_which_a_reviewer_may_see(client, world, reviewer,
                                                                     django_capture_on_commit_callbacks):
    flags_by_score(world, [0.6, 0.9])
    client.force_login(reviewer)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("bulk-start", args=[world.dataset.pk]),
                               {"kind": "noisy", "round": world.round.pk, "min_score": "0.5", "action": "remove",
                                "expected_count": "2", "max_score": ""})
    job = Job.objects.get(kind="bulk_decide")
    assert response.status_code == 302
    assert response["Location"] == reverse("bulk-job", args=[world.dataset.pk, job.pk])
    assert job.params["selection"]["min_score"] == 0.5 and job.params["previewed"] == 2
    page = client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200
    assert f"Remove every open noisy flag of round {world.round.number} scoring at least 0.5." in html
    assert 'hx-trigger="every 2s"' in html and "Waiting for a worker." in html

    assert jobs.job_execute(job_id=job.pk, worker="here") == "done"
    html = client.get(response["Location"], HTTP_HX_REQUEST="true").content.decode()
    assert "2 flags removed." in html and "hx-trigger" not in html
    batch = Job.objects.get(pk=job.pk).result["batch"]
    assert f'action="{reverse("batch-undo", args=[world.dataset.pk, batch])}"' in html and "Undo this batch" in html
    assert "reopens its 2 flags; flags changed since stay as they are" in html


def test_a_running_job_shows_its_progress(client, world, reviewer):
    job = Job.objects.create(kind="bulk_decide", dataset=world.dataset, created_by=reviewer, status="running",
                             params={"action": "reject", "selection": {"kind": "noisy", "round_id": world.round.pk},
                                     "batch": str(uuid.uuid4())},
                             result={"worker": "w", "heartbeat_at": timezone.now().isoformat(),
                                     "progress": {"stage": "deciding", "done": 500, "total": 2000}})
    client.force_login(reviewer)
    html = client.get(reverse("bulk-job", args=[world.dataset.pk, job.pk]), HTTP_HX_REQUEST="true").content.decode()
    assert '<progress class="job-progress" max="2000" value="500"' in html
    assert "Running: deciding 500 of 2,000" in html


def test_a_refused_start_shows_why_with_a_fresh_preview(client, world, reviewer):
    flags_by_score(world, [0.5] * 12)
    client.force_login(reviewer)
    url = reverse("bulk-start", args=[world.dataset.pk])
    response = client.post(url, {"kind": "noisy", "round": world.round.pk, "action": "reject", "expected_count": "3"})
    assert response.status_code == 409
    html = response.content.decode()
    assert "Not started: 12 open flags match now, not the 3 you previewed: preview again before you start." in html
    assert 'name="expected_count" value="12"' in html
    response = client.post(url, {"kind": "low_norm", "round": world.round.pk, "action": "remove"})
    assert response.status_code == 400
    assert "Not started: No open flag matches this filter: there is nothing to decide." in response.content.decode()
    response = client.post(url, {"kind": "noisy", "action": "relabel"})
    assert response.status_code == 400
    assert "identity id: relabel needs the identity to move the faces to" in response.content.decode()
    assert not Job.objects.exists()


def test_outsiders_get_404_and_other_jobs_are_not_shown_here(client, world, reviewer, django_user_model):
    face_flag(world)
    export = Job.objects.create(kind="export", dataset=world.dataset)
    outsider = django_user_model.objects.create_user("outsider", password="pw-outsider-1")
    client.force_login(outsider)
    assert client.get(reverse("bulk-form", args=[world.dataset.pk]), {"kind": "noisy"}).status_code == 404
    assert client.post(reverse("bulk-start", args=[world.dataset.pk]),
                       {"kind": "noisy", "action": "reject"}).status_code == 404
    client.force_login(reviewer)
    assert client.get(reverse("bulk-job", args=[world.dataset.pk, export.pk])).status_code == 404


def test_identity_names_in_the_preview_are_escaped(client, world, reviewer):
    hostile = IdentityFactory(source=world.source, name='<script>alert("x")</script>')
    face_flag(world, identity=hostile)
    FlagFactory(round=world.round, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, suggestion="merge",
                identity_a=hostile, identity_b=world.bob)
    client.force_login(reviewer)
    for kind in ("noisy", "duplicate_identity"):
        html = client.get(reverse("bulk-form", args=[world.dataset.pk]),
                          {"kind": kind, "identity": hostile.pk}).content.decode()
        assert "<script>alert(" not in html
        assert "<bdi>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</bdi>" in html


# -- with real workers ----------------------------------------------------------------------------

# A job silent 2 s is stale, and a sweep every second: a dead worker's job is resumed in seconds.
SWEEPING = {"RECOVERY_SWEEP_SECONDS": "1", "JOB_STALE_SECONDS": "2"}


def _many_flags(world, n: int) -> None:
    faces = Face.objects.bulk_create([Face(identity=world.alice, original_identity=world.alice, source=world.source,
                                           dataset=world.dataset, path=f"many/{i}.jpg", size=1) for i in range(n)])
    Flag.objects.bulk_create([Flag(round=world.round, face=face, kind="noisy", score=(i % 997) / 997,
                                   suggestion="remove") for i, face in enumerate(faces)])


@pytest.mark.worker
def test_a_worker_killed_mid_job_is_replaced_and_the_job_resumes_under_its_batch(transactional_db, user):
    purge_queues()
    source = SourceFactory()
    world = SimpleNamespace(source=source, dataset=source.dataset, alice=IdentityFactory(source=source),
                            round=RoundFactory(dataset=source.dataset))
    _many_flags(world, 20_000)
    selection = selection_resolve(dataset_id=world.dataset.pk, kind="noisy")
    with celery_worker(queues="default", extra_env=SWEEPING) as first:
        job = bulk_start(dataset=world.dataset, selection=selection, action="remove", user=user)
        batch = job.params["batch"]
        started = wait_for(lambda: (Job.objects.get(pk=job.pk).result.get("progress") or {}).get("done"), timeout=90)
        assert started, getattr(first, "log_text", "")
        os.kill(first.pid, signal.SIGKILL)  # mid-job: its open chunk rolls back, the committed ones stay
        first.wait()
    halfway = Decision.objects.filter(batch=batch).count()
    assert 0 < halfway < 20_000
    with celery_worker(queues="default", extra_env=SWEEPING) as second:
        done = wait_for(lambda: Job.objects.get(pk=job.pk).status in ("done", "failed"), timeout=120)
        assert done, getattr(second, "log_text", "")
    job.refresh_from_db()
    assert job.status == "done", job.error
    assert (job.result["decided"], job.result["conflicts"], job.result["batch"]) == (20_000, 0, batch)
    assert job.result["attempts"] == 2
    rows = Decision.objects.filter(batch=batch)
    assert rows.count() == 20_000 and rows.values("flag_id").distinct().count() == 20_000  # none decided twice
    assert not Flag.objects.filter(state="open").exists()
    assert Face.objects.filter(status="active").count() == 0
