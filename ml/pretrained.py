"""A pretrained face descriptor: dlib's ResNet (128-d), from the PyPI wheels `dlib-bin` and
`face-recognition-models`, offline.

Why it exists: a model trained on the dataset it judges fits the wrong labels too (issue 9
measured noisy faces ending nearer their wrong label than clean faces to their right one),
while a model that never saw these labels cannot have memorised them. On a 2-core CPU it
embeds a 10K-face set in minutes; mining its embeddings gave closed-set F1 0.95 where a
20-epoch ArcFace round gave 0.07.

Per image:
- decoded from its raw bytes (a folder file or a RecordIO record alike) with a pixel cap, EXIF
  orientation applied, big photos shrunk so the longer side is at most WORK_SIDE;
- the face box: dlib's HOG frontal detector, the largest face (photos: LFW, VGGFace2); where it
  finds none the whole image is the box, which is right for already aligned crops (InsightFace
  112x112, where the face fills the frame and the detector often misses it);
- 5-point landmarks (shape_predictor_5) in that box align the face, and the ResNet describes it.
Which box was used is recorded per row in alignment.npy (DETECTED, WHOLE_IMAGE; NOT_READ for
unreadable images), and counted in progress.json.

The output folder is laid out as ml.embed's (embeddings.npy float16 L2-normalised, norms.npy
float32 of the raw descriptor, progress.json, unreadable.json), resumable the same way: rows
below progress["done"] are final, and a killed run continues at the first unflushed batch.

face_recognition_models' __init__ imports pkg_resources, which setuptools 81 removed, so the
.dat files are found through the package's import spec without running that __init__.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from ml.embed import (
    EMBEDDINGS_FILE,
    NORMS_FILE,
    PROGRESS_FILE,
    UNREADABLE_FILE,
    EmbeddingResult,
    _read_progress,
    _write_json,
)
from ml.io.budget import IMAGE_MAX_PIXELS
from ml.run_folder import ALIGNMENT_FILE

MODEL_NAME = "dlib_resnet_v1"
DESCRIPTION = "dlib ResNet face descriptor (pretrained, 128-d)"
DIM = 128
DETECTED, WHOLE_IMAGE, NOT_READ = 1, 0, -1
MODELS_PACKAGE = "face_recognition_models"
MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}
# A decoded image of more pixels than this is refused before decoding (a "decompression bomb").
MAX_PIXELS = IMAGE_MAX_PIXELS  # the one decoding budget (ml/io/budget.py)
# Longer side of the image the detector sees. Detection time grows with the area; the face chip
# the descriptor uses is 150x150, so a face of a 4000 px photo loses nothing at 1024.
WORK_SIDE = 1024
# The detector's smallest face is about 80 px; upsampling once finds 40 px faces at 4x the cost
# (27 ms against 6 ms on a 250x250 LFW image), so it is only tried on small images without a hit.
UPSAMPLE_BELOW_SIDE = 400


class ByteSource(Protocol):
    """What the extractor reads: len() images, each as its encoded bytes (ml.data.FaceDataset
    and reviewapp's RoundFaceDataset both are one)."""

    def __len__(self) -> int: ...

    def read_bytes(self, index: int) -> bytes: ...


class ModelFilesMissing(RuntimeError):
    pass


def model_files() -> dict[str, Path]:
    """{"landmarks": ..., "descriptor": ...}: the .dat files of face_recognition_models, found
    from its import spec (its __init__ is never run). ModelFilesMissing when not installed."""
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        files = {key: Path(folder) / "models" / name for key, name in MODEL_FILES.items()}
        if all(path.is_file() for path in files.values()):
            return files
    raise ModelFilesMissing(
        f"the pretrained model needs the {MODELS_PACKAGE} package (pip install face-recognition-models) "
        f"with {', '.join(MODEL_FILES.values())}; searched {folders or 'nowhere: it is not installed'}")


def decode_rgb(data: bytes) -> np.ndarray:
    """H x W x 3 uint8 of an encoded image, EXIF orientation applied, longer side at most
    WORK_SIDE. Raises on anything unreadable or over MAX_PIXELS."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise ValueError(f"{width}x{height} is outside 1..{MAX_PIXELS} pixels")
        image.draft("RGB", (WORK_SIDE, WORK_SIDE))  # JPEG: decode at a smaller DCT scale
        image = ImageOps.exif_transpose(image).convert("RGB")
    if max(image.size) > WORK_SIDE:
        image.thumbnail((WORK_SIDE, WORK_SIDE))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


class DlibDescriptor:
    """The detector, 5-point landmarks and ResNet, loaded once per process."""

    def __init__(self, files: dict[str, Path] | None = None):
        import dlib

        files = files or model_files()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(files["landmarks"]))
        self.descriptor = dlib.face_recognition_model_v1(str(files["descriptor"]))

    def face_box(self, rgb: np.ndarray):
        """(dlib.rectangle, DETECTED or WHOLE_IMAGE): the largest detected face, else the image."""
        boxes = self.detector(rgb, 0)
        if len(boxes) == 0 and min(rgb.shape[:2]) < UPSAMPLE_BELOW_SIDE:
            boxes = self.detector(rgb, 1)
        if len(boxes):
            return max(boxes, key=lambda box: box.area()), DETECTED
        height, width = rgb.shape[:2]
        return self._dlib.rectangle(0, 0, width - 1, height - 1), WHOLE_IMAGE

    def describe(self, rgb: np.ndarray) -> tuple[np.ndarray, int]:
        """(raw 128-d descriptor float32, how the box was found)."""
        box, how = self.face_box(rgb)
        shape = self.landmarks(rgb, box)
        return np.asarray(self.descriptor.compute_face_descriptor(rgb, shape), dtype=np.float32), how


class _Described:
    """Row i of the source as (raw descriptor | None, DETECTED/WHOLE_IMAGE/NOT_READ, i). The model
    is loaded on first use in whichever process reads (DataLoader workers each load their own)."""

    def __init__(self, source: ByteSource, start: int):
        self.source, self.start = source, start
        self._model: DlibDescriptor | None = None

    def __getstate__(self):  # dlib objects do not pickle; a worker loads its own
        return {**self.__dict__, "_model": None}

    def __len__(self) -> int:
        return len(self.source) - self.start

    def __getitem__(self, position: int):
        row = self.start + position
        try:
            rgb = decode_rgb(self.source.read_bytes(row))
        except Exception:  # decoders of untrusted files raise many exception types
            return None, NOT_READ, row
        if self._model is None:
            self._model = DlibDescriptor()
        vector, how = self._model.describe(rgb)
        return vector, how, row


@dataclass(frozen=True)
class PretrainedResult:
    embedding: EmbeddingResult
    alignment_path: Path
    detected: int
    whole_image: int


def _fresh_state(total: int) -> dict:
    return {"total": total, "dim": DIM, "done": 0, "flip": False, "unreadable": [], "complete": False,
            "model": MODEL_NAME, "detected": 0, "whole_image": 0}


def _saved_state(out_dir: Path, total: int) -> dict | None:
    state = _read_progress(out_dir, total, flip=False)
    if state is None or state.get("model") != MODEL_NAME or not (out_dir / ALIGNMENT_FILE).exists():
        return None
    return state


def extract_pretrained(
    source: ByteSource,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    resume: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> PretrainedResult:
    """Describe every image of `source` into out_dir (layout of ml.embed, plus alignment.npy).

    `progress(done, total)` is called after each batch is on disk; an exception it raises stops
    the run with that progress kept. num_workers > 0 decodes and describes in that many
    processes (about linear on 2 cores: the work is per image). resume=False, or saved progress
    of another size or model, starts over."""
    from torch.utils.data import DataLoader

    model_files()  # fail now, with the reason, rather than in a worker
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    total = len(source)
    if total == 0:
        raise ValueError("there are no images to describe")
    paths = {name: out_dir / name for name in (EMBEDDINGS_FILE, NORMS_FILE, UNREADABLE_FILE, PROGRESS_FILE,
                                                ALIGNMENT_FILE)}
    state = _saved_state(out_dir, total) if resume else None
    if state is None:
        state = _fresh_state(total)
        np.lib.format.open_memmap(paths[EMBEDDINGS_FILE], mode="w+", dtype=np.float16, shape=(total, DIM)).flush()
        np.lib.format.open_memmap(paths[NORMS_FILE], mode="w+", dtype=np.float32, shape=(total,)).flush()
        alignment = np.lib.format.open_memmap(paths[ALIGNMENT_FILE], mode="w+", dtype=np.int8, shape=(total,))
        alignment[:] = NOT_READ
        alignment.flush()
        del alignment
        _write_json(paths[PROGRESS_FILE], state)

    if not state["complete"]:
        loader = DataLoader(_Described(source, state["done"]), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=list)
        embeddings = np.load(paths[EMBEDDINGS_FILE], mmap_mode="r+")
        norms = np.load(paths[NORMS_FILE], mmap_mode="r+")
        alignment = np.load(paths[ALIGNMENT_FILE], mmap_mode="r+")
        for batch in loader:
            _store(batch, embeddings, norms, alignment, state)
            for array in (embeddings, norms, alignment):
                array.flush()
            state["done"] += len(batch)
            state["complete"] = state["done"] >= total
            _write_json(paths[PROGRESS_FILE], state)
            if progress is not None:
                progress(state["done"], total)
        del embeddings, norms, alignment
        if len(state["unreadable"]) == total:
            raise RuntimeError(f"none of the {total} images could be read; check the dataset root")
    paths[UNREADABLE_FILE].write_text(json.dumps(sorted(state["unreadable"])), encoding="utf-8")
    return PretrainedResult(
        embedding=EmbeddingResult(out_dir=out_dir, embeddings_path=paths[EMBEDDINGS_FILE],
                                  norms_path=paths[NORMS_FILE], unreadable_path=paths[UNREADABLE_FILE],
                                  count=total, dim=DIM, unreadable=sorted(state["unreadable"])),
        alignment_path=paths[ALIGNMENT_FILE], detected=int(state["detected"]),
        whole_image=int(state["whole_image"]))


def _store(batch, embeddings, norms, alignment, state) -> None:
    for vector, how, row in batch:
        alignment[row] = how
        if vector is None:
            embeddings[row] = 0
            norms[row] = 0
            state["unreadable"].append(int(row))
            continue
        norm = float(np.linalg.norm(vector))
        embeddings[row] = (vector / max(norm, 1e-12)).astype(np.float16)
        norms[row] = norm
        state["detected" if how == DETECTED else "whole_image"] += 1


def pretrained_embeddings(
    paths: Sequence[str],
    out_dir: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings N x 128 float32, norms N, readable N bool) of image files (relative to root
    when given), resumable in out_dir: the call bench/noise.py makes."""
    from ml.data.dataset import FaceDataset, FaceSample

    source = FaceDataset([FaceSample(os.fspath(p), 0) for p in paths], root=root)
    result = extract_pretrained(source, out_dir, num_workers=num_workers, progress=progress).embedding
    readable = np.ones(result.count, dtype=bool)
    readable[result.unreadable] = False
    return (np.load(result.embeddings_path).astype(np.float32), np.load(result.norms_path), readable)
