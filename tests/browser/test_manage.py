"""An admin in a real browser: the dataset page, starting a round and watching its progress
bar move, cancelling it, a published round's charts, exporting and downloading, and members.

The round's progress is driven from the test by writing the Round row as a worker would;
the export job is run in this process (services.jobs.job_execute) once the browser queued it.
"""
import numpy as np
import pytest
from django.utils import timezone

from ml.mining.summary import round_summary
from reviewapp import queueing
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
    monkeypatch.setattr(queueing, "round_send", lambda round_id, countdown=None: None)
    monkeypatch.setattr(queueing, "job_send", lambda job_id: None)


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
    # As services.rounds stores it: mining's candidates as "mined", what was published as "flags".
    summary["mined"] = summary.pop("flags")
    summary["flags"] = {"noisy": 1400, "hard": 2150, "low_norm": 158, "duplicate_identity": 9, "near_duplicate": 41}
    summary["dropped"] = {"face_removed": 2, "already_true": 0, "changed_during_round": 1, "merged": 0}
    summary["previous"] = {"round": 1, "flags": {"noisy": 1730, "hard": 2350, "low_norm": 171,
                                                 "duplicate_identity": 14, "near_duplicate": 41}}
    summary["already_decided"] = 119  # with the 3 dropped: 3,880 mined - 3,758 published
    return summary


def test_published_round_shows_its_charts(live_server, page, screenshot, admin_setup):
    admin, dataset = admin_setup
    round_ = RoundFactory(dataset=dataset, number=2, method="robustface", status=Round.Status.PUBLISHED,
                          finished_at=timezone.now(), summary=_realistic_summary(),
                          progress={"flags": 3758, "already_decided": 119, "dropped_during_round": 3,
                                    "faces": 20000, "identities": 400})
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
    button = page.locator("#export button[type=submit]")
    button.click()
    # Feedback at the button: disabled and saying so while the job runs, the job right below it.
    page.wait_for_selector("#export-result .job-queued")
    assert button.is_disabled() and button.inner_text() == "Exporting…"
    job = Job.objects.get(kind=Job.Kind.EXPORT)
    assert job_services.job_execute(job_id=job.pk, worker="test-worker") == "done"
    link = page.locator("#export-result a.download", has_text="lfw-noisy.txt")
    link.wait_for(timeout=10_000)
    page.wait_for_function("() => !document.querySelector('#export button[type=submit]').disabled")
    assert button.inner_text() == "Export"
    box = link.bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= page.viewport_size["height"]  # no scrolling needed
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "lfw-noisy.txt"
    expected = tmp_path / "expected.txt"
    dataset_export(dataset=dataset, out=expected)
    assert open(download.path(), encoding="utf-8").read().splitlines() == expected.read_text().splitlines()
    assert page.locator("#export-result .job").first.get_attribute("hx-trigger") is None


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
    page.wait_for_selector(".message:has-text('erin is now a reviewer')")
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


# -- the dataset page while a round runs, the round form, messages (issue 11 point 6) ---------------

def test_dataset_page_follows_the_first_round_live(live_server, page, screenshot, transactional_db,
                                                   django_user_model):
    admin = django_user_model.objects.create_user(username="ada", password=PASSWORD)
    dataset = DatasetFactory(name="fresh-set")
    MembershipFactory(user=admin, dataset=dataset, role=Membership.Role.ADMIN)
    person = IdentityFactory(source__dataset=dataset)
    faces = [FaceFactory(identity=person) for _ in range(4)]
    round_ = RoundFactory(dataset=dataset, number=1, status=Round.Status.QUEUED)
    _sign_in(page, live_server)
    assert "Round 1" in page.locator(f'tr[data-dataset="{dataset.pk}"] td.round').inner_text()
    screenshot("datasets_list")
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    live = page.locator("#dataset-live")
    assert "Round 1 is queued" in live.inner_text()
    assert "Round 1 is running" in page.locator("#round-start").inner_text()  # not a status that goes stale
    assert "No round has been published yet" not in page.content() and "0.0 %" not in page.content()
    _drive(round_, "training", 12.5, 410.0, 380)
    page.wait_for_selector('#dataset-live .bar[aria-valuenow="12.5"]', timeout=15_000)
    _drive(round_, "training", 57.0, 436.2, 166)
    page.wait_for_selector('#dataset-live .bar[aria-valuenow="57.0"]', timeout=15_000)
    assert "57 %" in page.locator("#rounds").inner_text()  # the rounds table follows too
    screenshot("dataset_page_round_running")

    FlagFactory(round=round_, face=faces[0])
    Round.objects.filter(pk=round_.pk).update(status=Round.Status.PUBLISHED, finished_at=timezone.now(),
                                              progress={"flags": 1, "percent": 100.0})
    page.wait_for_selector("#dataset-live:has-text('Round 1 published')", timeout=15_000)
    assert page.locator("#open-flags .kind-noisy .kind-count").inner_text() == "1"
    assert live.get_attribute("hx-trigger") is None  # polling stopped
    assert page.locator("#round-start select[name=method]").is_visible()  # the form is back
    screenshot("dataset_page_round_published")


def test_round_form_shows_the_chosen_methods_fields(live_server, page, screenshot, admin_setup):
    admin, dataset = admin_setup
    _sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
    method = page.locator("select[name=method]")
    epochs, embeddings = page.locator("input[name=epochs]"), page.locator("input[name=embeddings]")
    assert not page.locator(".method-note").is_visible()  # the no-script note
    # select_option fires the change event that picking with the keyboard or the mouse fires.
    method.focus()
    method.select_option("robustface")
    assert epochs.is_visible() and not embeddings.is_visible()
    method.select_option("embeddings")
    assert embeddings.is_visible() and page.locator("input[name=paths]").is_visible() and not epochs.is_visible()
    assert epochs.is_disabled()  # a hidden field is not sent
    screenshot("round_form_embeddings")
    method.select_option("pretrained")
    assert not epochs.is_visible() and not embeddings.is_visible()
    page.keyboard.press("Tab")  # past the method: the next field reached is the JSON settings
    assert page.evaluate("document.activeElement.name") == "config"


def test_round_form_without_javascript_shows_every_field_with_the_note(live_server, browser, admin_setup):
    admin, dataset = admin_setup
    context = browser.new_context(java_script_enabled=False, viewport={"width": 1366, "height": 768})
    page = context.new_page()
    try:
        sign_in(page, live_server, "ada", PASSWORD)
        page.goto(f"{live_server.url}/datasets/{dataset.pk}/")
        for name in ("epochs", "batch_size", "embeddings", "paths", "norms"):
            assert page.locator(f"input[name={name}]").is_visible(), name
        assert page.locator(".method-note").is_visible()
    finally:
        context.close()


def _overlaps(a, b) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


def _assert_covers_no_control(page, toast) -> None:
    """The toast covers none of the controls that stay in place: the top bar, the queue's
    toolbar and the identity page's bulk bar (sticky at the top while the cards scroll)."""
    box = toast.bounding_box()
    fixed = ".topbar, .review-toolbar, .bulk-bar"
    controls = page.locator(", ".join(f"{bar} {kind}:visible" for bar in fixed.split(", ")
                                      for kind in ("button", "summary", "a", "input", "select")))
    assert controls.count() >= 5
    for i in range(controls.count()):
        control = controls.nth(i)
        if toast.locator("xpath=.").evaluate("(t, c) => t.contains(c)", control.element_handle()):
            continue
        other = control.bounding_box()
        if other and other["width"] and other["height"]:
            assert not _overlaps(box, other), control.evaluate("e => e.outerHTML.slice(0, 120)")


@pytest.fixture
def busy_queue(transactional_db, django_user_model, tmp_path):
    from tests.factories import SourceFactory, jpeg_bytes

    user = django_user_model.objects.create_user(username="ada", password=PASSWORD)
    source = SourceFactory(root=str(tmp_path), dataset__name="queue-set")
    MembershipFactory(user=user, dataset=source.dataset, role=Membership.Role.ADMIN)
    people = [IdentityFactory(source=source, name=name) for name in ("Ann Lee", "Bo Chan", "Cy Diaz")]
    round_ = RoundFactory(dataset=source.dataset, number=1, finished_at=timezone.now())
    faces = []
    for i in range(9):
        face = FaceFactory(identity=people[i % 3])
        (tmp_path / face.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / face.path).write_bytes(jpeg_bytes(color=(60 + 20 * i, 120, 90)))
        faces.append(face)
        FlagFactory(round=round_, face=face, kind=Flag.Kind.NOISY, suggestion=Flag.Suggestion.RELABEL,
                    suggested_identity=people[(i + 1) % 3], evidence={"reason": "closed_set", "band": "noisy"})
    return source.dataset, people


def _viewport_shot(page, name: str) -> None:
    from tests.browser.conftest import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_messages_keep_clear_of_the_controls_close_and_go_away(live_server, page, busy_queue):
    dataset, people = busy_queue
    _sign_in(page, live_server)
    # The queue page: "Take a batch" answers with a message; the bulk bar stays uncovered.
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/review/noisy/")
    page.click("button:has-text('Take a batch')")
    toast = page.locator("#messages .message", has_text="You hold")
    toast.wait_for()
    toast.hover()  # holds it while the pointer is on it
    page.locator("#messages .message-close").first.wait_for()
    assert page.locator("summary:has-text('Relabel selected')").is_visible()
    _assert_covers_no_control(page, toast)
    _viewport_shot(page, "toast_queue_page")
    # Scrolled down, the bulk bar sticks at the top and the toast still leaves it free.
    page.evaluate("window.scrollBy(0, 600)")
    page.wait_for_function("() => window.scrollY > 0")
    page.wait_for_timeout(7_000)
    assert toast.is_visible()  # held: the pointer is still on it
    _assert_covers_no_control(page, toast)
    _viewport_shot(page, "toast_queue_page_scrolled")
    # Moving through the cards with the keyboard scrolls each one clear of the toast.
    for _ in range(page.locator(".face-card").count()):
        page.keyboard.press("j")
        card = page.locator(".face-card:focus")
        assert not _overlaps(card.bounding_box(), toast.bounding_box()), card.get_attribute("id")
    page.mouse.move(1200, 400)
    toast.wait_for(state="detached", timeout=12_000)  # a success goes away by itself

    # The datasets list now shows the open flags and the batch this reviewer holds.
    page.goto(f"{live_server.url}/")
    row = page.locator(f'tr[data-dataset="{dataset.pk}"]')
    assert row.locator(".kind-chip.kind-noisy").inner_text() == "9 Noisy"
    assert row.locator("td.held").inner_text() == "9 Noisy"
    _viewport_shot(page, "datasets_list_open_work")

    # The identity page: a bulk removal's message, the bulk bar and cards uncovered.
    page.goto(f"{live_server.url}/identities/{people[0].pk}/")
    page.locator(".face-card .face-thumb").first.click()
    page.click("button[name=action][value=remove]")
    toast = page.locator("#messages .message", has_text="Removed 1 face")
    toast.wait_for()
    _assert_covers_no_control(page, toast)
    _viewport_shot(page, "toast_identity_page")
    toast.locator(".message-close").click()  # closed by hand
    toast.wait_for(state="detached", timeout=2_000)


def test_an_error_message_stays_until_closed(live_server, page, admin_setup):
    admin, dataset = admin_setup
    _sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{dataset.pk}/members")
    # A remove form left open while the member was removed elsewhere: its membership is gone.
    page.locator("input[name=membership]").first.evaluate("e => e.value = '999999'")
    page.locator("button:has-text('Remove')").first.click()
    toast = page.locator("#messages .message.error", has_text="That member is not in this dataset.")
    toast.wait_for()
    page.wait_for_timeout(7_000)  # longer than a success message stays
    assert toast.is_visible()
    toast.locator(".message-close").click()
    toast.wait_for(state="detached", timeout=2_000)
