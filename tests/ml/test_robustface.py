"""RobustFace: bands built from known angles, hand-computed logits, negative cosines, φ EMA,
the noise-factor clamp and the three |m1| schedules."""
import math

import pytest
import torch
from torch.func import functional_call

from ml.heads import EASY, HARD, NOISY, RobustFace, build_head

S = 64.0
# Class centres (degrees) on the unit circle; 2-d embeddings make every angle easy to read off.
CENTRES = [40, 90, -55, -10]
# sample angle, label; comments give θ_y and each negative's angle and band
BATCH = [
    (0, 0),   # θ_y 40: class1 90 easy (>= 68.65), class2 55 hard, class3 10 noisy (< 31.4)
    (60, 0),  # θ_y 20: class1 30 hard [11.4, 48.65), class2 115 easy, class3 70 easy
    (42, 0),  # θ_y 2: class1 48, class2 97, class3 52 all easy
    (0, 1),   # θ_y 90: class0 40, class2 55, class3 10 all noisy (< 81.4)
]
EXPECTED_BANDS = [
    [-1, EASY, HARD, NOISY],
    [-1, HARD, EASY, EASY],
    [-1, EASY, EASY, EASY],
    [NOISY, -1, NOISY, NOISY],
]


def unit(degrees: float) -> list[float]:
    r = math.radians(degrees)
    return [math.cos(r), math.sin(r)]


def cosd(degrees: float) -> float:
    return math.cos(math.radians(degrees))


def make_head(centres=CENTRES, **kwargs) -> RobustFace:
    head = RobustFace(2, len(centres), s=S, **kwargs)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([unit(d) for d in centres]))
    return head


def batch(samples=BATCH):
    return torch.tensor([unit(a) for a, _ in samples]), torch.tensor([label for _, label in samples])


def test_pair_bands_follow_the_angle_rules():
    head = make_head()
    x, labels = batch()
    bands = head.pair_bands(head.cosine(x), labels)
    assert bands.tolist() == EXPECTED_BANDS


def test_sample_flag_is_the_band_of_the_nearest_other_class():
    head = make_head().eval()
    head(*batch())
    assert head.last_stats["j_star"].tolist() == [3, 1, 1, 3]
    assert head.last_stats["band"].tolist() == [NOISY, HARD, EASY, NOISY]
    expected_theta_y = torch.tensor([math.radians(a) for a in (40, 20, 2, 90)])
    torch.testing.assert_close(head.last_stats["theta_y"], expected_theta_y)


def test_logits_by_hand():
    head = make_head().eval()
    head.phi.fill_(0.4)  # damping (1 - 0.4 / 0.8)^2 = 0.25
    logits = head(*batch([(0, 0)]))
    expected = [S * math.cos(math.radians(40) + 0.5), S * cosd(90), S * cosd(55) * 1.2, S * cosd(10) * 0.25]
    torch.testing.assert_close(logits, torch.tensor([expected]), atol=1e-4, rtol=1e-5)


def test_negative_cosines_move_the_intended_way():
    # label centre at 120°: θ_y = 120°; class1 at 100° is noisy, class2 at 130° hard, class3 at 170° easy
    head = make_head([120, -100, -130, 170]).eval()
    head.phi.fill_(0.4)
    x, labels = batch([(0, 0)])
    logits = head(x, labels)[0]
    assert head.pair_bands(head.cosine(x), labels).tolist() == [[-1, NOISY, HARD, EASY]]
    assert logits[1].item() == pytest.approx(S * cosd(100) / 0.25, abs=1e-3)
    assert logits[2].item() == pytest.approx(S * cosd(130) / 1.2, abs=1e-3)
    assert logits[3].item() == pytest.approx(S * cosd(170), abs=1e-3)
    assert logits[1] < S * cosd(100)  # noisy pair pushed down although its cosine is negative
    assert logits[2] > S * cosd(130)  # hard pair pushed up although its cosine is negative


def test_phi_is_an_ema_of_the_easy_pair_fraction_in_training_only():
    head = make_head()
    x, labels = batch()
    head(x, labels)  # 6 easy pairs out of 12 negative pairs
    assert head.last_stats["easy_fraction"].item() == pytest.approx(0.5)
    assert head.phi.item() == pytest.approx(0.005)
    head(x, labels)
    assert head.phi.item() == pytest.approx(0.99 * 0.005 + 0.005)
    head.eval()
    head(x, labels)
    assert head.phi.item() == pytest.approx(0.99 * 0.005 + 0.005)


def test_noise_factor_is_clamped_not_squared_back_up():
    head = make_head(noise_floor=1e-6).eval()
    head.phi.fill_(0.95)  # 1 - φ/(1 - μ) < 0: squaring it would wrongly give a positive weight
    assert head.noise_factor().item() == pytest.approx(1e-6)
    logits = head(*batch([(0, 0)]))
    assert 0 < logits[0, 3].item() < 1e-3


def test_fixed_schedule_keeps_m1():
    head = make_head()
    for _ in range(5):
        head(*batch())
    assert head.m1_abs.item() == pytest.approx(0.15)
    assert head.steps.item() == 5


def test_anneal_schedule_is_linear_then_flat():
    head = make_head(m1_schedule="anneal", m1_floor=0.05, anneal_steps=4)
    seen = []
    for _ in range(6):
        head(*batch())
        seen.append(head.m1_abs.item())
    assert seen == pytest.approx([0.125, 0.1, 0.075, 0.05, 0.05, 0.05])


def test_released_schedule_compounds_to_zero_and_turns_hard_faces_noisy():
    head = make_head(m1_schedule="released", phi_momentum=1.0)  # φ = this batch's easy fraction, 0.5
    seen = []
    for _ in range(30):
        head(*batch())
        seen.append(head.m1_abs.item())
    shrink = 1 - 0.5 / 0.8
    assert seen[:3] == pytest.approx([0.15 * shrink, 0.15 * shrink**2, 0.15 * shrink**3])
    assert seen[-1] < 1e-10
    # nearest other class 0.05 rad closer than the label: hard under a fixed |m1|, noisy now
    probe = batch([(0, 0)])
    centres = [40, -(40 - math.degrees(0.05)), 180, 179]
    for schedule, band in (("fixed", HARD), ("released", NOISY)):
        other = make_head(centres).eval()
        other.m1_abs.copy_(head.m1_abs if schedule == "released" else torch.tensor(0.15))
        other(*probe)
        assert other.last_stats["band"].tolist() == [band]


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError):
        make_head(m1_schedule="sometimes")


def test_gradcheck_in_every_band_and_sign():
    # plus two samples whose hard and noisy pairs have negative cosines:
    # (200°, label 2): θ_y 105, class1 at 110 hard; (150°, label 3): θ_y 160 (safe branch),
    # class0 at 110 noisy, class2 at 155 hard
    samples = [(3, 0), (60, 0), (42, 0), (5, 1), (200, 2), (150, 3)]
    head = make_head().double().eval()
    head.phi.fill_(0.4)
    x, labels = batch(samples)
    x = x.double()
    with torch.no_grad():
        cos = head.cosine(x)
        bands = head.pair_bands(cos, labels)
    for band in (HARD, NOISY):
        assert ((bands == band) & (cos < 0)).any() and ((bands == band) & (cos > 0)).any()
    assert (cos.abs() > 1e-3).all()
    w = head.weight.detach().clone().requires_grad_(True)

    def logits(x_, w_):
        return functional_call(head, {"weight": w_}, (x_, labels))

    assert torch.autograd.gradcheck(logits, (x.requires_grad_(True), w), eps=1e-6, atol=1e-5, rtol=1e-4)
    assert head(x, labels).shape == (6, 4)  # bands unchanged by the check: same geometry


def test_autocast_keeps_bands_and_float32_logits():
    head = make_head().eval()
    x, labels = batch()
    reference = head(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(x.bfloat16(), labels)
    assert logits.dtype == torch.float32
    assert head.last_stats["band"].tolist() == [NOISY, HARD, EASY, NOISY]
    torch.testing.assert_close(logits, reference, atol=0.5, rtol=0.02)


def test_factory_defaults_and_training_step():
    head = build_head("robustface", 16, 10)
    settings = (head.m, head.t, head.mu, head.gamma, head.s, head.m1_schedule)
    assert settings == (0.5, 0.2, 0.2, 2.0, 64.0, "fixed")
    assert head.m1_abs.item() == pytest.approx(0.15)
    x = torch.randn(8, 16, requires_grad=True)
    labels = torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(head(x, labels), labels).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
