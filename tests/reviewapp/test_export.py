"""The clean export: final labels after review, dense ids, safe text, RecordIO, the audit CSV."""
import csv
import io
import json
from datetime import datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from PIL import Image

from ml.io.recordio import RecordReader, insightface_entries, read_property, unpack_image, write_insightface
from reviewapp.models import Face, Flag, Identity, Round, Source
from reviewapp.selectors.active_faces import MergeCycle, merge_survivors
from reviewapp.services.exports import (
    DECISION_COLUMNS,
    ExportError,
    dataset_export,
    decisions_export,
    escape_field,
)
from reviewapp.services.labels import face_relabel, face_remove, identity_merge
from reviewapp.services.round_data import round_faces_current
from tests.factories import FaceFactory, IdentityFactory, SourceFactory, jpeg_bytes

pytestmark = pytest.mark.django_db

UNTRUSTED = ["tab\there", "new\nline\r", "<script>alert(1)</script>", "\u202eevil\u202c", "back\\slash"]


def unescape(text: str) -> str:
    table = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "v": "\v"}
    out, chars = [], iter(text)
    for c in chars:
        out.append(table[next(chars)] if c == "\\" else c)
    return "".join(out)


def read_list(path) -> list[tuple[str, int, str]]:
    lines = Path(path).read_bytes().decode("utf-8").split("\n")
    assert lines[-1] == ""
    rows = [line.split("\t") for line in lines[:-1]]
    assert all(len(row) == 3 for row in rows)
    return [(unescape(p), int(label), unescape(name)) for p, label, name in rows]


def people(source, **sizes):
    """{name: (identity, [faces])} with paths <name>/<i>.jpg."""
    made = {}
    for name, n in sizes.items():
        identity = IdentityFactory(source=source, name=name)
        made[name] = (identity, [FaceFactory(identity=identity, path=f"{name}/{i}.jpg") for i in range(n)])
    return made


@pytest.fixture
def reviewed():
    """ann 3, bob 2, cy 2, dee 1 faces; then ann/0 -> bob, cy merged into ann, dee/0 and bob/1 removed."""
    source = SourceFactory()
    p = people(source, ann=3, bob=2, cy=2, dee=1)
    face_relabel(face_id=p["ann"][1][0].pk, identity_id=p["bob"][0].pk, actor="test")
    identity_merge(identity_id=p["cy"][0].pk, into_id=p["ann"][0].pk, actor="test")
    face_remove(face_id=p["dee"][1][0].pk, actor="test")
    face_remove(face_id=p["bob"][1][1].pk, actor="test")
    return source.dataset, p


def test_list_has_final_labels_after_relabel_merge_and_removal(reviewed, tmp_path):
    dataset, _ = reviewed
    summary = dataset_export(dataset=dataset, out=tmp_path / "clean.lst")
    assert read_list(tmp_path / "clean.lst") == [
        ("ann/0.jpg", 1, "bob"),  # relabelled
        ("ann/1.jpg", 0, "ann"),
        ("ann/2.jpg", 0, "ann"),
        ("bob/0.jpg", 1, "bob"),  # bob/1 and dee/0 removed; dee has no face left, so no label
        ("cy/0.jpg", 0, "ann"),  # merged: under the survivor's label, cy has none of its own
        ("cy/1.jpg", 0, "ann"),
    ]
    assert (summary.faces, summary.identities, summary.format) == (6, 2, "list")
    assert summary.paths == (str(tmp_path / "clean.lst"),)


def test_label_ids_are_dense_in_identity_id_order(tmp_path):
    source = SourceFactory()
    p = people(source, a=1, gone=1, b=1, c=2)
    face_remove(face_id=p["gone"][1][0].pk, actor="test")
    identity_merge(identity_id=p["a"][0].pk, into_id=p["c"][0].pk, actor="test")
    dataset_export(dataset=source.dataset, out=tmp_path / "x.lst")
    assert [(path, label) for path, label, _ in read_list(tmp_path / "x.lst")] == [
        ("a/0.jpg", 1), ("b/0.jpg", 0), ("c/0.jpg", 1), ("c/1.jpg", 1),
    ]


def test_merge_chains_are_followed_even_when_faces_were_not_moved(tmp_path):
    source = SourceFactory()
    p = people(source, a=1, b=1, c=1)
    # Written behind the label services' back: a -> b -> c, faces left where they were.
    Identity.objects.filter(pk=p["b"][0].pk).update(merged_into=p["c"][0])
    Identity.objects.filter(pk=p["a"][0].pk).update(merged_into=p["b"][0])
    dataset_export(dataset=source.dataset, out=tmp_path / "x.lst")
    assert read_list(tmp_path / "x.lst") == [("a/0.jpg", 0, "c"), ("b/0.jpg", 0, "c"), ("c/0.jpg", 0, "c")]


def _training_rows(dataset_id: int) -> list[tuple[str, int, str]]:
    """What a round trains on, as export rows: (path, class id, the class's identity name)."""
    faces = round_faces_current(dataset_id=dataset_id)
    paths = dict(Face.objects.filter(dataset_id=dataset_id).values_list("pk", "path"))
    names = dict(Identity.objects.filter(dataset_id=dataset_id).values_list("pk", "name"))
    return [(paths[int(face)], int(label), names[int(faces.identity_ids[label])])
            for face, label in zip(faces.face_ids, faces.labels)]


def test_training_trains_on_the_exported_labels(reviewed, tmp_path):
    """Relabels, a merge by the services, a chain written behind their back (eve -> fay -> bob),
    removals and an identity left without faces: a round's class ids are the exported label ids."""
    dataset, p = reviewed
    more = people(p["ann"][0].source, eve=2, fay=1, gus=1)
    Identity.objects.filter(pk=more["fay"][0].pk).update(merged_into=p["bob"][0])
    Identity.objects.filter(pk=more["eve"][0].pk).update(merged_into=more["fay"][0])
    face_relabel(face_id=more["gus"][1][0].pk, identity_id=p["cy"][0].pk, actor="test")  # cy: merged into ann
    dataset_export(dataset=dataset, out=tmp_path / "clean.lst")
    exported = read_list(tmp_path / "clean.lst")
    assert {name for _, _, name in exported} == {"ann", "bob"}
    assert _training_rows(dataset.pk) == exported
    assert merge_survivors(dataset_id=dataset.pk) == {
        p["cy"][0].pk: p["ann"][0].pk, more["fay"][0].pk: p["bob"][0].pk, more["eve"][0].pk: p["bob"][0].pk}


def test_a_merge_cycle_stops_training_as_it_stops_the_export():
    source = SourceFactory()
    p = people(source, a=1, b=1, c=1)
    Identity.objects.filter(pk=p["a"][0].pk).update(merged_into=p["b"][0])
    Identity.objects.filter(pk=p["b"][0].pk).update(merged_into=p["a"][0])
    with pytest.raises(MergeCycle, match="2 active faces"):
        round_faces_current(dataset_id=source.dataset.pk)


def test_a_merge_cycle_fails_without_leaving_a_file(tmp_path):
    source = SourceFactory()
    p = people(source, a=1, b=1)
    Identity.objects.filter(pk=p["a"][0].pk).update(merged_into=p["b"][0])
    Identity.objects.filter(pk=p["b"][0].pk).update(merged_into=p["a"][0])
    with pytest.raises(ExportError, match="merge cycle"):
        dataset_export(dataset=source.dataset, out=tmp_path / "x.lst")
    assert list(tmp_path.iterdir()) == []


def test_untrusted_names_stay_one_line_per_face(tmp_path):
    source = SourceFactory()
    for i, name in enumerate(UNTRUSTED):
        FaceFactory(identity=IdentityFactory(source=source, name=name), path=f"dir\t{i}\n/x.jpg")
    dataset_export(dataset=source.dataset, out=tmp_path / "x.lst")
    raw = (tmp_path / "x.lst").read_bytes()
    assert raw.count(b"\n") == len(UNTRUSTED) and b"\r" not in raw
    rows = read_list(tmp_path / "x.lst")
    assert [name for _, _, name in rows] == UNTRUSTED
    assert [label for _, label, _ in rows] == list(range(len(UNTRUSTED)))
    assert [path for path, _, _ in rows] == [f"dir\t{i}\n/x.jpg" for i in range(len(UNTRUSTED))]


def test_escaping_matches_postgres_copy_text():
    assert escape_field("a\\b\tc\nd\re\bf\fg\vh\u2028") == "a\\\\b\\tc\\nd\\re\\bf\\fg\\vh\u2028"


def test_multi_source_paths_carry_the_source_name(tmp_path):
    first = SourceFactory(name="ms1m")
    second = SourceFactory(dataset=first.dataset, name="vgg2", format=Source.Format.RECORDIO)
    FaceFactory(identity=IdentityFactory(source=first, name="x"), path="x/1.jpg")
    FaceFactory(identity=IdentityFactory(source=second, name="x"), path="rec:17")
    dataset_export(dataset=first.dataset, out=tmp_path / "x.lst")
    assert read_list(tmp_path / "x.lst") == [("ms1m/x/1.jpg", 0, "x"), ("vgg2/rec:17", 1, "x")]


def test_empty_dataset_gives_an_empty_file(tmp_path):
    summary = dataset_export(dataset=SourceFactory().dataset, out=tmp_path / "x.lst")
    assert (summary.faces, summary.identities) == (0, 0)
    assert (tmp_path / "x.lst").read_bytes() == b""


def test_unknown_format_is_refused(reviewed, tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        dataset_export(dataset=reviewed[0], out=tmp_path / "x", fmt="csv")


# ---- RecordIO ------------------------------------------------------------------------------

def jpeg_folder_dataset(root: Path):
    source = SourceFactory(root=str(root))
    p = people(source, ann=2, bob=2, cy=1)
    colors = {}
    for name, (_, faces) in p.items():
        (root / name).mkdir(parents=True)
        for i, face in enumerate(faces):
            data = jpeg_bytes(color=(40 * i, 90, len(name) * 30), size=(96, 80))
            (root / face.path).write_bytes(data)
            colors[face.path] = data
    return source.dataset, p, colors


def test_recordio_export_reads_back(tmp_path):
    dataset, p, images = jpeg_folder_dataset(tmp_path / "img")
    # bob/0 -> ann makes labels interleave in face-id order; RecordIO must group them.
    face_relabel(face_id=p["bob"][1][0].pk, identity_id=p["ann"][0].pk, actor="test")
    face_remove(face_id=p["cy"][1][0].pk, actor="test")
    summary = dataset_export(dataset=dataset, out=tmp_path / "out" / "train.rec", fmt="recordio")
    assert (summary.faces, summary.identities) == (4, 2)
    assert read_property(tmp_path / "out" / "property") == (2, 80, 96)
    reader = RecordReader(tmp_path / "out" / "train.rec")
    records = [unpack_image(reader.read_at(offset)[0]) for _, offset in insightface_entries(reader)]
    expected = [("ann/0.jpg", 0), ("ann/1.jpg", 0), ("bob/0.jpg", 0), ("bob/1.jpg", 1)]
    assert [(r.image, r.label) for r in records] == [(images[path], label) for path, label in expected]
    # Identity range records after the images: label 0 is keys 1..3, label 1 is key 4.
    assert unpack_image(reader.read_key(0)).labels == (5.0, 7.0)
    assert unpack_image(reader.read_key(5)).labels == (1.0, 4.0)
    assert unpack_image(reader.read_key(6)).labels == (4.0, 5.0)
    Image.open(io.BytesIO(records[0].image)).verify()


def test_recordio_source_exports_to_list_and_recordio(tmp_path):
    images = [jpeg_bytes(color=(i * 40, 0, 0)) for i in range(3)]
    rec = tmp_path / "in.rec"
    write_insightface(rec, [(img, 0) for img in images])
    offsets = [offset for _, offset in insightface_entries(RecordReader(rec))]
    source = SourceFactory(format=Source.Format.RECORDIO, root=str(tmp_path), record_file=str(rec))
    even, odd = IdentityFactory(source=source, name="even"), IdentityFactory(source=source, name="odd")
    for key, (identity, offset) in enumerate(zip([even, odd, even], offsets), start=1):
        FaceFactory(identity=identity, path=f"rec:{key}", record_offset=offset)

    dataset_export(dataset=source.dataset, out=tmp_path / "c.lst")
    assert read_list(tmp_path / "c.lst") == [("rec:1", 0, "even"), ("rec:2", 1, "odd"), ("rec:3", 0, "even")]
    dataset_export(dataset=source.dataset, out=tmp_path / "out" / "train.rec", fmt="recordio")
    reader = RecordReader(tmp_path / "out" / "train.rec")
    records = [unpack_image(reader.read_at(offset)[0]) for _, offset in insightface_entries(reader)]
    assert [(r.image, r.label) for r in records] == [(images[0], 0), (images[2], 0), (images[1], 1)]


def test_recordio_export_with_an_unreadable_image_leaves_nothing(tmp_path):
    dataset, p, _ = jpeg_folder_dataset(tmp_path / "img")
    (tmp_path / "img" / "bob" / "1.jpg").unlink()
    (tmp_path / "out").mkdir()
    with pytest.raises(ExportError, match="bob/1.jpg"):
        dataset_export(dataset=dataset, out=tmp_path / "out" / "train.rec", fmt="recordio")
    assert list((tmp_path / "out").iterdir()) == []


# ---- the audit CSV --------------------------------------------------------------------------

def test_decisions_csv_has_every_decision_and_defuses_formulas(tmp_path, user):
    source = SourceFactory()
    p = people(source, **{"=HYPERLINK(\"http://x\")": 2, "+plus": 1, "ok": 1})
    evil, plus, ok = (p[k][0] for k in p)
    round_ = Round.objects.create(dataset=source.dataset, number=3, method=Round.Method.ARCFACE)
    flag = Flag.objects.create(round=round_, kind=Flag.Kind.NOISY, face=p["ok"][1][0], score=0.9,
                               suggestion=Flag.Suggestion.REMOVE, evidence={"cos": -0.25})
    face_remove(face_id=p["ok"][1][0].pk, user=user, flag=flag)
    face_relabel(face_id=p["+plus"][1][0].pk, identity_id=evil.pk, actor="-rm -rf")
    identity_merge(identity_id=evil.pk, into_id=ok.pk, actor="@admin")

    assert decisions_export(dataset=source.dataset, out=tmp_path / "audit.csv") == 3
    with open(tmp_path / "audit.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == DECISION_COLUMNS
    removal, relabel, merge = rows
    assert (removal["action"], removal["actor"], removal["user_id"]) == ("remove", "reviewer", str(user.pk))
    assert (removal["round"], removal["flag_id"], removal["flag_kind"]) == ("3", str(flag.pk), "noisy")
    assert removal["face_path"] == "ok/0.jpg" and json.loads(removal["evidence"]) == {"cos": -0.25}
    assert json.loads(removal["before"]) == {"identity": ok.pk, "status": "active"}
    assert relabel["actor"] == "'-rm -rf" and relabel["round"] == "" and relabel["identity_name"] == ""
    assert merge["actor"] == "'@admin"
    assert merge["identity_name"] == "'=HYPERLINK(\"http://x\")"
    assert merge["identity_id"] == str(evil.pk) and json.loads(merge["after"])["merged_into"] == ok.pk
    assert relabel["face_path"] == "'+plus/0.jpg"
    assert datetime.fromisoformat(removal["created_at"]).tzinfo is not None
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), key=int)


@pytest.mark.parametrize("actor", [" =1+2", "  @SUM(A1)", "\n+cmd", " \t-2"])
def test_decisions_csv_defuses_formulas_behind_leading_whitespace(tmp_path, actor):
    source = SourceFactory()
    p = people(source, a=1, b=1)
    face_relabel(face_id=p["a"][1][0].pk, identity_id=p["b"][0].pk, actor=actor)

    assert decisions_export(dataset=source.dataset, out=tmp_path / "audit.csv") == 1
    with open(tmp_path / "audit.csv", encoding="utf-8", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["actor"] == "'" + actor


# ---- the command ----------------------------------------------------------------------------

def test_command_prints_json_and_writes_both_files(reviewed, tmp_path):
    dataset, _ = reviewed
    out = io.StringIO()
    call_command("export_clean", "--dataset", dataset.name, "--out", str(tmp_path / "c.lst"),
                 "--decisions", str(tmp_path / "d.csv"), "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["faces"] == 6 and report["identities"] == 2 and report["decisions"] == 4
    assert report["dataset"] == dataset.name and report["format"] == "list"
    assert len(read_list(tmp_path / "c.lst")) == 6
    assert len((tmp_path / "d.csv").read_text("utf-8").splitlines()) == 5


def test_command_recordio_plain_output(tmp_path):
    dataset, _, _ = jpeg_folder_dataset(tmp_path / "img")
    out = io.StringIO()
    call_command("export_clean", "--dataset", dataset.name, "--out", str(tmp_path / "train.rec"),
                 "--format", "recordio", stdout=out)
    assert "Exported 5 faces of 3 identities" in out.getvalue()
    assert (tmp_path / "train.idx").exists() and (tmp_path / "property").exists()


def test_command_unknown_dataset():
    with pytest.raises(CommandError, match="No dataset named 'nope'"):
        call_command("export_clean", "--dataset", "nope", "--out", "/tmp/never-written.lst")


@pytest.mark.django_db(transaction=True)
def test_export_outside_a_transaction_takes_its_own_snapshot(tmp_path):
    # No surrounding test transaction: the export opens its own (REPEATABLE READ on Postgres).
    dataset, p, images = jpeg_folder_dataset(tmp_path / "img")
    summary = dataset_export(dataset=dataset, out=tmp_path / "c.lst")
    assert (summary.faces, summary.identities) == (5, 3)
    summary = dataset_export(dataset=dataset, out=tmp_path / "out" / "train.rec", fmt="recordio")
    assert (summary.faces, summary.identities) == (5, 3)
    reader = RecordReader(tmp_path / "out" / "train.rec")
    assert len(list(insightface_entries(reader))) == 5
