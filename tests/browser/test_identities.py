"""Identity pages in a real browser: bulk-remove faces on an identity page, merge two
identities on the pair page choosing the survivor, and undo the merge from the history."""
import io
import itertools
import os
import re

import pytest
from PIL import Image, ImageDraw

from reviewapp.models import Decision, Face, Flag, Identity
from tests.browser.signin import PASSWORD, sign_in
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory, SourceFactory

pytestmark = pytest.mark.browser


def face_jpeg(skin, background, tilt=0) -> bytes:
    """A small drawn face, so that the screenshots look like what reviewers see."""
    image = Image.new("RGB", (128, 128), background)
    draw = ImageDraw.Draw(image)
    draw.ellipse((34 + tilt, 20, 94 + tilt, 104), fill=skin)
    for x in (48, 72):
        draw.ellipse((x + tilt, 50, x + 8 + tilt, 58), fill=(40, 30, 30))
    draw.arc((50 + tilt, 70, 78 + tilt, 88), 20, 160, fill=(120, 40, 40), width=2)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def add_faces(identity, count, skin, background):
    faces = []
    for tilt in itertools.islice(itertools.cycle((-6, -3, 0, 3, 6)), count):
        face = FaceFactory(identity=identity)
        path = os.path.join(identity.source.root, face.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as out:
            out.write(face_jpeg(skin, background, tilt))
        faces.append(face)
    return faces


@pytest.fixture
def scene(db, tmp_path, django_user_model):
    user = django_user_model.objects.create_user(username="rev", password=PASSWORD)
    source = SourceFactory(root=str(tmp_path / "images"), dataset__name="lfw-noisy")
    MembershipFactory(user=user, dataset=source.dataset)
    alice = IdentityFactory(source=source, name="Alice Martin")
    alice2 = IdentityFactory(source=source, name="Alice_Martin <dup>")
    carl = IdentityFactory(source=source, name="Carl Svensson")
    alice_faces = add_faces(alice, 14, (224, 184, 150), (90, 120, 160))
    alice2_faces = add_faces(alice2, 5, (220, 180, 146), (100, 130, 150))
    carl_faces = add_faces(carl, 3, (160, 110, 80), (60, 60, 60))
    round_ = RoundFactory(dataset=source.dataset, number=1)
    FlagFactory(face=alice_faces[2], round=round_, kind=Flag.Kind.NOISY)
    FlagFactory(face=alice_faces[5], round=round_, kind=Flag.Kind.HARD)
    FlagFactory(face=None, round=round_, kind=Flag.Kind.DUPLICATE_IDENTITY, identity_a=alice, identity_b=alice2,
                suggestion=Flag.Suggestion.MERGE, evidence={"cosine": 0.87, "size": 14, "other_size": 5})
    return {"user": user, "alice": alice, "alice2": alice2, "carl": carl, "alice_faces": alice_faces,
            "alice2_faces": alice2_faces, "carl_faces": carl_faces, "dataset": source.dataset}


def test_bulk_remove_merge_and_undo(live_server, page, screenshot, scene):
    sign_in(page, live_server)
    alice, alice2 = scene["alice"], scene["alice2"]

    # Identity page: select two faces (a click and a shift-click range would do too), remove them.
    page.goto(f"{live_server.url}/identities/{alice.pk}/")
    assert page.locator(".face-card").count() == 14
    assert page.locator(".face-thumb.box-noisy").count() == 1 and page.locator(".face-thumb.box-hard").count() == 1
    doomed = scene["alice_faces"][:2]
    for face in doomed:
        page.locator(f"#face-{face.pk} .face-thumb").click()
    page.locator("[data-selected-count]").filter(has_text="2 selected").wait_for()
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("identity_page")
    page.click("button[name=action][value=remove]")
    page.locator("#messages", has_text="Removed 2 faces").wait_for()
    assert page.locator(".face-card").count() == 12
    assert page.locator("#identity-counts").inner_text().startswith("12 active")
    assert list(Face.objects.filter(pk__in=[f.pk for f in doomed]).values_list("status", flat=True)) \
        == ["removed", "removed"]

    # Relabel one face to an identity found by name.
    moving = scene["alice_faces"][3]
    page.locator(f"#face-{moving.pk} .face-thumb").click()
    page.click(".relabel-panel summary")
    page.fill(".relabel-body input[name=q]", "carl")
    page.locator("#relabel-options .identity-option", has_text="Carl Svensson").wait_for()
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("identity_relabel")
    page.click("button[name=action][value=relabel]")
    page.locator("#messages", has_text="Relabelled 1 face to Carl Svensson").wait_for()
    assert page.locator(f"#face-{moving.pk}").count() == 0
    assert Face.objects.get(pk=moving.pk).identity_id == scene["carl"].pk

    # Keyboard: the focused card's x removes just that face.
    target = scene["alice_faces"][4]
    page.focus(f"#face-{target.pk}")
    page.keyboard.press("x")
    page.locator("#messages", has_text="Removed 1 face.").wait_for()
    assert Face.objects.get(pk=target.pk).status == "removed"
    assert page.locator(".face-card").count() == 10

    # Removed faces come back dimmed when asked for, and can be restored from there.
    page.goto(f"{live_server.url}/identities/{alice.pk}/?removed=1")
    assert page.locator(".face-card.is-removed .face-thumb.removed").count() == 3
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("identity_removed")

    # Pair page: the duplicate flag's two identities side by side; keep the second one's name.
    flag = Flag.objects.get(kind=Flag.Kind.DUPLICATE_IDENTITY)
    page.locator(".duplicates a", has_text="Alice_Martin <dup>").click()
    page.wait_for_url(f"**/identities/{alice.pk}/vs/{alice2.pk}/?flag={flag.pk}")
    assert page.locator(".compare-side h2", has_text="Alice_Martin <dup>").count() == 1
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("pair_page")
    page.check(f"input[name=survivor_id][value='{alice2.pk}']")
    page.click("button[name=verdict][value=same]")
    page.locator(".merge-result", has_text="Merged Alice Martin into Alice_Martin <dup>").wait_for()
    assert Identity.objects.get(pk=alice.pk).merged_into_id == alice2.pk
    assert Face.objects.filter(identity=alice2, status="active").count() == 15
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.CONFIRMED

    # History: the merge is my latest decision; undo it.
    page.goto(f"{live_server.url}/datasets/{scene['dataset'].pk}/history")
    merge = Decision.objects.get(action="merge")
    row = page.locator(f"#decision-{merge.pk}")
    assert "Alice Martin" in row.inner_text() and "Alice_Martin <dup>" in row.inner_text()
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("history")
    row.locator("button", has_text="Undo").click()
    page.locator("#messages", has_text="Undid your merge decision").wait_for()
    page.locator(f"#decision-{merge.pk}.is-undone").wait_for()
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("history_undone")
    assert Identity.objects.get(pk=alice.pk).merged_into_id is None
    assert Face.objects.filter(identity=alice).count() == 13
    assert Face.objects.filter(identity=alice2).count() == 5
    assert Flag.objects.get(pk=flag.pk).state == Flag.State.OPEN

    # Filtering the history by action swaps the list in place.
    page.select_option("select[name=action]", "remove")
    assert Decision.objects.filter(action="remove").count() == 3
    page.wait_for_function("document.querySelectorAll('#history-rows tr').length === 3")
    assert "action=remove" in page.url


def _focused_id(page) -> str:
    return page.evaluate("document.activeElement ? document.activeElement.id : ''")


def test_browse_filter_relabel_by_keyboard_and_undo_an_older_decision(live_server, page, screenshot, scene):
    sign_in(page, live_server)
    alice, faces = scene["alice"], scene["alice_faces"]

    # The identity list: from the dataset page, search by name, sort by size.
    page.goto(f"{live_server.url}/datasets/{scene['dataset'].pk}/")
    page.click(".subnav a:text('Identities')")
    page.wait_for_url(f"**/datasets/{scene['dataset'].pk}/identities/")
    assert page.locator("#identity-rows tr").count() == 3
    page.fill("#identity-filters input[name=q]", "alice")
    page.wait_for_function("document.querySelectorAll('#identity-rows tr').length === 2")
    page.select_option("#identity-filters select[name=sort]", "size")
    page.wait_for_url("**sort=size**")
    assert "q=alice" in page.url
    rows = page.locator("#identity-rows tr")
    assert rows.nth(0).locator("td").nth(1).inner_text() == "14"
    assert rows.nth(0).locator("td").nth(3).inner_text() == "7.1 %"  # 1 open noisy flag of 14 faces
    screenshot("identity_list")

    # Open Alice; filter her faces by an open noisy flag, then clear the filter.
    rows.nth(0).locator("a", has_text="Alice Martin").click()
    page.wait_for_url(f"**/identities/{alice.pk}/")
    page.select_option("#face-filter select[name=kind]", "noisy")
    page.click("#face-filter button[type=submit]")
    page.wait_for_url("**kind=noisy**")
    assert page.locator(".face-card").count() == 1 and page.locator(f"#face-{faces[2].pk}").count() == 1
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("identity_filtered")
    page.click("#face-filter a:text('Clear filter')")
    page.wait_for_url(f"**/identities/{alice.pk}/")
    assert page.locator(".face-card").count() == 14

    # An older decision to undo later: remove face 0 with its own key.
    page.focus(f"#face-{faces[0].pk}")
    page.keyboard.press("x")
    page.locator("#messages", has_text="Removed 1 face.").wait_for()
    page.wait_for_function(f"document.activeElement.id === 'face-{faces[1].pk}'")  # the next card
    removal = Decision.objects.get(action="remove", face_id=faces[0].pk)

    # Relabel face 3 by keyboard: e, type, Enter. The focus goes on to face 4, and j continues.
    page.focus(f"#face-{faces[3].pk}")
    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.name") == "q"
    page.keyboard.type("carl")
    page.locator("#relabel-options .identity-option", has_text="Carl Svensson").wait_for()
    page.keyboard.press("Enter")
    page.locator("#messages", has_text="Relabelled 1 face to Carl Svensson").wait_for()
    page.locator(f"#face-{faces[3].pk}").wait_for(state="detached")
    page.wait_for_function(f"document.activeElement && document.activeElement.id === 'face-{faces[4].pk}'")
    page.keyboard.press("j")
    assert _focused_id(page) == f"face-{faces[5].pk}"
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("identity_focus_after_relabel")
    assert Face.objects.get(pk=faces[3].pk).identity_id == scene["carl"].pk

    # History: the older removal (not the latest decision) can be undone; the relabel stays.
    page.goto(f"{live_server.url}/datasets/{scene['dataset'].pk}/history")
    row = page.locator(f"#decision-{removal.pk}")
    row.locator("button[data-undo]").click()
    page.locator("#messages", has_text=f"Undid your remove decision #{removal.pk}.").wait_for()
    page.locator(f"#decision-{removal.pk}.is-undone").wait_for()
    assert page.locator(f"#decision-{removal.pk} button[data-undo]").count() == 0
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("history_undo_older")
    assert Face.objects.get(pk=faces[0].pk).status == "active"
    assert Face.objects.get(pk=faces[3].pk).identity_id == scene["carl"].pk


def test_undo_a_batch_from_the_history(live_server, page, screenshot, scene):
    sign_in(page, live_server)
    alice, faces = scene["alice"], scene["alice_faces"]
    page.goto(f"{live_server.url}/identities/{alice.pk}/")
    for face in faces[6:9]:
        page.locator(f"#face-{face.pk} .face-thumb").click()
    page.click("button[name=action][value=low_quality]")
    page.locator("#messages", has_text="Marked low quality 3 faces.").wait_for()
    batch = Decision.objects.filter(action="low_quality").values_list("batch", flat=True).first()

    page.goto(f"{live_server.url}/datasets/{scene['dataset'].pk}/history")
    assert page.locator(".batch-tag", has_text="batch of 3").count() == 3
    page.on("dialog", lambda dialog: dialog.accept())  # "Undo every decision of yours in this batch…?"
    page.click(f"button[data-undo-batch='{batch}']")
    page.locator("#messages", has_text="Undid 3 decisions.").wait_for()
    assert page.locator(f"button[data-undo-batch='{batch}']").count() == 0
    page.wait_for_function("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    screenshot("history_batch_undone")
    assert set(Face.objects.filter(pk__in=[f.pk for f in faces[6:9]]).values_list("status", flat=True)) == {"active"}

    # The batch's own page: its sentence is one piece of text, the colon and full stop where they belong.
    page.goto(f"{live_server.url}/datasets/{scene['dataset'].pk}/history?batch={batch}")
    line = page.locator(".batch-line > .batch-what").inner_text()
    assert re.fullmatch(rf"Batch {str(batch)[:8]}: 3 decisions by \S+\.", line), line
    screenshot("history_batch")


def test_focus_moves_on_when_a_name_search_settles_before_the_relabel(live_server, page, scene):
    """A name search still in flight when Enter relabels may answer first, while the relabelled
    card is still on the page: the focus must wait for the relabel's own answer (it was put on
    that card, which then left the grid, leaving the focus on <body>)."""
    sign_in(page, live_server)
    faces = scene["alice_faces"]
    page.goto(f"{live_server.url}/identities/{scene['alice'].pk}/")

    def slow_post(route):
        if route.request.method == "POST":
            page.wait_for_timeout(1500)  # the search sent after Enter answers well before this
        route.continue_()

    page.route("**/identities/*/bulk", slow_post)
    page.focus(f"#face-{faces[3].pk}")
    page.keyboard.press("e")
    page.keyboard.type("carl")
    page.locator("#relabel-options .identity-option", has_text="Carl Svensson").wait_for()
    page.keyboard.type(" ")  # one more search, sent 250 ms later: while the relabel waits
    page.keyboard.press("Enter")
    page.locator("#messages", has_text="Relabelled 1 face to Carl Svensson").wait_for()
    page.locator(f"#face-{faces[3].pk}").wait_for(state="detached")
    page.wait_for_function(f"document.activeElement && document.activeElement.id === 'face-{faces[4].pk}'",
                           timeout=5000)
    assert Face.objects.get(pk=faces[3].pk).identity_id == scene["carl"].pk
