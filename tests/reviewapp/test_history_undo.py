"""Undo is shown only where it will work: on the history's rows and on decided review cards."""
import re

import pytest

from reviewapp.services import labels
from reviewapp.services.flags import flag_decide
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, MembershipFactory, RoundFactory


@pytest.fixture
def world(db, user, django_user_model):
    alice = IdentityFactory(name="alice")
    bob = IdentityFactory(name="bob", source=alice.source)
    MembershipFactory(user=user, dataset=alice.dataset)
    other = django_user_model.objects.create_user(username="colleague", password="pw-colleague-1")
    MembershipFactory(user=other, dataset=alice.dataset)
    return {"alice": alice, "bob": bob, "other": other, "dataset": alice.dataset,
            "faces": [FaceFactory(identity=alice) for _ in range(3)]}


def _undo_buttons(html: str) -> list[int]:
    return sorted(int(i) for i in re.findall(r'data-undo="(\d+)"', html))


def test_history_offers_undo_on_each_own_decision_that_would_work(client, world, user):
    faces, other = world["faces"], world["other"]
    first = labels.face_remove(face_id=faces[0].pk, user=user)
    second = labels.face_relabel(face_id=faces[1].pk, identity_id=world["bob"].pk, user=user)
    theirs = labels.face_remove(face_id=faces[2].pk, user=other)
    labels.face_restore(face_id=faces[0].pk, user=other)  # my first removal is stale now
    client.force_login(user)
    html = client.get(f"/datasets/{world['dataset'].pk}/history").content.decode()
    assert _undo_buttons(html) == [second.pk]
    row = re.search(rf'id="decision-{first.pk}".*?</tr>', html, re.S).group(0)
    # The reason in short on the row itself, in full as its tooltip.
    assert ('title="The face was changed since this decision">can’t undo '
            '<small class="undo-why">face changed since</small></span>') in row
    row = re.search(rf'id="decision-{theirs.pk}".*?</tr>', html, re.S).group(0)
    assert "Undo" not in row and "can’t undo" not in row  # not mine: nothing offered, nothing explained


def test_history_names_a_low_quality_mark_in_sentence_case(client, world, user):
    labels.face_mark_low_quality(face_id=world["faces"][0].pk, user=user)
    client.force_login(user)
    html = client.get(f"/datasets/{world['dataset'].pk}/history").content.decode()
    assert '<span class="action-tag action-low_quality">Low quality</span>' in html


def test_a_decided_card_offers_undo_only_while_it_would_work(client, world, user):
    round_ = RoundFactory(dataset=world["dataset"])
    flag = FlagFactory(face=world["faces"][0], round=round_, suggestion="remove")
    decision = flag_decide(flag_id=flag.pk, action="confirm", user=user)
    client.force_login(user)
    html = client.get(f"/flags/{flag.pk}/").content.decode()
    assert f'hx-post="/decisions/{decision.pk}/undo"' in html and 'class="fc-undo"' in html
    labels.face_restore(face_id=world["faces"][0].pk, user=world["other"])
    html = client.get(f"/flags/{flag.pk}/").content.decode()
    assert 'class="fc-undo"' not in html
    client.force_login(world["other"])  # someone else's decision: never their Undo
    labels.face_remove(face_id=world["faces"][0].pk, user=user)
    assert 'class="fc-undo"' not in client.get(f"/flags/{flag.pk}/").content.decode()
