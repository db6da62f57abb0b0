"""An exported clean list imports back as the cleaned dataset, hostile names included."""
from reviewapp.models import Face, Identity
from reviewapp.services.exports import dataset_export
from reviewapp.services.imports import dataset_import
from reviewapp.services.labels import face_relabel, face_remove
from tests.factories import jpeg_bytes

# Folder names cannot hold "/", so the markup test uses a tag without one.
NAMES = ["O'Brien \"Jr\"", "<img src=x onerror=alert(1)>", "José Müller", "\u05e9\u05dc\u05d5\u05dd \u202eevil", "tab\there"]


def test_export_imports_back_with_the_same_labels(db, tmp_path):
    images = tmp_path / "images"
    for i, name in enumerate(NAMES):
        (images / name).mkdir(parents=True)
        for j in range(3):
            (images / name / f"{j}.jpg").write_bytes(jpeg_bytes(color=(i * 40, j * 60, 90)))
    report = dataset_import(path=images, name="src", fmt="folder")
    assert report.summary()["faces"] == 15 and report.summary()["identities"] == 5

    target = Identity.objects.get(name=NAMES[1])
    faces = list(Face.objects.exclude(identity=target).order_by("id"))
    face_relabel(face_id=faces[0].pk, identity_id=target.pk, actor="t")
    face_remove(face_id=faces[1].pk, actor="t")

    out = tmp_path / "clean.txt"
    dataset_export(dataset=faces[0].dataset, out=out)
    again = dataset_import(path=out, name="reimported", fmt="list", root=images)
    assert again.summary()["faces"] == 14
    assert not again.rejected and not again.unreadable

    def labels(dataset_name):
        rows = Face.objects.filter(dataset__name=dataset_name, status="active").values_list("path", "identity__name")
        return sorted(rows)

    assert labels("reimported") == labels("src")
    assert set(Identity.objects.filter(dataset__name="reimported").values_list("name", flat=True)) == set(NAMES)
