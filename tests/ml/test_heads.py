"""Margin heads: hand-computed logits on 2-d embeddings with known angles, the safe branch, gradients,
sub-centres, CurricularFace's t and AdaFace's norm statistics."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from ml.heads import (
    HEAD_NAMES,
    AdaFace,
    CombinedMarginHead,
    CurricularFace,
    SubCenterArcFace,
    build_head,
    dominant_centres,
    dominant_subcenter_angles,
)
from ml.heads.margin import combined_margin_target

S = 64.0


def unit(degrees: float, length: float = 1.0) -> list[float]:
    r = math.radians(degrees)
    return [length * math.cos(r), length * math.sin(r)]


def place_centres(head, degrees) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(d) for d in degrees]))


def cosd(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def make_head(cls, degrees, **kwargs):
    head = cls(2, len(degrees) // kwargs.get("K", 1), **kwargs)
    place_centres(head, degrees)
    return head


# ---- ArcFace / CosFace --------------------------------------------------------------------------

def test_arcface_logits_by_hand():
    head = make_head(CombinedMarginHead, [0, 90, 180], s=S, m1=1.0, m2=0.5, m3=0.0)
    x = torch.tensor([unit(30, length=7.0)])  # the norm must not matter
    logits = head(x, torch.tensor([0]))
    expected = [S * math.cos(math.radians(30) + 0.5), S * cosd(60), S * cosd(150)]
    torch.testing.assert_close(logits, torch.tensor([expected]), atol=1e-4, rtol=1e-5)


def test_cosface_logits_by_hand():
    head = build_head("cosface", 2, 3, s=S)
    place_centres(head, [0, 90, 180])
    logits = head(torch.tensor([unit(30, 3.0)]), torch.tensor([1]))
    expected = [S * cosd(30), S * (cosd(60) - 0.35), S * cosd(150)]
    torch.testing.assert_close(logits, torch.tensor([expected]), atol=1e-4, rtol=1e-5)


def test_arcface_safe_branch_beyond_pi():
    head = make_head(CombinedMarginHead, [0, 90, 180], s=S, m2=0.5)
    logits = head(torch.tensor([unit(170)]), torch.tensor([0]))  # θ + m = 170° + 28.6° > 180°
    expected = S * (cosd(170) - 0.5 * math.sin(0.5))
    assert logits[0, 0].item() == pytest.approx(expected, abs=1e-4)
    assert logits[0, 0].item() < S * math.cos(math.radians(170) + 0.5)  # raw branch would rise


@pytest.mark.parametrize("fallback", ["arcface_torch", "continuous"])
def test_target_is_monotone_in_angle(fallback):
    theta = torch.linspace(0.0, math.pi, 2001, dtype=torch.float64)
    target = combined_margin_target(torch.cos(theta), 1.0, 0.5, 0.0, fallback)
    steps = target[1:] - target[:-1]
    assert (steps <= 1e-12).all()
    largest_jump = steps.abs().max().item()
    if fallback == "continuous":
        assert largest_jump < 0.01
    else:
        # the documented downward jump of about 0.12 at θ = π - m
        assert largest_jump == pytest.approx(0.5 * math.sin(0.5) - (1 - math.cos(0.5)), abs=0.01)


def test_non_monotone_fallback_is_refused():
    with pytest.raises(ValueError):
        CombinedMarginHead(2, 3, m1=1.35, m2=0.0, fallback="arcface_torch")
    CombinedMarginHead(2, 3, m1=1.35, m2=0.0, fallback="continuous")


def test_stats_give_angles_and_nearest_other_class():
    head = make_head(CombinedMarginHead, [0, 90, 180, 40])
    head(torch.tensor([unit(30), unit(100)]), torch.tensor([0, 2]))
    stats = head.last_stats
    torch.testing.assert_close(stats["theta_y"], torch.tensor([math.radians(30), math.radians(80)]))
    torch.testing.assert_close(stats["theta_1"], torch.tensor([math.radians(10), math.radians(10)]))
    assert stats["j_star"].tolist() == [3, 1]
    assert stats["band"] is None
    assert not stats["theta_y"].requires_grad


# ---- gradients ----------------------------------------------------------------------------------

def _gradcheck(head, x, labels, **extra):
    head = head.double().eval()
    w = head.weight.detach().clone().requires_grad_(True)
    x = x.double().requires_grad_(True)

    def logits(x_, w_):
        return functional_call(head, {"weight": w_}, (x_, labels), extra)

    assert torch.autograd.gradcheck(logits, (x, w), eps=1e-6, atol=1e-5, rtol=1e-4)


def _random_inputs(num_classes=5, dim=4, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=g), torch.randint(0, num_classes, (batch,), generator=g)


def _centres_near_their_samples(head, x, labels, seed=1):
    """Move each labelled class's (sub-)centres close to its sample, so no θ_y nears the safe-branch
    switch at π - m, where the target is not differentiable."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rows = head.weight.view(head.num_classes, head.centres_per_class, -1)
        for sample, label in zip(x, labels):
            rows[label] = sample + 0.8 * torch.randn(rows[label].shape, generator=g)


@pytest.mark.parametrize("name", ["arcface", "cosface", "curricular", "subcenter"])
def test_gradcheck(name):
    x, labels = _random_inputs()
    head = build_head(name, 4, 5)
    _centres_near_their_samples(head, x, labels)
    with torch.no_grad():
        cos = head.cosine(x)
        cos_y = cos.gather(1, labels[:, None])
        target = combined_margin_target(cos_y, 1.0, 0.5)
    assert (torch.acos(cos_y) < math.pi - 0.5 - 0.05).all()
    if name == "curricular":
        head.t.fill_(0.3)
        # hard negatives present, and none on the hardness boundary
        assert (cos > target).sum() > labels.numel()
        assert ((cos - target).abs() > 1e-3).all()
    _gradcheck(head, x, labels)


def test_gradcheck_adaface_with_given_norms():
    x, labels = _random_inputs()
    head = build_head("adaface", 4, 5)
    head.norm_mean.fill_(2.0)
    head.norm_std.fill_(1.0)
    _gradcheck(head, x, labels, norms=torch.tensor([1.5, 2.5, 3.0], dtype=torch.float64))


# ---- sub-center ArcFace -------------------------------------------------------------------------

SUBCENTRES = [0, 120, 240, 60, 180, 300]  # class 0: rows 0-2, class 1: rows 3-5


def test_subcenter_takes_the_max_over_k():
    head = make_head(SubCenterArcFace, SUBCENTRES, K=3, s=S, m=0.5)
    x = torch.tensor([unit(100)])
    torch.testing.assert_close(head.cosine(x), torch.tensor([[cosd(20), cosd(40)]]))
    logits = head(x, torch.tensor([0]))
    expected = [S * math.cos(math.radians(20) + 0.5), S * cosd(40)]
    torch.testing.assert_close(logits, torch.tensor([expected]), atol=1e-4, rtol=1e-5)
    assert head.last_stats["subcenter"].tolist() == [1]


def test_dominant_subcenter_and_angles():
    head = make_head(SubCenterArcFace, SUBCENTRES, K=3)
    # class 0: two faces near centre 0 (0°) and one near centre 1 (120°); class 1: one near 180°
    x = torch.tensor([unit(5), unit(-10), unit(115), unit(170)])
    labels = torch.tensor([0, 0, 0, 1])
    assert head.dominant_subcenter(x, labels).tolist() == [0, 0, 1, 1]
    dominant, angles = dominant_subcenter_angles(head, x, labels)
    assert dominant.tolist() == [0, 1]
    torch.testing.assert_close(angles, torch.tensor([math.radians(a) for a in (5, 10, 115, 10)]))
    assert (angles > math.radians(75)).tolist() == [False, False, True, False]
    torch.testing.assert_close(dominant_centres(head, dominant), torch.tensor([unit(0), unit(180)]))


def test_dominant_subcenter_chunks_and_missing_classes():
    head = SubCenterArcFace(4, 3, K=3)
    x, _ = _random_inputs(batch=50, dim=4)
    labels = torch.randint(0, 2, (50,))  # class 2 has no samples
    dominant, angles = dominant_subcenter_angles(head, x, labels)
    assert dominant[2].item() == -1
    chunked = head.own_class_cosines(x, labels, chunk_size=7)
    torch.testing.assert_close(chunked, head.own_class_cosines(x, labels))
    own = head.subcenter_cosines(x)[torch.arange(50), labels]
    torch.testing.assert_close(chunked, own)
    assert angles.shape == (50,)


# ---- CurricularFace -----------------------------------------------------------------------------

def test_curricular_hard_negative_by_hand():
    head = make_head(CurricularFace, [0, 50, 180], s=S, m=0.5).eval()
    head.t.fill_(0.3)
    logits = head(torch.tensor([unit(30)]), torch.tensor([0]))
    # class 1 at 20° is hard (cos 20° > cos(30° + m)); class 2 at 150° is not
    expected = [S * math.cos(math.radians(30) + 0.5), S * cosd(20) * (0.3 + cosd(20)), S * cosd(150)]
    torch.testing.assert_close(logits, torch.tensor([expected]), atol=1e-4, rtol=1e-5)


def test_curricular_t_is_an_ema_of_the_target_cosine_in_training_only():
    head = make_head(CurricularFace, [0, 90, 180])
    labels = torch.tensor([0, 1])
    head(torch.tensor([unit(30), unit(45)]), labels)
    first = 0.01 * (cosd(30) + cosd(45)) / 2
    assert head.t.item() == pytest.approx(first, abs=1e-6)
    head(torch.tensor([unit(10), unit(80)]), labels)
    assert head.t.item() == pytest.approx(0.99 * first + 0.01 * (cosd(10) + cosd(10)) / 2, abs=1e-6)
    before = head.t.item()
    head.eval()
    head(torch.tensor([unit(10), unit(80)]), labels)
    assert head.t.item() == before


# ---- AdaFace ------------------------------------------------------------------------------------

def test_adaface_logits_by_hand():
    head = make_head(AdaFace, [0, 90, 180], s=S).eval()
    head.norm_mean.fill_(20.0)
    head.norm_std.fill_(10.0)
    logits = head(torch.tensor([unit(30, length=25.0)]), torch.tensor([0]))
    z_hat = 0.333 * 5.0 / (10.0 + 1e-3)
    target = math.cos(math.radians(30) - 0.4 * z_hat) - (0.4 + 0.4 * z_hat)
    expected = [S * target, S * cosd(60), S * cosd(150)]
    torch.testing.assert_close(logits, torch.tensor([expected]), atol=1e-3, rtol=1e-5)
    assert head.last_stats["norm_hat"].item() == pytest.approx(z_hat, abs=1e-6)


def test_adaface_low_norm_is_arcface_and_given_norms_override():
    head = make_head(AdaFace, [0, 90, 180], s=S).eval()
    head.norm_std.fill_(5.0)
    x, label = torch.tensor([unit(30, length=25.0)]), torch.tensor([0])
    logits = head(x, label, norms=torch.tensor([0.5]))  # ẑ clipped to -1: cos(θ + m) - 0
    assert head.last_stats["norm_hat"].item() == -1.0
    assert logits[0, 0].item() == pytest.approx(S * math.cos(math.radians(30) + 0.4), abs=1e-3)


def test_adaface_norm_ema_updates_in_training_only():
    head = make_head(AdaFace, [0, 90, 180])
    head(torch.tensor([unit(0, 10.0), unit(90, 30.0)]), torch.tensor([0, 1]))
    assert head.norm_mean.item() == pytest.approx(0.99 * 20 + 0.01 * 20, abs=1e-5)
    assert head.norm_std.item() == pytest.approx(0.99 * 100 + 0.01 * math.sqrt(200), abs=1e-4)
    head(torch.tensor([unit(0, 40.0)]), torch.tensor([0]))  # one sample: σ is left alone
    assert head.norm_mean.item() == pytest.approx(0.99 * 20 + 0.01 * 40, abs=1e-5)
    assert head.norm_std.item() == pytest.approx(0.99 * 100 + 0.01 * math.sqrt(200), abs=1e-4)
    head.eval()
    head(torch.tensor([unit(0, 90.0)]), torch.tensor([0]))
    assert head.norm_mean.item() == pytest.approx(0.99 * 20 + 0.01 * 40, abs=1e-5)


def test_adaface_does_not_backpropagate_through_the_norm():
    head = build_head("adaface", 4, 5)
    x, labels = _random_inputs()
    x = (x * 20).requires_grad_(True)
    F.cross_entropy(head(x, labels), labels).backward()
    radial = (x.grad * x.detach()).sum(dim=1) / x.detach().norm(dim=1)
    assert radial.abs().max() < 1e-4 * x.grad.norm()


# ---- all heads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", HEAD_NAMES)
def test_every_head_under_autocast_gives_float32_logits(name):
    head = build_head(name, 8, 6)
    x, labels = _random_inputs(num_classes=6, dim=8, batch=4)
    reference = head.eval()(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x.bfloat16(), labels)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, reference, atol=0.5, rtol=0.02)
    assert head.cosine(x).shape == (4, 6)
    assert set(head.last_stats) >= {"theta_y", "theta_1", "j_star", "band"}


def test_factory_rejects_unknown_heads():
    with pytest.raises(ValueError):
        build_head("softmax-of-doom", 8, 6)
    assert build_head("cosface", 8, 6, s=30.0).s == 30.0
