"""An admin in a real browser: the dataset page, starting a round and watching its progress
bar move, cancelling it, a published round's charts, exporting and downloading, and members.

The round's progress is driven from the test by writing the Round row as a worker would;
the export job is run in this process (services.jobs.job_execute) once the browser queued it.
"""
import numpy as np
import pytest
from django.utils import timezone

from ml.mining.summary import round_summary
from reviewapp import tasks_rounds
from reviewapp.models import Flag, Job, Membership, Round
from reviewapp.services import jobs as job_services
from reviewapp.services.exports import dataset_export
from tests.browser.signin import sign_in
from tests.factories import (
    DatasetFactory, FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory,
)

pytestmark = pytest.mark.browser
PASSWORD = "a-long-pass-123"


@pytest.fixture
def no_broker(monkeypatch):
    """Rounds and jobs are queued in the database only: this test plays the worker."""
    monkeypatch.setattr(tasks_rounds, "enqueue_round", lambda round_id, countdown=None: None)
    monkeypatch.setattr(job_services, "_enqueue", lambda job_id: None)


@pytest.fixture
def admin_setup(transactional_db, django_user_model):
    admin = django_user_model.objects.create_user(username="ada", password=PASSWORD)
    dataset = DatasetFactory(name="lfw-noisy")
    MembershipFactory(user=admin, dataset=dataset, role=Membership.Role.ADMIN)
    people = [IdentityFactory(source__dataset=dataset, name="Aaron_Peirsol")]
    people += [IdentityFactory(source=people[0].source, name=name)
               for name in ("Abdullah_Gul", "Adam_Sandler", "<script>alert(1)</script>")]
    faces = [FaceFactory(identity=people[i % 4]) for i in range(40)]
    published = RoundFactory(dataset=dataset, number=1, status=Round.Status.PUBLISHED,
                             finished_at=timezone.now(), progress={"flags": 9})
    for i, kind in enumerate(["noisy"] * 5 + ["hard"] * 3 + ["low_norm"]):
        FlagFactory(round=published, face=faces[i], kind=kind, suggestion="keep" if kind == "hard" else "remove")
    decided = Flag.objects.filter(round=published, kind="noisy").order_by("pk").first()
    decided.state = Flag.State.CONFIRMED
    decided.save(update_fields=["state"])
    return admin, dataset


def _sign_in(page, live_server, username="ada"):
    sign_in(page, live_server, username, PASSWORD)
    page.wait_for_selector("h1:has-text('Datasets')")


def _drive(round_: Round, status: str, percent: float, rate: float, eta: float) -> None:
    Round.objects.filter(pk=round_.pk).update(
        status=status, worker="test-worker", heartbeat_at=timezone.now(), started_at=timezone.now(),
        progress={"stage": status, "percent": percent, "samples_per_s": rate, "eta_s": eta, "attempt": 1})


def test_admin_starts_a_round_watches_it_and_cancels(live_server, page, screenshot, admin_setup, no_broker):
    admin, dataset = admin_setup
    _sign_in(page, live_server)
    page.click(f"a:has-text('{dataset.name}')")
    page.wait_for_selector("h2:has-text('Start a round')")
    assert page.locator(".kind-noisy .kind-count").inner_text() == "4"
    screenshot("dataset_page")

    page.select_option("select[name=method]", "robustface")
    page.fill("input[name=epochs]", "2")
    page.click("button:has-text('Start round')")
    page.wait_for_selector("h1:has-text('Round 2')")
    round_ = Round.objects.get(dataset=dataset, number=2)
    assert (round_.method, round_.status, round_.config) == ("robustface", "queued", {"epochs": 2})

    bar = page.locator("#round-progress .bar")
    _drive(round_, "training", 12.5, 410.0, 380)
    page.wait_for_selector('#round-progress .bar[aria-valuenow="12.5"]', timeout=15_000)
    _drive(round_, "training", 57.0, 436.2, 166)
    page.wait_for_selector('#round-progress .bar[aria-valuenow="57.0"]', timeout=15_000)
    assert page.locator("#round-progress .eta").inner_text() == "2 min 46 s"
    assert page.locator("#round-progress .rate").inner_text() == "436.2"
    assert page.locator(".stage.current").inner_text().lower() == "training"
    width = page.locator("#round-progress .bar-fill").evaluate("e => e.style.width")
    assert width == "57%" and bar.is_visible()
    screenshot("round_progress")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("button:has-text('Cancel round')")
    page.wait_for_selector("#round-progress .outcome.bad:has-text('Cancelled')", timeout=10_000)
    round_.refresh_from_db()
    assert round_.status == Round.Status.CANCELLED
    assert page.locator("#round-progress").get_attribute("hx-trigger") is None  # polling stopped
    assert "cancelled" in page.locator("#messages").inner_text().lower()


def _realistic_summary() -> dict:
    """What ml.mining.summary makes of a trained head on 20,000 faces with 8 % label noise."""
    rng = np.random.default_rng(7)
    n = 20_000
    labels = rng.integers(0, 400, n)
    theta_y = rng.normal(0.75, 0.12, n)
    theta_1 = theta_y + rng.normal(0.75, 0.16, n)
    noisy = rng.random(n) < 0.08
    theta_y[noisy] = rng.normal(1.35, 0.1, noisy.sum())
    theta_1[noisy] = rng.normal(0.95, 0.12, noisy.sum())
    norms = np.exp(rng.normal(3.0, 0.18, n))
    norms[rng.random(n) < 0.01] *= 0.45  # blurred or not a face
    stats = {"theta_y": theta_y.astype(np.float32), "theta_1": theta_1.astype(np.float32),
             "norm": norms.astype(np.float32), "margins": np.array([0.5, 0.15], dtype=np.float32)}

    class C:
        def __init__(self, kind, evidence=None):
            self.kind, self.evidence = kind, evidence or {}

    candidates = ([C("noisy")] * 1460 + [C("hard")] * 2210 + [C("duplicate_identity")] * 9
                  + [C("near_duplicate")] * 41 + [C("low_norm", {"thresholds": {"low_norm": {"value": 11.6}}})] * 160)
    summary = round_summary(labels=labels, stats=stats, candidates=candidates)
    summary["flags"] = {"noisy": 1460, "hard": 2210, "low_norm": 160, "duplicate_identity": 9, "near_duplicate": 41}
    summary["previous"] = {"round": 1, "flags": {"noisy": 1730, "hard": 2350, "low_norm": 171,
                                                 "duplicate_identity": 14, "near_duplicate": 41}}
    summary["already_decided"] = 312
    return summary


def test_published_round_shows_its_charts(live_server, page, screenshot, admin_setup):
    admin, dataset = admin_setup
    round_ = RoundFactory(dataset=dataset, number=2, method="robustface", status=Round.Status.PUBLISHED,
                          finished_at=timezone.now(), summary=_realistic_summary(),
                          progress={"flags": 3880, "already_decided": 312, "faces": 20000, "identities": 400})
    _sign_in(page, live_server)
    page.goto(f"{live_server.url}/rounds/{round_.pk}/")
    page.wait_for_selector(".charts img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('.charts img')].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".charts img").count() == 4
    assert page.locator("#round-progress").get_attribute("hx-trigger") is None
    page.locator(".charts").scroll_into_view_if_needed()
    screenshot("round_charts")


def test_admin_exports_and_downloads(live_server, page, admin_setup, no_broker, settings, tmp_path):
    settings.EXPORT_ROOT = tmp_path / "exports"
    admin, dataset = admin_setup
    _sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    page.select_option("select[name=format]", "list")
    page.click("#export button:has-text('Export')")
    page.wait_for_selector("#export-jobs .job-queued")
    job = Job.objects.get(kind=Job.Kind.EXPORT)
    assert job_services.job_execute(job_id=job.pk, worker="test-worker") == "done"
    link = page.locator("#export-jobs a.download", has_text="lfw-noisy.txt")
    link.wait_for(timeout=10_000)
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "lfw-noisy.txt"
    expected = tmp_path / "expected.txt"
    dataset_export(dataset=dataset, out=expected)
    assert open(download.path(), encoding="utf-8").read().splitlines() == expected.read_text().splitlines()
    assert page.locator("#export-jobs .job").first.get_attribute("hx-trigger") is None


def test_members_page(live_server, page, screenshot, admin_setup, django_user_model):
    admin, dataset = admin_setup
    for name, role in (("bruno", "reviewer"), ("chloe", "reviewer"), ("dmitri", "admin")):
        user = django_user_model.objects.create_user(username=name, password=PASSWORD)
        MembershipFactory(user=user, dataset=dataset, role=role)
    django_user_model.objects.create_user(username="erin", password=PASSWORD)
    _sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/members")
    page.fill("aside input[name=username]", "erin")
    page.select_option("aside select[name=role]", "reviewer")
    page.click("aside button:has-text('Add')")
    page.wait_for_selector(".message:has-text('erin is now reviewer')")
    assert page.locator(".members-table tbody tr").count() == 5
    screenshot("members")


def test_admin_imports_from_the_data_root(live_server, page, screenshot, admin_setup, no_broker, settings, tmp_path):
    from tests.factories import jpeg_bytes

    settings.DATA_ROOT = tmp_path / "data"
    for name in ("ann", "bob"):
        (tmp_path / "data" / "new-faces" / name).mkdir(parents=True)
        for j in range(3):
            (tmp_path / "data" / "new-faces" / name / f"{j}.jpg").write_bytes(jpeg_bytes(color=(40 * j, 90, 20)))
    _sign_in(page, live_server)
    page.click("a:has-text('Import a dataset')")
    assert str(tmp_path / "data") in page.locator("code.root").inner_text()
    page.fill("input[name=path]", "../../etc")
    page.fill("input[name=name]", "fresh")
    page.click("button:has-text('Import')")
    page.wait_for_selector(".form-error:has-text('is not allowed')")
    assert not Job.objects.exists()
    screenshot("dataset_import")

    page.fill("input[name=path]", "new-faces")
    page.click("button:has-text('Import')")
    page.wait_for_selector(".job-queued")
    job = Job.objects.get(kind=Job.Kind.IMPORT)
    assert job_services.job_execute(job_id=job.pk, worker="test-worker") == "done"
    page.wait_for_selector(".job-done a:has-text('Open the dataset')", timeout=10_000)
    page.click("a:has-text('Open the dataset')")
    page.wait_for_selector("h1:has-text('fresh')")
    assert page.locator(".tile-value").first.inner_text() == "6"
