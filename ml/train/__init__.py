"""Training: config-driven single-network, Co-Mining and self-learning training with exact resume."""
from ml.train.config import TrainConfig, load_config
from ml.train.trainer import Trainer, TrainingData, TrainResult, load_trained_network, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainingData", "load_config", "load_trained_network", "train"]
