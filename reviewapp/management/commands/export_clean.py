"""Write a dataset's cleaned labels (a file list or InsightFace RecordIO) and, optionally,
its decision audit as CSV. See reviewapp.services.exports for the formats."""
import json

from django.core.management.base import BaseCommand, CommandError

from reviewapp.models import Dataset
from reviewapp.services.exports import ExportError, dataset_export, decisions_export


class Command(BaseCommand):
    help = "Export the cleaned dataset: every active face with its final label."

    def add_arguments(self, parser):
        parser.add_argument("--dataset", required=True, help="dataset name")
        parser.add_argument("--out", required=True,
                            help="list file, or the .rec file for --format recordio")
        parser.add_argument("--format", choices=["list", "recordio"], default="list")
        parser.add_argument("--decisions", help="also write the decision audit to this CSV file")
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")

    def handle(self, *args, **options):
        dataset = Dataset.objects.filter(name=options["dataset"]).first()
        if dataset is None:
            raise CommandError(f"No dataset named {options['dataset']!r}")
        try:
            summary = dataset_export(dataset=dataset, out=options["out"], fmt=options["format"])
            decisions = None
            if options["decisions"]:
                decisions = decisions_export(dataset=dataset, out=options["decisions"])
        except (ExportError, OSError) as exc:
            raise CommandError(f"Export failed: {exc}") from exc
        if options["json"]:
            report = summary.as_dict() | {"dataset": dataset.name, "decisions": decisions}
            self.stdout.write(json.dumps(report, ensure_ascii=False, sort_keys=True))
            return
        self.stdout.write(
            f"Exported {summary.faces} faces of {summary.identities} identities to "
            f"{', '.join(summary.paths)} in {summary.seconds:.1f} s"
        )
        if decisions is not None:
            self.stdout.write(f"Wrote {decisions} decisions to {options['decisions']}")
