"""The team view in a real browser: an admin turns double review on, one reviewer holds a batch
and decides, another gives the blind second look, and the admin settles the disagreement."""
import pytest

from reviewapp.models import Face, Flag, Membership, SecondReview
from reviewapp.services.double_review import is_sampled
from tests.browser.conftest import ARTIFACTS
from tests.browser.signin import PASSWORD, sign_in
from tests.browser.faces import face_maker
from tests.factories import FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def team(db, tmp_path, django_user_model):
    users = {name: django_user_model.objects.create_user(username=name, password=PASSWORD)
             for name in ("ann", "bob", "cy")}
    source = SourceFactory(root=str(tmp_path), dataset__name="celebs-team")
    dataset = source.dataset
    MembershipFactory(user=users["ann"], dataset=dataset, role=Membership.Role.ADMIN)
    MembershipFactory(user=users["bob"], dataset=dataset)
    MembershipFactory(user=users["cy"], dataset=dataset)
    people = [IdentityFactory(source=source, name=n) for n in ("Ada Lovelace", "Grace Hopper", "<b>Alan</b>")]
    round_ = RoundFactory(dataset=dataset, number=1)
    face = face_maker(tmp_path)

    for person in people:
        for _ in range(3):
            face(person)
    flags = []
    for i in range(12):
        evidence = {"reason": "closed_set", "band": "noisy", "theta_y_deg": 80.0 - i, "theta_1_deg": 52.0, "norm": 21.0}
        flags.append(FlagFactory(round=round_, face=face(people[0]), kind=Flag.Kind.NOISY, score=20.0 - i,
                                 suggestion=Flag.Suggestion.RELABEL, suggested_identity=people[1], evidence=evidence))
    sampled = next(f for f in flags if is_sampled(f.pk, 0.5))
    return {"dataset": dataset, "people": people, "flags": flags, "sampled": sampled, "users": users}


@pytest.fixture
def signed_in(browser, live_server):
    """A page signed in as the given user, each in a browser context of its own (closed after)."""
    contexts = []

    def open_as(username):
        context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
        contexts.append(context)
        page = context.new_page()
        sign_in(page, live_server, username=username)
        return page

    yield open_as
    for context in contexts:
        context.close()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_double_review_from_decision_to_resolution(live_server, signed_in, team):
    dataset, sampled = team["dataset"], team["sampled"]
    base = f"{live_server.url}/datasets/{dataset.pk}"

    # The admin turns enforced claims and a 50 % double review on from the dataset page.
    ann = signed_in("ann")
    ann.goto(f"{base}/")
    ann.check("input[name=claims][value=enforced]")
    ann.click("text=Save claims mode")
    ann.wait_for_selector("#messages >> text=Claims are enforced now.")
    ann.fill("input[name=share]", "50")
    ann.click("#team button:has-text('Set')")
    ann.wait_for_selector("#messages >> text=Double review asks 50 % of decided flags again")
    shot(ann, "team_dataset_panel")

    # bob takes a batch: the queue says exactly how many he holds, and cy's flag page says who holds it.
    bob = signed_in("bob")
    bob.goto(f"{base}/review/noisy/")
    bob.click("text=Take a batch of 50")
    bob.wait_for_selector(".team-holds")
    assert bob.locator(".own-batch").inner_text() == "your batch: 12"
    assert "Held by 1 reviewer, 12 flags" in bob.locator(".team-holds").inner_text()
    assert "enforced: only the holder can decide a held flag" in bob.locator(".claim-note").inner_text()
    shot(bob, "team_queue_holds")
    cy = signed_in("cy")
    cy.goto(f"{live_server.url}/flags/{sampled.pk}/")
    assert "Held by bob for 30 more minutes" in cy.locator(".held-by").inner_text()
    # Enforced: the card's buttons are there but disabled, with the reason; its keys do nothing, no toast.
    held = cy.locator(f"#flag-{sampled.pk}")
    assert held.locator(".fc-held").inner_text() == "Only bob can decide this flag while they hold it."
    buttons = held.locator(".fc-actions button")
    assert buttons.count() >= 4 and all(buttons.nth(i).is_disabled() for i in range(buttons.count()))
    held.focus()
    cy.keyboard.press("c")
    cy.wait_for_timeout(500)
    assert cy.locator("#messages .message").count() == 0
    shot(cy, "team_flag_held_enforced")
    assert Flag.objects.get(pk=sampled.pk).state == Flag.State.OPEN

    # bob accepts the suggested relabel on that flag: it is sampled for a second look.
    bob.goto(f"{live_server.url}/flags/{sampled.pk}/")
    bob.click(f"#flag-{sampled.pk} button[data-key=c]")
    bob.wait_for_selector(f"#flag-{sampled.pk}.decided")
    review = SecondReview.objects.get(flag_id=sampled.pk)
    assert review.state == "pending"

    # cy sees it blind (as it was: under Ada Lovelace, open, no name of who decided) and keeps it with r.
    cy.goto(f"{base}/second-look/")
    card = cy.locator(f"#flag-{sampled.pk}")
    card.wait_for()
    cy.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert "Ada Lovelace" in card.locator(".fc-who").inner_text() and "bob" not in cy.content()
    shot(cy, "team_second_look")
    card.focus()
    cy.keyboard.press("r")
    cy.wait_for_selector(f"#flag-{sampled.pk}.answered")
    cy.wait_for_selector("#messages >> text=Answer recorded.")
    assert SecondReview.objects.get(pk=review.pk).state == "disagreed"
    assert Face.objects.get(pk=sampled.face_id).identity_id == team["people"][1].pk  # the answer changed nothing

    # The admin sees both answers side by side and applies the second.
    ann.goto(f"{base}/")
    assert "Open disagreements (1)" in ann.locator("#team").inner_text()
    ann.click("text=Open disagreements (1)")
    item = ann.locator(f"#disagreement-{review.pk}")
    item.wait_for()
    ann.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert "Relabel to Grace Hopper" in item.locator(".answer.first").inner_text()
    assert "Keep as is" in item.locator(".answer.second").inner_text()
    shot(ann, "team_disagreements")
    item.locator("button[value=second]").click()
    ann.wait_for_selector("#messages >> text=Applied the second answer")
    assert ann.locator("text=No open disagreements.").count() == 1
    review.refresh_from_db()
    assert (review.state, review.resolution, review.resolved_by.username) == ("resolved", "applied_second", "ann")
    assert Face.objects.get(pk=sampled.face_id).identity_id == team["people"][0].pk
    assert Flag.objects.get(pk=sampled.pk).state == Flag.State.REJECTED

    ann.goto(f"{base}/team")
    assert "bob" in ann.locator(".throughput-table").inner_text()
    # The narrow side panel: the share's box, its % and the Set button stay on one line.
    share = ann.locator("#team input[name=share]").bounding_box()
    button = ann.locator("#team button:has-text('Set')").bounding_box()
    assert abs((share["y"] + share["height"] / 2) - (button["y"] + button["height"] / 2)) < 4
    shot(ann, "team_page")
