"""Weight initialisation shared by the backbones."""
from torch import nn


def init_conv_bn(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, for ReLU-family activations) and identity BatchNorms."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
