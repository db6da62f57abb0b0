"""The image and thumbnail views: login, dataset membership, bytes found by face id only."""
import io

import pytest
from PIL import Image

from ml.io.recordio import write_insightface
from reviewapp.models import Membership, Source
from tests.factories import FaceFactory, IdentityFactory, MembershipFactory, SourceFactory, jpeg_bytes


@pytest.fixture
def folder_face(db, tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "1.jpg").write_bytes(jpeg_bytes(size=(250, 200)))
    source = SourceFactory(root=str(tmp_path))
    return FaceFactory(identity=IdentityFactory(source=source, name="alice"), path="alice/1.jpg")


def _login(client, user):
    client.force_login(user)
    return client


def test_anonymous_is_sent_to_login(client, folder_face):
    response = client.get(f"/faces/{folder_face.pk}/thumbnail")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_user_without_membership_gets_404(client, user, folder_face):
    response = _login(client, user).get(f"/faces/{folder_face.pk}/thumbnail")
    assert response.status_code == 404


def test_member_gets_a_112px_jpeg_thumbnail_and_it_is_cached(client, user, folder_face):
    from reviewapp.services import images

    MembershipFactory(user=user, dataset=folder_face.dataset)
    response = _login(client, user).get(f"/faces/{folder_face.pk}/thumbnail")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).size == (112, 112)
    cached = images.thumbnail_path(folder_face.pk)  # sharded by pk // 1000
    assert cached.read_bytes() == response.content


def test_staff_sees_every_dataset(client, staff, folder_face):
    response = _login(client, staff).get(f"/faces/{folder_face.pk}/image")
    assert response.status_code == 200
    assert response.content.startswith(b"\xff\xd8")


def test_pgm_is_served_as_png(client, staff, db, tmp_path):
    Image.new("L", (92, 112), 128).save(tmp_path / "1.pgm")
    face = FaceFactory(identity=IdentityFactory(source=SourceFactory(root=str(tmp_path))), path="1.pgm")
    response = _login(client, staff).get(f"/faces/{face.pk}/image")
    assert response["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == (92, 112)


def test_recordio_face_is_read_from_its_record(client, staff, db, tmp_path):
    images = [jpeg_bytes(color=(i * 40, 0, 0)) for i in range(3)]
    write_insightface(tmp_path / "train.rec", [(img, 0) for img in images])
    from ml.io.recordio import RecordReader, insightface_entries

    offsets = [offset for _, offset in insightface_entries(RecordReader(tmp_path / "train.rec"))]
    source = SourceFactory(format=Source.Format.RECORDIO, root=str(tmp_path), record_file=str(tmp_path / "train.rec"))
    face = FaceFactory(identity=IdentityFactory(source=source), path="rec:2", record_offset=offsets[1])
    response = _login(client, staff).get(f"/faces/{face.pk}/image")
    assert response.content == images[1]


def test_unreadable_image_gets_a_placeholder_thumbnail_not_an_error(client, staff, db, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(jpeg_bytes()[:40])
    face = FaceFactory(identity=IdentityFactory(source=SourceFactory(root=str(tmp_path))), path="broken.jpg")
    response = _login(client, staff).get(f"/faces/{face.pk}/thumbnail")
    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (112, 112)


def test_stored_path_leaving_the_root_is_refused(client, staff, db, tmp_path):
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg_bytes())
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.jpg").symlink_to(outside)
    source = SourceFactory(root=str(root))
    for path in ("../secret.jpg", "link.jpg"):
        face = FaceFactory(identity=IdentityFactory(source=source), path=path)
        assert _login(client, staff).get(f"/faces/{face.pk}/image").status_code == 404


def test_reviewer_role_is_enough_to_see_images(client, user, folder_face):
    MembershipFactory(user=user, dataset=folder_face.dataset, role=Membership.Role.REVIEWER)
    assert _login(client, user).get(f"/faces/{folder_face.pk}/image").status_code == 200


def test_unknown_face_is_404(client, staff):
    assert _login(client, staff).get("/faces/999999/thumbnail").status_code == 404


def test_dataset_list_shows_only_member_datasets_and_escapes_names(client, user, db):
    MembershipFactory(user=user, dataset__name="<script>alert(1)</script>")
    IdentityFactory(source__dataset__name="someone-elses")
    body = _login(client, user).get("/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)" not in body
    assert "someone-elses" not in body


# -- bounded decoding (issue 10, item 9) -------------------------------------------------------------

@pytest.fixture
def huge_png_face(db, tmp_path):
    # 8000x8000 of one colour: 64 Mpx in memory, a few hundred KB on disk. Under Pillow's own
    # bomb limit (179 Mpx), so only the app's pixel budget stops it.
    Image.new("L", (8000, 8000), 200).save(tmp_path / "huge.png", optimize=False)
    return FaceFactory(identity=IdentityFactory(source=SourceFactory(root=str(tmp_path))), path="huge.png")


def test_an_image_beyond_the_pixel_budget_gets_the_too_large_placeholder_undecoded(
        client, staff, huge_png_face, settings, monkeypatch):
    from reviewapp.services import images

    settings.IMAGE_MAX_PIXELS = 1_000_000
    decoded = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or real_load(self))
    response = _login(client, staff).get(f"/faces/{huge_png_face.pk}/thumbnail")
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert response.content == images.too_large_placeholder()
    assert (8000, 8000) not in decoded  # only the header was read
    # Not cached: the placeholder says nothing about the face, and a replaced file should show.
    assert not images.thumbnail_path(huge_png_face.pk).exists()


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_within_the_budget(client, staff, db, tmp_path, settings):
    # 4000x4000 = 16 Mpx on disk, but JPEG's DCT scaling decodes it at 500x500 for a thumbnail.
    Image.new("RGB", (4000, 4000), (10, 120, 200)).save(tmp_path / "big.jpg", quality=50)
    face = FaceFactory(identity=IdentityFactory(source=SourceFactory(root=str(tmp_path))), path="big.jpg")
    settings.IMAGE_MAX_PIXELS = 1_000_000
    response = _login(client, staff).get(f"/faces/{face.pk}/thumbnail")
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (112, 112)
    r, g, b = image.convert("RGB").getpixel((56, 56))
    assert abs(r - 10) < 8 and abs(g - 120) < 8 and abs(b - 200) < 8


def test_a_non_browser_image_beyond_the_budget_is_not_converted(client, staff, db, tmp_path, settings):
    Image.new("L", (2000, 2000), 128).save(tmp_path / "big.pgm")
    face = FaceFactory(identity=IdentityFactory(source=SourceFactory(root=str(tmp_path))), path="big.pgm")
    settings.IMAGE_MAX_PIXELS = 1_000_000
    response = _login(client, staff).get(f"/faces/{face.pk}/image")
    assert response.status_code == 404


def test_a_made_thumbnail_is_served_from_its_cache_the_second_time(client, staff, folder_face, monkeypatch):
    from reviewapp.services import images

    first = _login(client, staff).get(f"/faces/{folder_face.pk}/thumbnail").content
    monkeypatch.setattr(images, "face_bytes", lambda **kw: pytest.fail("the image was read again"))
    second = client.get(f"/faces/{folder_face.pk}/thumbnail")
    assert second.status_code == 200 and second.content == first


def test_a_jpeg_with_exif_orientation_gets_an_upright_thumbnail(client, staff, db, tmp_path):
    # 200x100 stored, orientation 6: upright it is 100x200, so the thumbnail has black bars
    # left and right, none at the top.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (200, 100), (230, 230, 230)).save(tmp_path / "phone.jpg", exif=exif)
    face = FaceFactory(identity=IdentityFactory(source=SourceFactory(root=str(tmp_path))), path="phone.jpg")
    response = _login(client, staff).get(f"/faces/{face.pk}/thumbnail")
    image = Image.open(io.BytesIO(response.content)).convert("L")
    assert image.getpixel((5, 56)) < 30  # left bar
    assert image.getpixel((56, 5)) > 200  # picture reaches the top
