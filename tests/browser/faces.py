"""Drawn faces for the browser tests' scenes, so that the screenshots show faces, not flat squares."""
import io
import itertools
from pathlib import Path

from PIL import Image, ImageDraw

from tests.factories import FaceFactory

SKIN = [(224, 182, 150), (198, 134, 96), (141, 85, 56), (240, 200, 170), (176, 120, 84), (110, 70, 45)]
BACKGROUND = [(70, 110, 160), (120, 150, 90), (160, 90, 90), (90, 90, 120), (150, 140, 110), (60, 120, 120)]


def face_jpeg(i: int) -> bytes:
    """The i-th of a few dozen distinct tiny drawn faces."""
    image = Image.new("RGB", (112, 112), BACKGROUND[i % len(BACKGROUND)])
    draw = ImageDraw.Draw(image)
    draw.ellipse((28, 16, 84, 96), fill=SKIN[(i * 5) % len(SKIN)])
    draw.ellipse((40, 44, 49, 51), fill=(40, 30, 30))
    draw.ellipse((63, 44, 72, 51), fill=(40, 30, 30))
    draw.arc((42, 60, 70, 78), 20, 160, fill=(120, 40, 40), width=2)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def face_maker(root: Path):
    """face(identity): a Face of `identity` whose image, a drawn face, lies under `root` (the
    source's root) at the face's path."""
    counter = itertools.count()

    def face(identity):
        made = FaceFactory(identity=identity)
        (root / made.path).parent.mkdir(parents=True, exist_ok=True)
        (root / made.path).write_bytes(face_jpeg(next(counter)))
        return made

    return face
