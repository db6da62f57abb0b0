"""Face-recognition backbones returning un-normalised embeddings."""
from ml.models.factory import BACKBONE_NAMES, build_backbone
from ml.models.iresnet import IResNet, count_parameters
from ml.models.mobilefacenet import MobileFaceNet

__all__ = ["BACKBONE_NAMES", "IResNet", "MobileFaceNet", "build_backbone", "count_parameters"]
