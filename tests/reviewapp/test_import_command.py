"""manage.py import_dataset: report text, --json last line, and clear errors."""
import io
import json

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from reviewapp.models import Dataset, Decision, Face, Identity

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = io.StringIO()
    call_command("import_dataset", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "faces"
    for name in ("ann", "bo"):
        (root / name).mkdir(parents=True)
        for n in range(3):
            Image.new("L", (8, 8), n * 50).save(root / name / f"{n}.pgm")
    (root / "ann" / "broken.jpg").write_bytes(b"")
    return root


def test_json_summary_is_the_last_line(folder):
    out = run(str(folder), "--name", "cmd", "--format", "folder", "--json")
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["faces"] == 6 and summary["identities"] == 2
    assert summary["unreadable"] == 1 and summary["rejected"] == 0
    assert summary["dataset"] == "cmd" and summary["source"] == "main"
    assert isinstance(summary["seconds"], float)
    assert "ann/broken.jpg: zero-byte file" in out
    assert Decision.objects.get().actor == "cli"


def test_att_faces_through_the_command(att_root):
    out = run(str(att_root), "--name", "att", "--format", "folder", "--json")
    summary = json.loads(out.splitlines()[-1])
    assert (summary["faces"], summary["identities"]) == (400, 40)


def test_list_with_root_and_second_source(folder, tmp_path):
    run(str(folder), "--name", "cmd", "--format", "folder")
    listing = tmp_path / "more.txt"
    listing.write_text("ann/0.pgm\tann\nbo/1.pgm\tbo\n")
    out = run(str(listing), "--format", "list", "--root", str(folder), "--into", "cmd",
              "--source", "extra", "--json")
    summary = json.loads(out.splitlines()[-1])
    assert (summary["faces"], summary["identities"], summary["source"]) == (2, 2, "extra")
    assert Identity.objects.filter(name="ann").count() == 2
    assert Face.objects.filter(dataset__name="cmd").count() == 8


def test_rerun_reports_existing_faces(folder):
    run(str(folder), "--name", "cmd", "--format", "folder")
    summary = json.loads(run(str(folder), "--name", "cmd", "--format", "folder", "--json").splitlines()[-1])
    assert (summary["faces"], summary["skipped_existing"]) == (0, 6)


def test_missing_path_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        run(str(tmp_path / "nope"), "--name", "x", "--format", "folder")
    assert not Dataset.objects.exists()


def test_unknown_into_dataset_is_a_command_error(folder):
    with pytest.raises(CommandError, match="'ghost' does not exist"):
        run(str(folder), "--format", "folder", "--into", "ghost", "--source", "b")
    assert not Dataset.objects.exists()


def test_name_or_into_is_required(folder):
    with pytest.raises(CommandError, match="--name"):
        run(str(folder), "--format", "folder")
