"""Start a cleaning round from the command line, optionally waiting for it (or running it here)."""
import json
import os
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from reviewapp.models import Dataset, Round
from reviewapp.rules import ROUND_ACTIVE
from reviewapp.services.rounds import RoundConflict, round_cancel, round_start
from reviewapp.services.round_pipeline import execute_round
from reviewapp.services.workers import worker_name

POLL_SECONDS = 2.0


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def _signals_interrupt():
    """SIGTERM (kill, a service manager stopping us) ends an inline round the way Ctrl-C does, so
    the round is cancelled instead of left "training" with no worker, blocking the dataset."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _read_config(text: str | None) -> dict:
    """A JSON object, given inline or as the path of a .json file."""
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        raw, where = text, "--config"
    elif os.path.isfile(text):
        raw, where = Path(text).read_text(encoding="utf-8"), text
    else:
        raise CommandError(f"--config {text!r} is neither a JSON object nor a file")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CommandError(f"{where} must hold a JSON object")
    return config


def progress_line(progress: dict) -> str:
    parts = [f"{progress.get('stage', '?')}"]
    if progress.get("substage") and progress["substage"] != "train":
        parts.append(f"({progress['substage']})")
    if progress.get("percent") is not None:
        parts.append(f"{progress['percent']:5.1f}%")
    if progress.get("samples_per_s"):
        parts.append(f"{progress['samples_per_s']:.1f} samples/s")
    if progress.get("eta_s") is not None:
        parts.append(f"ETA {int(progress['eta_s']) // 60}m{int(progress['eta_s']) % 60:02d}s")
    return " ".join(parts)


class Command(BaseCommand):
    help = ("Queue a cleaning round (train, extract embeddings, mine, publish flags) on the rounds queue. "
            "--wait follows it to its end; --inline runs it in this process, without a worker.")

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--method", choices=Round.Method.values, help="required unless --cancel")
        parser.add_argument("--config", help='overrides as a JSON object or a .json file, e.g. \'{"epochs": 2}\'; '
                                             'method embeddings: {"embeddings": "E.npy", "norms": "N.npy"}')
        parser.add_argument("--wait", action="store_true", help="print progress until the round ends")
        parser.add_argument("--inline", action="store_true", help="run the round here instead of in a worker "
                                                                  "(implies --wait)")
        parser.add_argument("--cancel", action="store_true", help="cancel the dataset's queued or running round")

    def handle(self, *args, **options):
        dataset = Dataset.objects.filter(name=options["dataset"]).first()
        if dataset is None:
            raise CommandError(f"No dataset named {options['dataset']!r}")
        if options["cancel"]:
            return self._cancel_active(dataset)
        if not options["method"]:
            raise CommandError("give --method (or --cancel)")
        try:
            round_ = round_start(dataset=dataset, method=options["method"], config=_read_config(options["config"]),
                                 enqueue=not options["inline"])
        except (ValueError, RoundConflict) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Round {round_.number} of {dataset.name} (id {round_.pk}) queued")
        if options["inline"]:
            round_ = self._run_here(round_)
        elif options["wait"]:
            round_ = self._follow(round_)
        else:
            return
        self.stdout.write(f"Round {round_.number}: {round_.status}"
                          + (f", {round_.progress.get('flags', 0)} flags" if round_.status == Round.Status.PUBLISHED
                             else f" ({round_.error})" if round_.error else ""))
        if round_.status != Round.Status.PUBLISHED:
            raise CommandError(f"round {round_.number} {round_.status}", returncode=1)

    def _printer(self):
        last = {"line": None, "at": 0.0}

        def show(progress: dict) -> None:
            line, now = progress_line(progress), time.monotonic()
            stage_changed = last["line"] is None or line.split()[0] != last["line"].split()[0]
            if line != last["line"] and (stage_changed or now - last["at"] >= POLL_SECONDS):
                self.stdout.write(line)
                last.update(line=line, at=now)

        return show

    def _cancel_active(self, dataset: Dataset) -> None:
        active = Round.objects.filter(dataset=dataset, status__in=ROUND_ACTIVE).order_by("-pk").first()
        if active is None:
            raise CommandError(f"{dataset.name} has no active round to cancel")
        try:
            round_ = round_cancel(round_id=active.pk)
        except RoundConflict as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Round {round_.number} of {dataset.name} cancelled; its worker stops at its next heartbeat")

    def _run_here(self, round_: Round) -> Round:
        try:
            with _signals_interrupt():
                execute_round(round_id=round_.pk, worker=worker_name("inline"), on_progress=self._printer())
        except KeyboardInterrupt as exc:
            try:
                round_cancel(round_id=round_.pk)
                self.stdout.write(f"Interrupted ({exc or 'SIGINT'}): round cancelled")
            except RoundConflict:  # it ended just before the signal
                pass
        return Round.objects.get(pk=round_.pk)

    def _follow(self, round_: Round) -> Round:
        show = self._printer()
        try:
            while True:
                round_.refresh_from_db()
                show(round_.progress or {})
                if round_.status not in ROUND_ACTIVE:
                    return round_
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            raise CommandError(f"stopped following round {round_.number}; it goes on in its worker") from None
