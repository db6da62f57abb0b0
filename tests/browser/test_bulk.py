"""Queue-wide bulk decisions in a real browser: from a noisy queue to "apply to all matching",
a filter whose htmx preview counts and samples the matches, starting the job, the job page
showing it done (the test plays the Celery worker: services.jobs.job_execute in this process),
and undoing the whole run as one batch from that page: in the request, as a batch of a few dozen
is, and as the BATCH_UNDO job a large batch becomes (services.undo.BATCH_IN_REQUEST lowered)."""
import re
import uuid

import pytest
from playwright.sync_api import expect

from reviewapp import queueing
from reviewapp.models import Decision, Face, Flag, Job
from reviewapp.services import jobs as job_services
from reviewapp.services import undo as undo_services
from tests.browser.signin import PASSWORD, sign_in
from tests.browser.faces import face_maker
from tests.factories import FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory

pytestmark = pytest.mark.browser

# 40 open noisy flags of the latest round, scores 0.200, 0.218, ... 0.902, one of them exactly on the cut.
SCORES = [round(0.2 + 0.018 * i, 3) for i in range(40)]
MIN_SCORE = "0.65"
EXPECTED = 15  # the scores >= 0.65 (the bound is inclusive): 0.650, 0.668, ... 0.902
SAMPLE = 12    # selectors.bulk.SAMPLE_SIZE


@pytest.fixture
def no_broker(monkeypatch):
    """Jobs are queued in the database only: this test plays the worker."""
    monkeypatch.setattr(queueing, "job_send", lambda job_id: None)


@pytest.fixture
def noisy_queue(transactional_db, tmp_path, django_user_model):
    user = django_user_model.objects.create_user(username="rev", password=PASSWORD)
    source = SourceFactory(root=str(tmp_path), dataset__name="celebs-noisy")
    dataset = source.dataset
    MembershipFactory(user=user, dataset=dataset)
    alice = IdentityFactory(source=source, name="Alice Ng")
    bob = IdentityFactory(source=source, name="Bob Okafor")
    carol = IdentityFactory(source=source, name="Carol Diaz")  # the identity the relabel flags suggest
    older = RoundFactory(dataset=dataset, number=1)
    latest = RoundFactory(dataset=dataset, number=2)
    face = face_maker(tmp_path)

    flags = []
    for i, score in enumerate(SCORES):
        relabel = i % 2 == 0
        flags.append(FlagFactory(
            round=latest, face=face(alice if i % 3 else bob), kind=Flag.Kind.NOISY, score=score,
            suggestion=Flag.Suggestion.RELABEL if relabel else Flag.Suggestion.REMOVE,
            suggested_identity=carol if relabel else None,
            evidence={"reason": "closed_set", "band": "noisy", "theta_y_deg": 80.0, "theta_1_deg": 52.0}))
    # High scores the filter must not count: a decided flag, another queue, an older round.
    decided = FlagFactory(round=latest, face=face(alice), kind=Flag.Kind.NOISY, score=0.99,
                          suggestion=Flag.Suggestion.REMOVE, state=Flag.State.CONFIRMED)
    hard = FlagFactory(round=latest, face=face(bob), kind=Flag.Kind.HARD, score=0.97, suggestion=Flag.Suggestion.KEEP)
    stale = FlagFactory(round=older, face=face(alice), kind=Flag.Kind.NOISY, score=0.98,
                        suggestion=Flag.Suggestion.REMOVE)
    return {"user": user, "dataset": dataset, "round": latest, "flags": flags, "carol": carol,
            "others": [decided, hard, stale]}


def images_loaded(page, selector: str) -> None:
    page.wait_for_function(
        "sel => { const imgs = [...document.querySelectorAll(sel)];"
        " return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0); }", arg=selector)


@pytest.mark.parametrize("undo_as_job", [False, True], ids=["undo-in-request", "undo-as-job"])
def test_preview_apply_to_all_matching_and_undo_the_run(live_server, page, screenshot, noisy_queue, no_broker,
                                                         monkeypatch, undo_as_job):
    def shot(name):  # the screenshots a person looks at come from the usual path
        if not undo_as_job:
            screenshot(name)

    dataset, flags = noisy_queue["dataset"], noisy_queue["flags"]
    matching = [f for f in flags if f.score >= float(MIN_SCORE)]
    rest = [f for f in flags if f.score < float(MIN_SCORE)]
    assert len(matching) == EXPECTED and len(rest) == len(flags) - EXPECTED
    faces_before = {f.face_id: (f.face.identity_id, f.face.status) for f in flags}
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # 1. The queue's "apply to all matching" link opens the filter on this queue and round.
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/review/noisy/")
    page.click("a.bulk-link")
    page.wait_for_url(re.compile(rf"/datasets/{dataset.pk}/bulk/\?kind=noisy&round={noisy_queue['round'].pk}$"))
    count = page.locator("#bulk-preview [data-count]")
    expect(count).to_have_text(str(len(flags)))  # every open noisy flag of the round, nothing else

    # Setting "Score at least" swaps the preview (htmx) and puts the filter in the address.
    page.fill("#bulk-filter input[name=min_score]", MIN_SCORE)
    page.locator("#bulk-filter input[name=min_score]").press("Tab")  # the change event
    expect(count).to_have_text(str(EXPECTED))
    page.wait_for_url(re.compile(rf"min_score={re.escape(MIN_SCORE)}"))
    expect(page.locator("#bulk-preview .muted").first).to_contain_text(f"score ≥ {MIN_SCORE}")
    sample = page.locator("#bulk-preview .bulk-sample li")
    expect(sample).to_have_count(SAMPLE)
    images_loaded(page, "#bulk-preview .bulk-sample img")
    shown = [float(s) for s in sample.locator(".score").all_inner_texts()]
    assert shown == sorted((f.score for f in matching), reverse=True)[:SAMPLE]
    hrefs = sample.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    top = sorted(matching, key=lambda f: -f.score)[:SAMPLE]
    assert hrefs == [f"/flags/{f.pk}/" for f in top]
    expect(page.locator("#bulk-preview")).to_contain_text(f"The {SAMPLE} highest-scoring of {EXPECTED}.")
    start = page.locator("#bulk-start")
    assert start.locator("input[name=min_score]").input_value() == MIN_SCORE
    assert start.locator("input[name=expected_count]").input_value() == str(EXPECTED)
    # The relabel search is a block of its own above the start button, not squeezed beside it.
    search, button = start.locator("input[name=q]").bounding_box(), start.locator("button[type=submit]").bounding_box()
    assert button["y"] >= search["y"] + search["height"] and search["width"] >= 300
    shot("bulk_preview")

    # 2. Remove the faces of every match: the job is queued and its page shows it.
    start.locator("input[name=action][value=remove]").check()
    start.get_by_role("button", name=f"Apply to {EXPECTED} flags").click()
    page.wait_for_url(re.compile(rf"/datasets/{dataset.pk}/bulk/jobs/\d+/$"))
    job = Job.objects.get(kind=Job.Kind.BULK_DECIDE, dataset=dataset)
    assert page.url.endswith(f"/bulk/jobs/{job.pk}/")
    assert job.status == Job.Status.QUEUED and job.params["action"] == "remove"
    assert job.params["matched"] == EXPECTED and job.params["previewed"] == EXPECTED
    expect(page.locator("#messages")).to_contain_text(
        f"Started: Remove every open noisy flag of round 2 scoring at least {MIN_SCORE}.")
    # Only that it started: the job page says how it stands, and a "runs in the background" would outlive it.
    assert "background" not in page.locator("#messages").inner_text()
    assert not Decision.objects.exists()  # nothing decided before a worker runs it

    assert job_services.job_execute(job_id=job.pk, worker="test-worker") == "done", \
        Job.objects.get(pk=job.pk).error
    # The page polls every 2 s while the job is queued or running.
    summary = page.locator(f"#job-{job.pk}.job-done .job-summary")
    summary.wait_for(timeout=15_000)
    assert summary.inner_text() == f"{EXPECTED} flags removed."
    undo_button = page.get_by_role("button", name="Undo this batch")
    expect(undo_button).to_be_visible()
    expect(page.locator(f"#job-{job.pk} .undo-batch")).to_contain_text(f"reopens its {EXPECTED} flags")

    job.refresh_from_db()
    batch = uuid.UUID(job.result["batch"])
    assert job.result["decided"] == EXPECTED and job.result["conflicts"] == 0
    assert {f.pk for f in Flag.objects.filter(pk__in=[f.pk for f in flags]).exclude(state=Flag.State.OPEN)} \
        == {f.pk for f in matching}
    assert set(Flag.objects.filter(pk__in=[f.pk for f in rest]).values_list("state", flat=True)) == {Flag.State.OPEN}
    states = dict(Flag.objects.filter(pk__in=[f.pk for f in matching]).values_list("pk", "state"))
    # A flag that suggested removal is confirmed by it, one that suggested a relabel overridden.
    assert states == {f.pk: (Flag.State.CONFIRMED if f.suggestion == Flag.Suggestion.REMOVE
                             else Flag.State.OVERRIDDEN) for f in matching}
    rows = Decision.objects.filter(dataset=dataset)
    assert rows.count() == EXPECTED
    assert set(rows.values_list("flag_id", flat=True)) == {f.pk for f in matching}
    assert set(rows.values_list("batch", flat=True)) == {batch}
    assert set(rows.values_list("action", flat=True)) == {Decision.Action.REMOVE}
    assert set(Face.objects.filter(pk__in=[f.face_id for f in matching]).values_list("status", flat=True)) \
        == {Face.Status.REMOVED}
    assert set(Face.objects.filter(pk__in=[f.face_id for f in rest]).values_list("status", flat=True)) \
        == {Face.Status.ACTIVE}
    # The flags the filter left out are as they were.
    assert [Flag.objects.get(pk=f.pk).state for f in noisy_queue["others"]] == \
        [Flag.State.CONFIRMED, Flag.State.OPEN, Flag.State.OPEN]
    shot("bulk_job_done")

    # 3. Undo the whole run from the job page, as one batch.
    history = re.compile(rf"/datasets/{dataset.pk}/history\?batch={batch}$")
    if not undo_as_job:
        assert EXPECTED <= undo_services.BATCH_IN_REQUEST  # a few dozen are undone in the request
        undo_button.click()
        page.wait_for_url(history)
        expect(page.locator("#messages")).to_contain_text(f"Undid {EXPECTED} decisions.")
        assert not Job.objects.filter(kind=Job.Kind.BATCH_UNDO).exists()
    else:
        monkeypatch.setattr(undo_services, "BATCH_IN_REQUEST", EXPECTED - 1)
        undo_button.click()
        page.wait_for_url(history)
        undo_job = Job.objects.get(kind=Job.Kind.BATCH_UNDO, dataset=dataset)
        expect(page.locator("#messages")).to_contain_text(
            f"Undoing {EXPECTED} decisions in the background (job #{undo_job.pk})")
        assert set(Flag.objects.filter(pk__in=[f.pk for f in matching]).values_list("state", flat=True)) \
            .isdisjoint({Flag.State.OPEN})  # nothing undone before a worker runs it
        assert job_services.job_execute(job_id=undo_job.pk, worker="test-worker") == "done", \
            Job.objects.get(pk=undo_job.pk).error
        # Its job page (the bulk job page serves batch undos too) says what it did.
        page.goto(f"{live_server.url}/datasets/{dataset.pk}/bulk/jobs/{undo_job.pk}/")
        expect(page.locator(f"#job-{undo_job.pk}.job-done .job-summary")).to_have_text(f"Undid {EXPECTED} decisions.")
        page.goto(f"{live_server.url}/datasets/{dataset.pk}/history?batch={batch}")
    # The history of the batch shows each of its decisions undone.
    expect(page.locator("tr.is-undone")).to_have_count(EXPECTED)
    for row in Decision.objects.filter(batch=batch):
        expect(page.locator(f"#decision-{row.pk}")).to_have_class(re.compile(r"\bis-undone\b"))
    assert set(Flag.objects.filter(pk__in=[f.pk for f in flags]).values_list("state", flat=True)) == {Flag.State.OPEN}
    assert {f.pk: (f.identity_id, f.status) for f in Face.objects.filter(pk__in=faces_before)} == faces_before
    undos = Decision.objects.filter(dataset=dataset, action=Decision.Action.UNDO)
    assert set(undos.values_list("undoes__batch", flat=True)) == {batch}
    assert undos.count() == EXPECTED and len(set(undos.values_list("batch", flat=True))) == 1
    images_loaded(page, "main img")
    shot("bulk_undone")

    # The queue is whole again: a fresh preview counts the run's flags once more.
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/bulk/?kind=noisy&min_score={MIN_SCORE}")
    expect(page.locator("#bulk-preview [data-count]")).to_have_text(str(EXPECTED))
    assert dialogs == []
