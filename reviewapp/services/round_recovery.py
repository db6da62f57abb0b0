"""Rounds whose worker died, or whose message was lost, sent again for a live worker to take over.

rounds_recover() runs when a rounds worker starts and after each round it ran; rounds_sweep()
runs periodically in every rounds worker (the timer in reviewapp.tasks). A copy that finds its
round alive does nothing (services.rounds.round_claim), so sending too many is harmless.
rounds_centres_backfill() also runs when a rounds worker starts: see there.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from .. import queueing
from ..models import Round
from ..rules import ROUND_ACTIVE, ROUND_RUNNING
from ..runs import round_run_folder
from .round_pipeline import round_centres_write
from .rounds import stale_seconds
from .workers import sweep_seconds

log = logging.getLogger("reviewapp.rounds")


def rounds_sweep() -> int:
    """Send a task for each round that a live worker may claim right now, so that an idle
    worker takes over a dead one's round within the stale limit plus one sweep period.
    Claimable: running with a stale heartbeat, or queued for longer than a period (its message
    may be lost: the broker was down when it was started). Copies expire after two periods, so
    they do not pile up behind a busy worker. Returns how many were sent; none while the broker
    is down (the next sweep tries again)."""
    period, now = sweep_seconds(), timezone.now()
    stale_before = now - timedelta(seconds=stale_seconds())
    claimable = (Round.objects.filter(status__in=ROUND_RUNNING, heartbeat_at__lt=stale_before)
                 | Round.objects.filter(status__in=ROUND_RUNNING, heartbeat_at__isnull=True)
                 | Round.objects.filter(status=Round.Status.QUEUED, created_at__lt=now - timedelta(seconds=period)))
    sent = 0
    for round_id in claimable.order_by("pk").values_list("pk", flat=True):
        try:
            queueing.round_send(round_id, expires=2 * period)
        except Exception as exc:
            log.warning("recovery could not reach the broker (%s); the next sweep tries again", exc)
            break
        sent += 1
    if sent:
        log.info("sweep: sent %d round(s) a live worker may take over", sent)
    return sent


def rounds_recover() -> int:
    """Queue every unfinished round again, timed for when it becomes claimable: a running
    round when its heartbeat goes stale, a queued one now (its message may have been lost with
    a worker). Copies that find the round alive do nothing. Returns how many were queued."""
    now, stale = timezone.now(), stale_seconds()
    rows = Round.objects.filter(status__in=ROUND_ACTIVE).values_list("pk", "status", "heartbeat_at")
    queued = 0
    for round_id, status, heartbeat_at in rows:
        wait = 0.0
        if status != Round.Status.QUEUED and heartbeat_at is not None:
            wait = stale - (now - heartbeat_at).total_seconds()
        queueing.round_send(round_id, countdown=wait + 1.0 if wait > 0 else None)
        queued += 1
    if queued:
        log.info("queued %d unfinished round(s) again", queued)
    return queued


def rounds_centres_backfill() -> int:
    """Write the identity centres of each dataset's latest published round where they are missing.
    A round writes them when it publishes (round_pipeline.round_centres_write); rounds published
    before that computed them on the first relabel search instead, and a search only reads them
    now. Rounds whose files this host does not hold are skipped. Returns how many were written."""
    latest = (Round.objects.filter(status=Round.Status.PUBLISHED).order_by("dataset_id", "-number")
              .distinct("dataset_id") if connection.vendor == "postgresql" else None)
    if latest is None:  # SQLite has no DISTINCT ON: the embedded database holds a few datasets
        latest = {}
        for round_ in Round.objects.filter(status=Round.Status.PUBLISHED).order_by("-number"):
            latest.setdefault(round_.dataset_id, round_)
        latest = latest.values()
    written = 0
    for round_ in latest:
        if round_run_folder(round_.pk).identity_centres.exists():
            continue
        try:
            written += round_centres_write(round_=round_) is not None
        except Exception:  # a round's files that cannot be read must not keep a worker from starting
            log.exception("round %s: could not write its identity centres", round_.pk)
    if written:
        log.info("wrote the identity centres of %d published round(s)", written)
    return written
