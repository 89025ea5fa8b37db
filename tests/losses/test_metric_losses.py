"""CE with label smoothing and batch-hard triplet loss against hand formulas and brute force."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from abdnet.losses import CrossEntropyLabelSmooth, TripletLoss, pairwise_euclidean


def test_ce_label_smooth_hand_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    targets = torch.tensor([0, 1])
    eps, K = 0.1, 3
    expected = 0.0
    for row, y in zip(logits.tolist(), targets.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        for k, v in enumerate(row):
            q = (1 - eps) * (k == y) + eps / K
            expected -= q * (v - log_z)
    expected /= 2
    got = CrossEntropyLabelSmooth(K, eps)(logits, targets)
    assert abs(got.item() - expected) < 1e-6


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_ce_label_smooth_matches_torch(eps):
    torch.manual_seed(0)
    logits = torch.randn(16, 10)
    targets = torch.randint(0, 10, (16,))
    got = CrossEntropyLabelSmooth(10, eps)(logits, targets)
    ref = F.cross_entropy(logits, targets, label_smoothing=eps)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_ce_errors_name_the_input():
    ce = CrossEntropyLabelSmooth(5)
    with pytest.raises(ValueError, match="logits"):
        ce(torch.randn(4, 6), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        ce(torch.randn(4, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smooth"):
        CrossEntropyLabelSmooth(5, 1.0)


def _triplet_brute_force(x: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """Python loops over anchors and candidates, float64 distances via torch.dist."""
    x = x.double()
    losses = []
    for a in range(len(y)):
        d_pos = [torch.dist(x[a], x[j]) for j in range(len(y)) if j != a and y[j] == y[a]]
        d_neg = [torch.dist(x[a], x[j]) for j in range(len(y)) if y[j] != y[a]]
        if not d_pos or not d_neg:
            continue
        losses.append(torch.clamp(max(d_pos) - min(d_neg) + margin, min=0.0))
    if not losses:
        return torch.zeros((), dtype=torch.float64)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("seed", range(4))
def test_triplet_matches_brute_force_pk_batches(seed):
    g = torch.Generator().manual_seed(seed)
    P, K, d = 6, 4, 16
    y = torch.arange(P).repeat_interleave(K)[torch.randperm(P * K, generator=g)]
    x = torch.randn(P * K, d, generator=g)
    for margin in (0.3, 1.2, 5.0):
        got = TripletLoss(margin)(x, y)
        torch.testing.assert_close(
            got.double(), _triplet_brute_force(x, y, margin), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("seed", range(6))
def test_triplet_matches_brute_force_random_labels(seed):
    # Random labels: some anchors have no positive (singletons), forming no triplet.
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(20, 8, generator=g) * 0.5
    y = torch.randint(0, 8, (20,), generator=g)
    got = TripletLoss(1.2)(x, y)
    torch.testing.assert_close(got.double(), _triplet_brute_force(x, y, 1.2), rtol=1e-5, atol=1e-5)


def test_triplet_without_any_triplet_is_zero_with_gradient():
    for y in (torch.zeros(5, dtype=torch.long), torch.arange(5)):  # no negatives / no positives
        x = torch.randn(5, 3, requires_grad=True)
        loss = TripletLoss(1.2)(x, y)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.equal(x.grad, torch.zeros_like(x))


def test_triplet_gradient_finite_with_duplicate_features():
    x = torch.randn(4, 6)
    x = torch.cat([x, x]).requires_grad_(True)  # exact duplicates: zero distances
    y = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    TripletLoss(1.2)(x, y).backward()
    assert torch.isfinite(x.grad).all()


def test_triplet_loss_fp32_under_autocast():
    torch.manual_seed(0)
    x = torch.randn(12, 32)
    y = torch.arange(3).repeat_interleave(4)
    ref = TripletLoss(1.2)(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = TripletLoss(1.2)(x, y)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_pairwise_euclidean_matches_cdist():
    torch.manual_seed(0)
    x = torch.randn(10, 7) * 3 + 50  # a large common offset: cancellation-prone
    ref = torch.cdist(x.double(), x.double()).clamp_min(1e-6)
    torch.testing.assert_close(pairwise_euclidean(x).double(), ref, rtol=1e-4, atol=1e-4)
