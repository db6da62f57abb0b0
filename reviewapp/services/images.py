"""Reading a face's image bytes and making its cached thumbnail."""
import io
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.http import Http404
from PIL import Image, ImageDraw, ImageOps

from ml.api import RecordIOError, RecordReader, over_budget, unpack_image, write_bytes_atomic

from ..models import Face, Source

THUMBNAIL_SIZE = 112
_BROWSER_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif"}


@lru_cache(maxsize=64)
def _record_reader(rec_path: str) -> RecordReader:
    # Faces carry their record offset, so the (possibly huge) .idx is never needed here.
    return RecordReader(rec_path, load_index=False)


def _read_file(source: Source, relative: str) -> bytes:
    root = Path(source.root)
    path = (root / relative).resolve()
    # Checked again at serve time: a symlink may have been changed since the import.
    if not path.is_relative_to(root):
        raise Http404("Image is outside its dataset root")
    try:
        return path.read_bytes()
    except OSError:
        raise Http404("Image file is unreadable") from None


def face_bytes(*, face: Face) -> bytes:
    """The encoded image of a face, from its file or its RecordIO record."""
    source = face.source
    if source.format == Source.Format.RECORDIO:
        try:
            payload, _ = _record_reader(source.record_file).read_at(face.record_offset)
            return unpack_image(payload).image
        except (OSError, RecordIOError):
            raise Http404("Image record is unreadable") from None
    return _read_file(source, face.path)


def face_image_bytes(*, face: Face) -> tuple[bytes, str]:
    """Bytes a browser can show: JPEG, PNG and GIF as stored, anything else (PGM, BMP) as PNG."""
    data = face_bytes(face=face)
    for magic, content_type in _BROWSER_TYPES.items():
        if data.startswith(magic):
            return data, content_type
    try:
        with Image.open(io.BytesIO(data)) as image:
            if _beyond_budget(image):
                raise Http404("Image is too large to convert")
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (OSError, ValueError, Image.DecompressionBombError):
        raise Http404("Image cannot be decoded") from None
    return out.getvalue(), "image/png"


def image_pixel_size(*, face: Face) -> tuple[int, int] | None:
    """(width, height) of a face's image from its header, None when unreadable. A file is only
    opened, never decoded (Pillow reads the header lazily); a RecordIO face reads its record."""
    source = Source.objects.only("root", "format", "record_file").get(pk=face.source_id)
    try:
        if source.format == Source.Format.RECORDIO:
            face = Face(pk=face.pk, source=source, path=face.path, record_offset=_record_offset(face))
            opened = Image.open(io.BytesIO(face_bytes(face=face)))
        else:
            root = Path(source.root)
            path = (root / face.path).resolve()
            if not path.is_relative_to(root):
                return None
            opened = Image.open(path)
        with opened as image:
            return image.size
    except (Http404, OSError, ValueError, Image.DecompressionBombError):
        return None


def _record_offset(face: Face) -> int | None:
    if "record_offset" in face.get_deferred_fields():
        return Face.objects.filter(pk=face.pk).values_list("record_offset", flat=True).first()
    return face.record_offset


def _beyond_budget(image: Image.Image) -> bool:
    """Whether decoding image (as opened, or as drafted) would exceed settings.IMAGE_MAX_PIXELS.
    Image.open reads only the header, so this costs nothing: a 12000x12000 PNG of 420 KB on disk
    is 430 MB decoded, and Pillow's own bomb limit (179 Mpx) lets it through."""
    return over_budget(image, settings.IMAGE_MAX_PIXELS) is not None


def _unreadable_placeholder() -> bytes:
    image = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (60, 60, 60))
    draw = ImageDraw.Draw(image)
    draw.line((0, 0, THUMBNAIL_SIZE, THUMBNAIL_SIZE), fill=(200, 40, 40), width=3)
    draw.line((0, THUMBNAIL_SIZE, THUMBNAIL_SIZE, 0), fill=(200, 40, 40), width=3)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


@lru_cache(maxsize=1)
def too_large_placeholder() -> bytes:
    """The thumbnail of an image beyond the pixel budget: a grey tile with an amber frame (not the
    red cross of an unreadable one: the file is fine, only too big to decode here)."""
    image = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (60, 60, 60))
    ImageDraw.Draw(image).rectangle((4, 4, THUMBNAIL_SIZE - 5, THUMBNAIL_SIZE - 5), outline=(230, 160, 30), width=4)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


class _TooLarge(Exception):
    pass


def thumbnail_path(face_id: int) -> Path:
    # Sharded so that no directory holds more than 1,000 thumbnails.
    return settings.THUMBNAIL_ROOT / str(face_id // 1000) / f"{face_id}.jpg"


def face_thumbnail_bytes(*, face: Face) -> bytes:
    """A 112x112 JPEG of the face, made once and cached on disk; an unreadable image gets a
    crossed-out placeholder, one beyond the pixel budget a framed one (neither cached, so that a
    repaired or replaced file shows up). Decoding is bounded: a JPEG decodes at the smallest DCT
    scale that still covers 112x112 (draft), anything else only when within the budget."""
    path = thumbnail_path(face.pk)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    try:
        with Image.open(io.BytesIO(face_bytes(face=face))) as image:
            image.draft("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE))  # JPEG only; a no-op otherwise
            if _beyond_budget(image):
                raise _TooLarge
            # A phone photo is stored sideways with an EXIF orientation tag: show it upright.
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            canvas = Image.new("RGB", (THUMBNAIL_SIZE, THUMBNAIL_SIZE), (0, 0, 0))
            canvas.paste(image, ((THUMBNAIL_SIZE - image.width) // 2, (THUMBNAIL_SIZE - image.height) // 2))
            out = io.BytesIO()
            canvas.save(out, format="JPEG", quality=88)
    except _TooLarge:
        return too_large_placeholder()
    except (Http404, OSError, ValueError, Image.DecompressionBombError):
        return _unreadable_placeholder()
    data = out.getvalue()
    # A concurrent reader never sees half a file; a cache, so no fsync (a lost one is made again).
    write_bytes_atomic(path, data, durable=False)
    return data
