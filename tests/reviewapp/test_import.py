"""dataset_import on real data (LFW, AT&T) in every format, and on every kind of bad input."""
import io
import os
import time
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from PIL import Image

from ml.io.filelist import write_file_list
from ml.io.recordio import RecordReader, insightface_entries, read_index, unpack_image, write_insightface
from reviewapp.models import Dataset, Decision, Face, Identity, Source
from reviewapp.services import imports
from reviewapp.services.imports import ImportImpossible, dataset_import

pytestmark = pytest.mark.django_db

ODD_NAMES = [
    "O'Brien \"Danny\"",
    "<script>alert(1)<script>",
    "José Müller-Łukasz 山田",
    "\u05e9\u05dc\u05d5\u05dd \u202etxt.exe",  # Hebrew plus a right-to-left override
]


def image_bytes(fmt="JPEG", size=(16, 16), color=(90, 60, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


def att_items(att_root: Path):
    """(bytes, label) of every AT&T image, subjects s1..s40 as labels 0..39."""
    items = []
    for label in range(40):
        folder = att_root / f"s{label + 1}"
        for n in range(1, 11):
            items.append(((folder / f"{n}.pgm").read_bytes(), label))
    return items


# --- real data ------------------------------------------------------------------------------

def test_lfw_training_identities_from_a_file_list(lfw_root, tmp_path):
    images = lfw_root / "images_deepfunneled"
    names = (lfw_root / "splits" / "train_identities.txt").read_text().split()
    rows = [(f"{name}/{file}", name) for name in names for file in sorted(os.listdir(images / name))]
    write_file_list(tmp_path / "train.txt", rows)

    report = dataset_import(path=tmp_path / "train.txt", name="lfw-train", fmt="list", root=images)

    assert (report.faces, report.identities) == (4324, 158)
    assert report.unreadable == [] and report.rejected == []
    source = Source.objects.get(dataset__name="lfw-train")
    assert source.root == str(images.resolve()) and source.format == "list"
    assert Face.objects.filter(source=source).count() == 4324
    assert set(Identity.objects.filter(source=source).values_list("name", flat=True)) == set(names)
    face = Face.objects.get(path=f"{names[0]}/{names[0]}_0001.jpg")
    assert face.size == (images / face.path).stat().st_size
    assert face.identity.name == names[0] and face.original_identity_id == face.identity_id


def test_att_faces_as_a_folder(att_root):
    report = dataset_import(path=att_root, name="att", fmt="folder")
    assert (report.faces, report.identities) == (400, 40)
    assert report.unreadable == []
    # The database's README sits directly in the folder: not in an identity folder.
    assert report.rejected == [("README", "file outside an identity folder")]
    assert Face.objects.filter(identity__name="s7").count() == 10
    assert Face.objects.filter(path="s7/3.pgm").exists()


def test_att_faces_through_recordio(att_root, tmp_path):
    items = att_items(att_root)
    rec = tmp_path / "train.rec"
    write_insightface(rec, items, image_size=(112, 92))
    with RecordReader(rec) as reader:
        back = [unpack_image(reader.read_at(offset)[0]) for _, offset in insightface_entries(reader)]
    assert [(r.image, int(r.label)) for r in back] == items

    report = dataset_import(path=tmp_path, name="att-rec", fmt="recordio")

    assert (report.faces, report.identities) == (400, 40)
    source = Source.objects.get(dataset__name="att-rec")
    assert source.record_file == str(rec.resolve()) and source.format == "recordio"
    face = Face.objects.get(source=source, path="rec:11")
    assert face.identity.name == "1"  # key 11 is the first image of the second subject
    with RecordReader(rec, load_index=False) as reader:
        assert unpack_image(reader.read_at(face.record_offset)[0]).image == items[10][0]
    assert face.size == len(items[10][0])


# --- bad input ------------------------------------------------------------------------------

@pytest.fixture
def messy(tmp_path):
    """A root with good images, every kind of bad file, and untrusted identity names."""
    root = tmp_path / "root"
    alice = root / "alice"
    alice.mkdir(parents=True)
    (alice / "1.jpg").write_bytes(image_bytes())
    (alice / "2.PNG").write_bytes(image_bytes("PNG"))
    (alice / "3.pgm").write_bytes(image_bytes("PPM"))
    cut = image_bytes(size=(96, 96))
    (alice / "cut.jpg").write_bytes(cut[: len(cut) // 2])
    (alice / "empty.jpg").write_bytes(b"")
    (alice / "text.jpg").write_bytes(b"<html>not an image</html>")
    (alice / "notes.txt").write_text("hello")
    (alice / "._1.jpg").write_bytes(b"AppleDouble junk")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(image_bytes())
    os.symlink(outside / "x.jpg", alice / "out.jpg")
    os.symlink(outside, root / "escape")
    (root / "stray.jpg").write_bytes(image_bytes())
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    for n, name in enumerate(ODD_NAMES):
        (root / name).mkdir()
        (root / name / "a.jpg").write_bytes(image_bytes(color=(n * 40, 0, 0)))
    return root


def test_folder_with_bad_entries_imports_the_rest(messy):
    report = dataset_import(path=messy, name="messy", fmt="folder")

    assert report.faces == 4 + len(ODD_NAMES)  # 1.jpg 2.PNG 3.pgm cut.jpg + one per odd name
    assert report.identities == 1 + len(ODD_NAMES)
    assert dict(report.unreadable) == {
        "alice/empty.jpg": "zero-byte file",
        "alice/text.jpg": "not an image (unrecognised header bytes)",
    }
    assert dict(report.rejected) == {
        "alice/notes.txt": "unknown extension",
        "alice/out.jpg": "symlink leaves the root",
        "escape": "symlink leaves the root",
        "stray.jpg": "file outside an identity folder",
    }
    names = set(Identity.objects.values_list("name", flat=True))
    assert names == {"alice", *ODD_NAMES}  # untrusted names kept exactly as found
    assert not Face.objects.filter(path__contains="DS_Store").exists()
    text = report.text()
    for where, _ in report.unreadable + report.rejected:
        assert where in text


def test_identity_folder_symlinked_inside_the_root_imports_each_file_once(tmp_path):
    root = tmp_path / "faces"
    (root / "bob").mkdir(parents=True)
    (root / "bob" / "1.jpg").write_bytes(image_bytes())
    os.symlink(root / "bob", root / "alias")  # sorts before "bob"
    report = dataset_import(path=root, name="alias", fmt="folder")
    assert report.faces == 1
    assert report.rejected == [("bob/1.jpg", "same file as alias/1.jpg")]
    assert Face.objects.get().path == "bob/1.jpg"


def test_a_symlink_to_another_file_of_the_same_folder_is_imported_once(tmp_path):
    root = tmp_path / "faces"
    (root / "bob").mkdir(parents=True)
    (root / "bob" / "1.jpg").write_bytes(image_bytes())
    os.symlink("1.jpg", root / "bob" / "2.jpg")
    report = dataset_import(path=root, name="bob", fmt="folder")
    assert report.faces == 1
    assert report.rejected == [("bob/2.jpg", "same file as bob/1.jpg")]
    assert Face.objects.get().path == "bob/1.jpg"


def test_verify_images_refuses_an_image_beyond_the_pixel_budget(tmp_path, monkeypatch):
    from ml.io import budget

    root = tmp_path / "faces"
    (root / "bob").mkdir(parents=True)
    (root / "bob" / "1.jpg").write_bytes(image_bytes())
    Image.new("L", (1200, 1000), 128).save(root / "bob" / "big.png")
    monkeypatch.setattr(budget, "IMAGE_MAX_PIXELS", 1_000_000)
    report = dataset_import(path=root, name="bob", fmt="folder", verify_images=True)
    assert report.faces == 1
    assert report.unreadable == [("bob/big.png", "image of 1200000 pixels is over the budget of 1000000")]


def test_verify_images_reports_truncated_files(messy):
    report = dataset_import(path=messy, name="messy", fmt="folder", verify_images=True)
    assert report.faces == 3 + len(ODD_NAMES)
    reasons = dict(report.unreadable)
    assert reasons["alice/cut.jpg"].startswith("cannot decode")
    assert not Face.objects.filter(path="alice/cut.jpg").exists()


def test_list_with_bad_lines_reports_line_numbers(messy, tmp_path):
    lines = [
        "alice/1.jpg alice",                          # 1 ok
        "alice/1.jpg alice",                          # 2 duplicate
        "../outside/x.jpg alice",                     # 3 leaves the root
        f"{tmp_path}/outside/x.jpg alice",            # 4 absolute outside
        f"{messy}/alice/2.PNG\talice",                # 5 absolute inside: ok
        "alice/missing.jpg alice",                    # 6 missing
        "lonely.jpg",                                 # 7 malformed
        "# a comment",                                # 8 skipped
        "",                                           # 9 skipped
        "alice/empty.jpg alice",                      # 10 zero-byte
        "alice/notes.txt alice",                      # 11 unknown extension
        "escape/x.jpg alice",                         # 12 directory symlink out
        "alice/out.jpg alice",                        # 13 file symlink out
        "alice/text.jpg alice",                       # 14 not an image
        "alice/./1.jpg alice",                        # 15 same file, other spelling
    ]
    lines += [f"{name}/a.jpg\t{name}" for name in ODD_NAMES]  # 16..19 ok
    data = "\n".join(lines).encode() + b"\nalice/3.pgm \xff\xfealice\n"  # 20 not UTF-8
    listing = tmp_path / "list.txt"
    listing.write_bytes(data)

    report = dataset_import(path=listing, name="messy-list", fmt="list", root=messy)

    assert report.faces == 2 + len(ODD_NAMES)
    rejected = {where.split(":")[0]: reason for where, reason in report.rejected}
    assert rejected == {
        "line 2": "duplicate of line 1",
        "line 3": "path leaves the root",
        "line 4": "path leaves the root",
        "line 6": "missing file",
        "line 7": "malformed line: expected 'path label': no label",
        "line 11": "unknown extension",
        "line 12": "path leaves the root",
        "line 13": "symlink leaves the root",
        "line 15": "duplicate of line 1",
        "line 20": "not valid UTF-8 (byte 12)",
    }
    unreadable = {where.split(":")[0]: reason for where, reason in report.unreadable}
    assert unreadable == {"line 10": "zero-byte file", "line 14": "not an image (unrecognised header bytes)"}
    assert Face.objects.filter(path="alice/2.PNG").exists()
    for name in ODD_NAMES:
        assert Face.objects.get(path=f"{name}/a.jpg").identity.name == name


def test_list_root_defaults_to_the_lists_folder(messy):
    (messy / "list.txt").write_text("alice/1.jpg alice\nstray.jpg nobody\n")
    report = dataset_import(path=messy / "list.txt", name="here", fmt="list")
    assert report.faces == 2
    assert Source.objects.get(dataset__name="here").root == str(messy.resolve())


def test_insightface_lst_lines(messy):
    (messy / "train.lst").write_text("0\talice/1.jpg\t0\n1\talice/2.PNG\t0.000000\n2\tstray.jpg\t1\n")
    report = dataset_import(path=messy / "train.lst", name="lst", fmt="list")
    assert report.faces == 3
    assert sorted(Identity.objects.values_list("name", flat=True)) == ["0", "1"]


def test_corrupt_records_are_skipped(tmp_path):
    good = image_bytes()
    rec = tmp_path / "train.rec"
    write_insightface(rec, [(good, 0), (b"GIF-not-really", 0), (good, 1), (good, 1)])
    offsets = read_index(tmp_path / "train.idx")
    data = bytearray(rec.read_bytes())
    start = offsets[3]
    data[start:start + 4] = b"XXXX"  # destroy the magic word of record 3
    rec.write_bytes(bytes(data))

    report = dataset_import(path=rec, name="rec", fmt="recordio")

    assert report.faces == 2 and report.identities == 2
    assert dict(report.unreadable) == {
        "rec:2": "not an image (unrecognised header bytes)",
        "rec:3": f"no record starts at byte {start}",
    }


def test_truncated_recordio_imports_what_is_left(tmp_path):
    good = image_bytes()
    rec = tmp_path / "train.rec"
    write_insightface(rec, [(good, 0), (good, 0), (good, 1)])
    offsets = read_index(tmp_path / "train.idx")
    # Keep the header record and the first image; cut through the second.
    cut = offsets[2] + 20
    rec.write_bytes(rec.read_bytes()[:cut])
    report = dataset_import(path=rec, name="cut", fmt="recordio")
    assert report.faces == 1
    assert [where for where, _ in report.unreadable] == ["rec:2", "rec:3"]
    assert all("truncated" in reason for _, reason in report.unreadable)


# --- re-import, second sources, audit ---------------------------------------------------------

def test_reimport_adds_nothing(messy):
    first = dataset_import(path=messy, name="again", fmt="folder")
    second = dataset_import(path=messy, name="again", fmt="folder")
    assert first.faces > 0
    assert (second.faces, second.identities, second.skipped_existing) == (0, 0, first.faces)
    assert Face.objects.count() == first.faces
    assert Dataset.objects.count() == 1 and Source.objects.count() == 1
    # a new image shows up as the only new face
    (messy / "bob").mkdir()
    (messy / "bob" / "1.jpg").write_bytes(image_bytes())
    third = dataset_import(path=messy, name="again", fmt="folder")
    assert (third.faces, third.identities, third.skipped_existing) == (1, 1, first.faces)


def test_into_adds_a_second_source_with_its_own_identities(messy, tmp_path):
    other = tmp_path / "other"
    (other / "alice").mkdir(parents=True)
    (other / "alice" / "9.jpg").write_bytes(image_bytes())
    dataset_import(path=messy, name="merged", fmt="folder")

    report = dataset_import(path=other, name=None, fmt="folder", into="merged", source="vggface2")

    assert (report.faces, report.identities) == (1, 1)
    assert (report.dataset, report.source) == ("merged", "vggface2")
    dataset = Dataset.objects.get(name="merged")
    assert sorted(dataset.sources.values_list("name", flat=True)) == ["main", "vggface2"]
    alices = Identity.objects.filter(dataset=dataset, name="alice")
    assert sorted(alices.values_list("source__name", flat=True)) == ["main", "vggface2"]
    assert Face.objects.get(path="alice/9.jpg").identity.source.name == "vggface2"


def test_same_source_name_from_another_folder_is_refused(messy, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    dataset_import(path=messy, name="ds", fmt="folder")
    with pytest.raises(ImportImpossible, match="another --source"):
        dataset_import(path=other, name="ds", fmt="folder")


def test_import_writes_one_audit_row(messy, user):
    report = dataset_import(path=messy, name="audited", fmt="folder", actor="web", user=user)
    decision = Decision.objects.get()
    assert decision.action == "import" and decision.actor == "web" and decision.user == user
    assert decision.dataset.name == "audited"
    assert decision.after["faces"] == report.faces
    assert decision.after["rejected"] == len(report.rejected)
    assert decision.after["source"] == "main"


def test_summary_and_progress(messy):
    calls = []
    started = time.monotonic()
    report = dataset_import(path=messy, name="p", fmt="folder", progress=lambda *a: calls.append(a))
    elapsed = time.monotonic() - started
    summary = report.summary()
    keys = ("faces", "identities", "unreadable", "rejected", "dataset", "source")
    assert {k: summary[k] for k in keys} == {
        "faces": report.faces, "identities": report.identities, "unreadable": 2, "rejected": 4,
        "dataset": "p", "source": "main",
    }
    assert 0 < report.seconds <= elapsed  # the import's own time, within the call's
    assert summary["seconds"] == round(report.seconds, 3)
    assert ("faces", report.faces, report.faces) in calls


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "/nonexistent/x", "name": "a", "fmt": "folder"}, "does not exist"),
        ({"path": ".", "name": "a", "fmt": "zip"}, "unknown format"),
        ({"path": ".", "name": None, "fmt": "folder"}, "dataset name"),
        ({"path": ".", "name": None, "fmt": "folder", "into": "nope"}, "does not exist"),
    ],
)
def test_impossible_imports_create_nothing(kwargs, message):
    with pytest.raises(ImportImpossible, match=message):
        dataset_import(**kwargs)
    assert not Dataset.objects.exists()


def test_paths_with_tabs_newlines_and_backslashes(tmp_path):
    odd_dir = tmp_path / "faces" / "back\\slash"
    odd_dir.mkdir(parents=True)
    names = ["tab\there.jpg", "new\nline.jpg", "cr\rhere.jpg", "plain.jpg"]
    for name in names:
        (odd_dir / name).write_bytes(image_bytes())
    first = dataset_import(path=tmp_path / "faces", name="odd", fmt="folder")
    again = dataset_import(path=tmp_path / "faces", name="odd", fmt="folder")
    assert first.faces == 4 and again.skipped_existing == 4
    assert sorted(Face.objects.values_list("path", flat=True)) == sorted(f"back\\slash/{n}" for n in names)


def test_bulk_load_keeps_the_foreign_keys(messy, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("the bulk-load path exists on Postgres only")
    monkeypatch.setattr(imports, "BULK_LOAD_MIN_FACES", 1)
    with connection.cursor() as cursor:
        keys_before = imports._face_foreign_keys(cursor)

    first = dataset_import(path=messy, name="bulk", fmt="folder")
    (messy / "bob").mkdir()
    (messy / "bob" / "1.jpg").write_bytes(image_bytes())
    second = dataset_import(path=messy, name="bulk", fmt="folder")  # existing source: temp table path

    assert (first.faces, second.faces, second.skipped_existing) == (8, 1, 8)
    with connection.cursor() as cursor:
        assert imports._face_foreign_keys(cursor) == keys_before
    assert len(keys_before) == 4
    face = Face.objects.filter(dataset__name="bulk").first()
    with pytest.raises(IntegrityError), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        Face.objects.create(
            dataset=face.dataset, source=face.source, path="ghost.jpg", size=1,
            identity_id=face.identity_id + 10**6, original_identity_id=face.identity_id,
        )
