"""The app works under its own Content-Security-Policy: a keyboard decision in a review queue,
in a browser context that enforces the policy, with no violation reported."""
import pytest

from reviewapp.models import Face, Flag
from tests.browser.signin import sign_in
from tests.browser.test_review import queue  # noqa: F401 (fixture)

pytestmark = pytest.mark.browser


def test_a_queue_is_worked_from_the_keyboard_under_the_policy(live_server, browser, queue):  # noqa: F811
    context = browser.new_context(viewport={"width": 1366, "height": 768})  # the policy enforced
    page = context.new_page()
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        sign_in(page, live_server)
        page.goto(f"{live_server.url}/datasets/{queue['dataset'].pk}/review/noisy/")
        page.wait_for_selector(".face-card")
        first = queue["flags"][0]
        page.keyboard.press("j")
        page.keyboard.press("c")
        page.wait_for_selector(f"#flag-{first.pk}.decided")  # htmx swapped the decided card in
        page.keyboard.press("?")
        page.wait_for_selector("#shortcuts[open]")  # faceclean.js opened the dialog
    finally:
        context.close()
    assert Face.objects.get(pk=first.face_id).identity_id == first.suggested_identity_id
    assert Flag.objects.get(pk=first.pk).state != Flag.State.OPEN
    assert violations == []
