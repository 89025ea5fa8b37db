"""Grad-CAM and RAM on a hand-built network whose gradients are known in closed form."""

import numpy as np
import pytest
import torch
from torch import nn

from abdnet.models import FeatureMaps, ModelOutput
from abdnet.viz.gradcam import grad_cam, overlay_heatmap, ranking_score
from abdnet.viz.taps import capture_taps, map_tap


class ConvGapLinear(nn.Module):
    """A = conv(x) (B, C, H, W) -> mean over H, W -> W_fc: y = W_fc mean_ij A(i, j)."""

    def __init__(self, c: int = 3, k: int = 4):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(2, c, 3, padding=1)
        self.fc = nn.Linear(c, k, bias=False)

    def forward_features(self, x):
        f = FeatureMaps()
        f.add("global", self.features(x))
        return f

    def forward_head(self, f):
        y = self.fc(f.map("global").mean(dim=(2, 3)))
        return ModelOutput(embedding=y, logits=[y], features=f)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def test_grad_cam_equals_class_activation_map_for_gap_linear():
    # dy_c/dA_k(i, j) = W[c, k] / N, so Grad-CAM = ReLU(sum_k W[c, k] A_k) / N (Zhou's CAM).
    model = ConvGapLinear().eval()
    x = torch.randn(2, 2, 6, 5)
    target = torch.tensor([1, 3])
    cap = capture_taps(
        model, x, {"features": map_tap("global")}, lambda o: o.logits[0][torch.arange(2), target]
    )
    a = model.features(x).detach()
    n = 6 * 5
    w = model.fc.weight.detach()[target]  # (B, C)
    expected = torch.relu((w[:, :, None, None] * a).sum(1)) / n
    got = grad_cam(cap.maps["features"], cap.gradients["features"], normalize=False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    norm = grad_cam(cap.maps["features"], cap.gradients["features"])
    assert norm.flatten(1).amax(1).tolist() == pytest.approx([1.0, 1.0])


def test_ranking_activation_map_gradient():
    # s = -||f - g||^2, f = W mean A: ds/dA_k(i, j) = -2 (f - g) . W[:, k] / N.
    model = ConvGapLinear().eval()
    x = torch.randn(1, 2, 4, 4)
    g = torch.randn(1, 4)
    cap = capture_taps(model, x, {"f": map_tap("global")}, lambda o: ranking_score(o.embedding, g))
    with torch.no_grad():
        f = model(x).embedding
    alpha = (-2.0 * (f - g) @ model.fc.weight.detach()) / 16.0  # (1, C)
    torch.testing.assert_close(
        cap.gradients["f"], alpha[:, :, None, None].expand(1, 3, 4, 4), rtol=1e-5, atol=1e-6
    )
    assert cap.scores.item() == pytest.approx(-((f - g) ** 2).sum().item(), rel=1e-5)


def test_tap_on_a_map_the_network_lacks_is_an_error():
    model = ConvGapLinear().eval()
    with pytest.raises(ValueError, match="no feature map 'pam'"):
        capture_taps(
            model, torch.randn(1, 2, 4, 4), {"p": map_tap("pam")}, lambda o: o.logits[0][:, 0]
        )


def test_overlay_range():
    img = np.full((4, 4, 3), 255, dtype=np.uint8)
    out = overlay_heatmap(img, np.zeros((4, 4)), alpha=0.5)
    assert out.shape == (4, 4, 3) and 0.0 <= out.min() and out.max() <= 1.0
