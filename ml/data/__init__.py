"""Face datasets, preprocessing, and the selection of samples to train on."""
from ml.data.dataset import FaceBatch, FaceDataset, FaceItem, FaceSample, collate_faces
from ml.data.label_overrides import (
    REMOVED,
    TrainingSelection,
    TrainingSubset,
    apply_overrides,
    distributed_sampler,
    read_label_file,
    select_from_file_list,
    select_with_overrides,
)
from ml.data.transforms import FaceTransform, build_transform

__all__ = [
    "FaceBatch",
    "FaceDataset",
    "FaceItem",
    "FaceSample",
    "FaceTransform",
    "REMOVED",
    "TrainingSelection",
    "TrainingSubset",
    "apply_overrides",
    "build_transform",
    "collate_faces",
    "distributed_sampler",
    "read_label_file",
    "select_from_file_list",
    "select_with_overrides",
]
