"""manage.py import_dataset PATH --name NAME --format folder|list|recordio [...]"""
import json
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from reviewapp.services.imports import DEFAULT_SOURCE, FORMATS, ImportImpossible, dataset_import


class _ProgressBars:
    """One tqdm bar per import stage, drawn only on a terminal (never into logs or pipes)."""

    def __init__(self, stream):
        self.stream = stream
        self.enabled = stream.isatty()
        self.bar = None
        self.stage = None

    def __call__(self, stage: str, done: int, total):
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            unit = {"scan": " entries", "identities": " identities"}.get(stage, " faces")
            self.bar = tqdm(desc=stage, total=total, unit=unit, file=self.stream, dynamic_ncols=True)
        self.bar.update(done - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Command(BaseCommand):
    help = (
        "Import faces from an image folder (PATH/<identity>/<image>), a file list "
        "('path label', 'path<TAB>label' or InsightFace .lst) or an InsightFace train.rec. "
        "Bad entries are reported, never fatal; re-running the same import adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="folder, file list, or .rec file (or its folder)")
        parser.add_argument("--name", help="dataset to create, or to re-import into")
        parser.add_argument("--format", dest="fmt", required=True, choices=FORMATS)
        parser.add_argument("--root", help="folder that list paths are relative to (default: the list's)")
        parser.add_argument("--into", help="add a source to this existing dataset instead of --name")
        parser.add_argument("--source", default=None, help=f"source name (default: {DEFAULT_SOURCE})")
        parser.add_argument("--verify-images", action="store_true", help="fully decode every image (slow)")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")

    def handle(self, *args, **options):
        if not options["name"] and not options["into"]:
            raise CommandError("give --name NAME (or --into DATASET --source NAME)")
        bars = _ProgressBars(sys.stderr)
        try:
            report = dataset_import(
                path=options["path"], name=options["name"], fmt=options["fmt"], root=options["root"],
                into=options["into"], source=options["source"], verify_images=options["verify_images"],
                progress=bars, actor="cli",
            )
        except ImportImpossible as exc:
            raise CommandError(str(exc)) from None
        finally:
            bars.close()
        self.stdout.write(report.text())
        if options["json"]:
            self.stdout.write(json.dumps(report.summary(), ensure_ascii=False))
