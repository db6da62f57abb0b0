"""Import benchmark: a generated file list of N faces into a fresh Postgres database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/faceclean .venv/bin/python bench/import.py [--faces N]

Builds identity folders of 20 faces each in a temporary folder (hard links to a few tiny real
JPEGs, so every path exists and passes the same checks as real data), imports the list into a
throw-away database "faceclean_bench" (created and migrated here, dropped afterwards), exports
it if reviewapp.services.exports exists, and prints one JSON object.
"""
import argparse
import importlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")

FACES_PER_IDENTITY = 20
# ext4 allows 65,000 links to one inode: start a new seed image well before that.
LINKS_PER_SEED = 50_000


def tiny_jpeg(shade: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (16, 16), (shade % 256, 128, 255 - shade % 256)).save(out, format="JPEG")
    return out.getvalue()


def make_tree(base: Path, faces: int) -> Path:
    """BASE/images/id<k>/<n>.jpg for `faces` faces, and BASE/list.txt naming them all."""
    images = base / "images"
    seeds = base / "seeds"
    seeds.mkdir()
    images.mkdir()
    seed = None
    with open(base / "list.txt", "w", encoding="utf-8") as listing:
        for n in range(faces):
            if n % LINKS_PER_SEED == 0:
                seed = seeds / f"seed{n // LINKS_PER_SEED}.jpg"
                seed.write_bytes(tiny_jpeg(n // LINKS_PER_SEED))
            identity, index = divmod(n, FACES_PER_IDENTITY)
            folder = images / f"id{identity:06d}"
            if index == 0:
                folder.mkdir()
            os.link(seed, folder / f"{index:02d}.jpg")
            listing.write(f"id{identity:06d}/{index:02d}.jpg person_{identity}\n")
    return base / "list.txt"


def fresh_database():
    """Create and migrate faceclean_bench with Django's test-database machinery."""
    from django.db import connection

    connection.settings_dict.setdefault("TEST", {})["NAME"] = "faceclean_bench"
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return connection, old_name


def time_export(dataset, out_dir: Path) -> float | None:
    try:
        exports = importlib.import_module("reviewapp.services.exports")
    except ImportError:
        return None
    started = time.monotonic()
    exports.dataset_export(dataset=dataset, out=out_dir / "export.txt", fmt="list")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("bench/import.py needs DATABASE_URL pointing at a Postgres server", file=sys.stderr)
        return 2

    import django

    django.setup()
    from reviewapp.models import Dataset
    from reviewapp.services.imports import dataset_import

    work = Path(tempfile.mkdtemp(prefix="faceclean-bench-"))
    connection, old_name = fresh_database()
    try:
        started = time.monotonic()
        listing = make_tree(work, args.faces)
        print(f"generated {args.faces} files in {time.monotonic() - started:.1f} s", file=sys.stderr)

        stages = {}
        started = time.monotonic()
        report = dataset_import(
            path=listing, name="bench", fmt="list", root=work / "images",
            progress=lambda stage, done, total: stages.setdefault(stage, time.monotonic() - started),
        )
        import_seconds = time.monotonic() - started
        if report.faces != args.faces or report.unreadable or report.rejected:
            print(report.text()[:2000], file=sys.stderr)
        export_seconds = time_export(Dataset.objects.get(name="bench"), work)
        print(json.dumps({
            "faces": report.faces,
            "identities": report.identities,
            "import_seconds": round(import_seconds, 2),
            "scan_seconds": round(stages.get("identities", import_seconds), 2),
            "faces_per_second": round(report.faces / import_seconds),
            "export_seconds": round(export_seconds, 2) if export_seconds is not None else None,
        }))
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
