"""The audit equals the data when two decisions on the same rows commit at the same moment.

Each test runs two real transactions in two threads on real Postgres. The first transaction
stays open for a moment after its work is done (the time a real request spends between its
last read and its commit); the second starts inside that window. Without row locks the second
one changes what the first one read, and the first then commits a stale audit row; with them,
the second waits for the first to commit. The interleaving is forced rather than left to
chance, so the test fails every time before the fix and passes every time after it; the
first transaction stops waiting as soon as Postgres shows the second one waiting for a lock.
"""
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connection, transaction

from reviewapp.models import Decision, Face, Flag, Identity
from reviewapp.services import faces as face_services
from reviewapp.services import flags as flag_services
from reviewapp.services import labels
from tests.factories import FaceFactory, FlagFactory, IdentityFactory, RoundFactory, SourceFactory

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 3         # the interleaving is forced, so a few repetitions are enough
HOLD_SECONDS = 2   # the longest the first transaction stays open, waiting for the second


def wait_until_done_or_blocked(done: threading.Event, backend: list[int]):
    """Until `done` is set, or the backend whose pid is in `backend` waits for a row lock."""
    deadline = time.monotonic() + HOLD_SECONDS
    while not done.wait(0.02) and time.monotonic() < deadline:
        if not backend:  # the second thread has not connected yet
            continue
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", backend)
            row = cursor.fetchone()
        if row and row[0] == "Lock":
            return


def race(first, second):
    """Run first() in a transaction that stays open until second() has finished, waits for
    a lock, or HOLD_SECONDS passed; second() starts as soon as first() has done its work.
    Returns the order in which the two committed, e.g. ["second", "first"]."""
    if connection.vendor != "postgresql":
        pytest.skip("row-lock races need Postgres (SQLite has one writer at a time)")
    order, errors, backend = [], [], []
    first_done, second_done = threading.Event(), threading.Event()

    def run_first():
        try:
            with transaction.atomic():
                first()
                first_done.set()
                wait_until_done_or_blocked(second_done, backend)
            order.append("first")
        except Exception as error:  # reported by the assertion below, not swallowed
            errors.append(error)
        finally:
            first_done.set()
            connection.close()

    def run_second():
        try:
            with connection.cursor() as cursor:  # connect before the race: setup time must not hide it
                cursor.execute("SELECT pg_backend_pid()")
                backend.append(cursor.fetchone()[0])
            first_done.wait(10)
            second()
            order.append("second")
        except Exception as error:
            errors.append(error)
        finally:
            second_done.set()
            connection.close()

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(order) == ["first", "second"]
    return order


@pytest.fixture
def world(django_user_model):
    source = SourceFactory()
    people = {name: IdentityFactory(source=source, name=name) for name in ("alice", "bob", "carol")}
    return SimpleNamespace(
        dataset=source.dataset, round=RoundFactory(dataset=source.dataset), **people,
        reviewer=django_user_model.objects.create_user(username="reviewer", password="pw-reviewer-1"),
        curator=django_user_model.objects.create_user(username="curator", password="pw-curator-1"),
    )


def relabel_on_identity_page(world, face_ids, identity):
    """What POST /identities/<id>/bulk action=relabel does."""
    result = face_services.faces_bulk_action(face_ids=face_ids, action="relabel", user=world.curator,
                                             dataset=world.dataset, identity_id=identity.pk)
    assert not result.conflicts, result.conflicts


def assert_audit_replays(face, initial, decisions_in_commit_order):
    """Each decision's `before` is the face as the previous commit left it, and the last
    `after` is the face as it is now."""
    state = initial
    for decision in decisions_in_commit_order:
        recorded = {k: decision.before[k] for k in state}
        assert recorded == state, f"{decision.action} recorded {recorded} but the face was {state} at its commit"
        state = {k: decision.after[k] for k in state}
    face.refresh_from_db()
    assert state == {"identity": face.identity_id, "status": face.status}


# -- item 2: keep/reject records the face as it is when it commits ---------------------------------

def test_a_keep_racing_a_relabel_of_its_face_records_the_face_at_its_commit(world):
    for _ in range(ROUNDS):
        face = FaceFactory(identity=world.alice)
        flag = FlagFactory(round=world.round, face=face, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP)
        order = race(
            lambda: flag_services.flag_decide(flag_id=flag.pk, action="reject", user=world.reviewer),
            lambda: relabel_on_identity_page(world, [face.pk], world.bob),
        )
        keep = Decision.objects.get(flag=flag, action=Decision.Action.KEEP)
        relabel = Decision.objects.get(face=face, action=Decision.Action.RELABEL)
        in_order = [keep, relabel] if order == ["first", "second"] else [relabel, keep]
        assert_audit_replays(face, {"identity": world.alice.pk, "status": Face.Status.ACTIVE}, in_order)
        assert keep.before == keep.after


def test_a_relabel_racing_a_keep_of_its_face_records_the_face_at_its_commit(world):
    """The other way round: the relabel is open first; the keep must wait and see its result."""
    for _ in range(ROUNDS):
        face = FaceFactory(identity=world.alice)
        flag = FlagFactory(round=world.round, face=face, kind=Flag.Kind.HARD, suggestion=Flag.Suggestion.KEEP)
        order = race(
            lambda: relabel_on_identity_page(world, [face.pk], world.bob),
            lambda: flag_services.flag_decide(flag_id=flag.pk, action="reject", user=world.reviewer),
        )
        keep = Decision.objects.get(flag=flag, action=Decision.Action.KEEP)
        relabel = Decision.objects.get(face=face, action=Decision.Action.RELABEL)
        in_order = [relabel, keep] if order == ["first", "second"] else [keep, relabel]
        assert_audit_replays(face, {"identity": world.alice.pk, "status": Face.Status.ACTIVE}, in_order)


# -- item 3: a merge racing relabels into the merged identity --------------------------------------

def assert_nothing_left_on_the_merged_identity(world, merged, survivor, moved_in):
    merge = Decision.objects.get(identity=merged, action=Decision.Action.MERGE)
    assert Identity.objects.get(pk=merged.pk).merged_into_id == survivor.pk
    left = list(Face.objects.filter(identity=merged).values_list("pk", flat=True))
    assert left == [], f"faces {left} stayed on the merged identity"
    for face in moved_in:
        face.refresh_from_db()
        assert face.identity_id == survivor.pk
        relabel = Decision.objects.get(face=face, action=Decision.Action.RELABEL)
        assert relabel.after["identity"] == survivor.pk or face.pk in merge.before["faces"], (
            f"face {face.pk} reached the survivor without an audit row that says so")


@pytest.mark.parametrize("first", ["merge", "relabel"])
def test_a_merge_racing_relabels_into_the_merged_identity_leaves_no_face_behind(world, first):
    for _ in range(ROUNDS):
        merged, survivor = IdentityFactory(source=world.alice.source), IdentityFactory(source=world.alice.source)
        FaceFactory.create_batch(2, identity=merged)
        incoming = FaceFactory.create_batch(3, identity=world.carol)

        def merge():
            labels.identity_merge(identity_id=merged.pk, into_id=survivor.pk, user=world.reviewer)

        def relabel():
            relabel_on_identity_page(world, [f.pk for f in incoming], merged)

        race(merge, relabel) if first == "merge" else race(relabel, merge)
        assert_nothing_left_on_the_merged_identity(world, merged, survivor, incoming)


def test_a_relabel_into_a_merged_identity_goes_to_its_survivor(world):
    """The documented choice for a relabel that names an identity merged meanwhile."""
    face = FaceFactory(identity=world.carol)
    labels.identity_merge(identity_id=world.alice.pk, into_id=world.bob.pk, user=world.reviewer)
    decision = labels.face_relabel(face_id=face.pk, identity_id=world.alice.pk, user=world.reviewer)
    face.refresh_from_db()
    assert face.identity_id == world.bob.pk
    assert decision.after["identity"] == world.bob.pk
