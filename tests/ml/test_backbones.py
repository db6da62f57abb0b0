"""Backbones: output shapes, un-normalised embeddings, configurable input size, autocast and
channels_last, and a cpu_small model that actually trains on CPU."""
import pytest
import torch
import torch.nn.functional as F

from ml.heads import build_head
from ml.models import BACKBONE_NAMES, build_backbone, count_parameters
from ml.models.iresnet import downsampled_size

# Parameter counts documented in the module docstrings (millions, 512-d, 112x112).
DOCUMENTED_MILLIONS = {"iresnet18": 24.0, "iresnet34": 34.1, "iresnet50": 43.6, "iresnet100": 65.2}


def _image(batch: int, side: int) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
@pytest.mark.parametrize("name", ["iresnet18", "iresnet34", "iresnet50"])
def test_iresnet_112_gives_512_embedding_and_documented_size(name):
    model = build_backbone(name).eval()
    assert model(_image(1, 112)).shape == (1, 512)
    assert count_parameters(model) / 1e6 == pytest.approx(DOCUMENTED_MILLIONS[name], abs=0.06)


@torch.no_grad()
def test_iresnet100_shape_only():
    model = build_backbone("iresnet100").eval()
    assert model(_image(1, 112)).shape == (1, 512)
    assert count_parameters(model) / 1e6 == pytest.approx(DOCUMENTED_MILLIONS["iresnet100"], abs=0.06)


@torch.no_grad()
@pytest.mark.parametrize("embedding_dim", [128, 512])
def test_mobilefacenet_shapes(embedding_dim):
    model = build_backbone("mobilefacenet", embedding_dim=embedding_dim).eval()
    assert model(_image(2, 112)).shape == (2, embedding_dim)
    assert model.gdc[0].kernel_size == (7, 7)


@torch.no_grad()
def test_narrow_mobilefacenet_at_64_pixels():
    model = build_backbone("mobilefacenet", width=0.5, input_size=64, embedding_dim=128).eval()
    assert model(_image(2, 64)).shape == (2, 128)
    assert model.gdc[0].kernel_size == (4, 4)
    assert count_parameters(model) < 0.4e6


@torch.no_grad()
@pytest.mark.parametrize("side", [48, 64, 100])
def test_fc_input_follows_input_size(side):
    model = build_backbone("cpu_small", input_size=side).eval()
    final = downsampled_size(side, 4)
    assert model.fc.in_features == 128 * final * final
    assert model(_image(2, side)).shape == (2, 128)


def test_downsampled_size_rounds_up_like_a_padded_stride2_conv():
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    for side in (7, 8, 100, 112):
        assert conv(torch.zeros(1, 1, side, side)).shape[-1] == downsampled_size(side, 1)
    assert downsampled_size(112, 4) == 7


def test_factory_names_and_errors():
    expected = {"iresnet18", "iresnet34", "iresnet50", "iresnet100", "mobilefacenet", "cpu_small"}
    assert set(BACKBONE_NAMES) == expected
    with pytest.raises(ValueError):
        build_backbone("resnet9000")
    small = build_backbone("cpu_small", embedding_dim=64)
    assert (small.input_size, small.embedding_dim) == (64, 64)


@torch.no_grad()
@pytest.mark.parametrize("name", ["cpu_small", "mobilefacenet"])
def test_embeddings_are_not_normalised(name):
    model = build_backbone(name, input_size=64, **({"width": 0.5} if name == "mobilefacenet" else {}))
    model.train()
    norms = model(_image(8, 64)).norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=0.05)
    assert norms.std() > 0  # norms differ per sample, so they can carry a quality signal


@torch.no_grad()
def test_channels_last_gives_the_same_embedding():
    model = build_backbone("cpu_small").eval()
    images = _image(2, 64)
    expected = model(images)
    model = model.to(memory_format=torch.channels_last)
    got = model(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("name", ["cpu_small", "mobilefacenet"])
def test_autocast_returns_float32_embeddings(name):
    model = build_backbone(name, input_size=64, **({"width": 0.5} if name == "mobilefacenet" else {})).eval()
    images = _image(2, 64)
    reference = model(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(images)
    assert got.dtype == torch.float32
    assert torch.isfinite(got).all()
    assert F.cosine_similarity(got, reference).min() > 0.95


def test_final_bn_scale_is_frozen():
    model = build_backbone("cpu_small")
    assert not model.features.weight.requires_grad
    assert torch.all(model.features.weight == 1)


def test_cpu_small_forward_backward_at_64_pixels():
    model = build_backbone("cpu_small")
    head = build_head("arcface", model.embedding_dim, 4, s=16.0)
    labels = torch.arange(4).repeat(2)
    F.cross_entropy(head(model(_image(8, 64)), labels), labels).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_cpu_small_fits_a_tiny_batch():
    torch.manual_seed(0)
    model = build_backbone("cpu_small", input_size=32)
    head = build_head("arcface", model.embedding_dim, 4, s=16.0, m2=0.2)
    images, labels = _image(8, 32), torch.arange(4).repeat(2)
    optimiser = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(head(model(images), labels), labels)
        optimiser.zero_grad()
        loss.backward()
        losses.append(loss.item())
        optimiser.step()
    assert losses[-1] < losses[0]
