"""Working a review queue in a real browser: keyboard decisions, shift-click bulk relabel, the ? overlay."""
import pytest

from reviewapp.models import Face, Flag
from tests.browser.conftest import ARTIFACTS
from tests.browser.faces import face_maker
from tests.browser.signin import PASSWORD, sign_in
from tests.factories import FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def queue(db, tmp_path, django_user_model):
    user = django_user_model.objects.create_user(username="rev", password=PASSWORD)
    source = SourceFactory(root=str(tmp_path), dataset__name="celebs-v2")
    names = ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "<script>alert(1)</script>"]
    people = [IdentityFactory(source=source, name=n) for n in names]
    MembershipFactory(user=user, dataset=source.dataset)
    round_ = RoundFactory(dataset=source.dataset, number=3)
    face = face_maker(tmp_path)

    for person in people:
        for _ in range(3):
            face(person)
    flags = []
    for i in range(10):
        own, other = people[i % 4], people[(i + 1) % 4]
        evidence = {"reason": "closed_set", "band": "noisy", "theta_y_deg": 84.0 - i, "theta_1_deg": 51.5 + i / 2,
                    "norm": 20.5 + i / 3}
        flags.append(FlagFactory(round=round_, face=face(own), kind=Flag.Kind.NOISY, score=30.0 - i,
                                 suggestion=Flag.Suggestion.RELABEL, suggested_identity=other, evidence=evidence))
    FlagFactory(round=round_, face=face(people[4]), kind=Flag.Kind.NOISY, score=1.0, suggestion=Flag.Suggestion.REMOVE,
                evidence={"reason": "open_set", "angle_own_prototype_centre_deg": 88.1,
                          "angle_nearest_other_centre_deg": 80.2})
    for i in range(3):
        FlagFactory(round=round_, face=face(people[i]), kind=Flag.Kind.HARD, score=9.0 - i,
                    suggestion=Flag.Suggestion.KEEP,
                    evidence={"reason": "margin_band", "band": "hard", "theta_y_deg": 55.0 + i, "theta_1_deg": 61.0,
                              "nearest_identity_id": people[i + 1].pk})
    pair = FlagFactory(round=round_, face=None, kind=Flag.Kind.DUPLICATE_IDENTITY, score=0.71,
                       suggestion=Flag.Suggestion.MERGE, identity_a=people[0], identity_b=people[1],
                       suggested_identity=people[1], evidence={"cosine": 0.71, "size": 4, "other_size": 4})
    return {"user": user, "dataset": source.dataset, "people": people, "flags": flags, "pair": pair}


def focused_id(page) -> str:
    return page.evaluate("document.activeElement && document.activeElement.id")


def wait_focus(page, element_id: str):
    page.wait_for_function("id => document.activeElement && document.activeElement.id === id", arg=element_id)


def test_work_a_noisy_queue_with_the_keyboard_and_bulk_relabel(live_server, page, screenshot, queue):
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    flags = queue["flags"]
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{queue['dataset'].pk}/review/noisy/")
    page.wait_for_selector(".face-card")
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".face-card").count() == 11
    assert page.locator(".face-thumb.box-noisy").count() == 11
    assert page.locator(".fc-name", has_text="<script>alert(1)</script>").count() >= 1
    screenshot("review_queue")

    # j focuses the first card; c, r and x decide it and the focus moves on each time.
    page.keyboard.press("j")
    wait_focus(page, f"flag-{flags[0].pk}")
    page.keyboard.press("c")
    page.wait_for_selector(f"#flag-{flags[0].pk}.decided")
    wait_focus(page, f"flag-{flags[1].pk}")
    page.keyboard.press("r")
    page.wait_for_selector(f"#flag-{flags[1].pk}.decided")
    wait_focus(page, f"flag-{flags[2].pk}")
    page.keyboard.press("x")
    page.wait_for_selector(f"#flag-{flags[2].pk}.decided")
    wait_focus(page, f"flag-{flags[3].pk}")
    page.keyboard.press("k")
    wait_focus(page, f"flag-{flags[2].pk}")

    faces = {f.pk: Face.objects.get(pk=f.face_id) for f in flags[:3]}
    assert faces[flags[0].pk].identity_id == flags[0].suggested_identity_id
    assert Flag.objects.get(pk=flags[1].pk).state == Flag.State.REJECTED
    assert faces[flags[1].pk].identity_id == flags[1].face.identity_id
    assert faces[flags[2].pk].status == Face.Status.REMOVED

    # Click one card, shift-click another: the range between them is selected.
    page.click(f"#flag-{flags[4].pk} .fc-evidence")
    page.click(f"#flag-{flags[6].pk} .fc-evidence", modifiers=["Shift"])
    assert page.locator("[data-selected-count]").inner_text() == "3 selected"
    assert page.locator(".face-card input[name=ids]:checked").count() == 3
    target = queue["people"][3]
    page.click(".bulk-relabel summary")
    page.locator(".bulk-relabel .identity-option", has_text=target.name).click()
    page.click("[data-bulk=relabel]")
    for flag in flags[4:7]:
        page.wait_for_selector(f"#flag-{flag.pk}.decided")
    assert page.locator("#messages", has_text="Decided 3 flags.").count() == 1
    assert {Face.objects.get(pk=f.face_id).identity_id for f in flags[4:7]} == {target.pk}
    assert Face.objects.get(pk=flags[3].face_id).identity_id == flags[3].face.identity_id
    assert page.locator("[data-selected-count]").inner_text() == "0 selected"

    page.evaluate("window.scrollTo(0, 0)")
    screenshot("review_queue_decided")

    # a selects the page, again unselects it.
    page.locator(f"#flag-{flags[7].pk}").focus()
    page.keyboard.press("a")
    assert page.locator(".face-card input[name=ids]:checked").count() == 5  # the open cards
    page.keyboard.press("a")
    assert page.locator(".face-card input[name=ids]:checked").count() == 0

    # Space selects the focused card, b confirms the selection.
    page.keyboard.press(" ")
    page.keyboard.press("j")
    page.keyboard.press(" ")
    assert page.locator("[data-selected-count]").inner_text() == "2 selected"
    page.keyboard.press("b")
    for flag in flags[7:9]:
        page.wait_for_selector(f"#flag-{flag.pk}.decided")
    assert [Face.objects.get(pk=f.face_id).identity_id for f in flags[7:9]] == \
        [f.suggested_identity_id for f in flags[7:9]]

    # ? shows the shortcuts, Esc closes them.
    assert page.locator(".bulk-relabel[open]").count() == 0
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("?")
    page.wait_for_selector("#shortcuts[open]")
    assert page.locator("#shortcuts kbd", has_text="x").count() >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review_shortcuts.png"))  # the viewport, where the dialog is
    page.keyboard.press("Escape")
    page.wait_for_selector("#shortcuts:not([open])", state="attached")
    assert dialogs == []


def test_hard_queue_shows_yellow_boxes_and_relabels_by_name_search(live_server, page, screenshot, queue):
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{queue['dataset'].pk}/review/hard/")
    page.wait_for_selector(".face-card")
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert page.locator(".face-thumb.box-hard").count() == 3
    assert page.locator(".face-thumb.box-noisy").count() == 0
    assert page.locator(".fc-who dt", has_text="Nearest").count() == 3
    screenshot("review_queue_hard")
    first = page.locator(".face-card").first
    flag_id = int(first.get_attribute("data-flag"))
    target = queue["people"][3]
    page.keyboard.press("j")
    page.keyboard.press("e")
    page.keyboard.type("Johnson")
    first.locator(".identity-option", has_text=target.name).wait_for()
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#flag-{flag_id}.decided")
    assert Face.objects.get(flags__pk=flag_id).identity_id == target.pk
    assert Flag.objects.get(pk=flag_id).state == Flag.State.OVERRIDDEN


def test_duplicate_identities_show_as_pairs_and_merge(live_server, page, screenshot, queue):
    pair, people = queue["pair"], queue["people"]
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/datasets/{queue['dataset'].pk}/review/duplicate_identity/")
    card = page.locator(f"#flag-{pair.pk}.pair-card")
    card.wait_for()
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    assert card.locator(".pair-side").count() == 2
    assert card.locator(".fc-refs img").count() == 8  # four faces of each
    assert card.locator(f"a[href='/identities/{people[0].pk}/vs/{people[1].pk}/?flag={pair.pk}']").count() == 1
    screenshot("review_queue_pairs")
    page.keyboard.press("j")
    page.keyboard.press("c")
    page.wait_for_selector(f"#flag-{pair.pk}.decided")
    people[0].refresh_from_db()
    assert people[0].merged_into_id == people[1].pk


def test_flag_card_page(live_server, page, screenshot, queue):
    flag = queue["flags"][0]
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/flags/{flag.pk}/")
    page.wait_for_selector(".face-thumb.large.box-noisy")
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    evidence = page.locator(".fc-evidence")
    assert "Looks more like" in evidence.inner_text() and "84" not in evidence.inner_text()
    page.click(".fc-raw summary")  # the numbers behind the toggle
    assert "84" in page.locator(".fc-raw dl").inner_text()
    screenshot("flag_card")
    page.keyboard.press("j")
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.matches('input[data-identity-search]')")
    page.keyboard.press("Escape")
    wait_focus(page, f"flag-{flag.pk}")
    page.keyboard.press("c")
    page.wait_for_selector(f"#flag-{flag.pk}.decided")
    assert Face.objects.get(pk=flag.face_id).identity_id == flag.suggested_identity_id
    # u undoes it: the card comes back open, the face under its old identity.
    page.keyboard.press("u")
    page.wait_for_selector(f"#flag-{flag.pk}:not(.decided) [data-key~=c]")
    wait_focus(page, f"flag-{flag.pk}")
    assert Face.objects.get(pk=flag.face_id).identity_id == flag.face.identity_id
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN
