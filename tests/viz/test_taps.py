"""Feature taps of a real (tiny) ABD-Net: maps and Grad-CAM gradients against a manual
re-run of the network's pieces with the pooled map as an autograd leaf."""

import torch
import torch.nn.functional as F

from abdnet.config import model_config
from abdnet.models import build_model_from_config
from abdnet.viz.gradcam import grad_cam
from abdnet.viz.taps import attention_taps, capture_taps, default_taps, map_tap


def _tiny(**kw):
    cfg = model_config(
        "paper", backbone="resnet18", global_dim=16, attentive_dim=16, reduction_dim=16, **kw
    )
    torch.manual_seed(0)
    model = build_model_from_config(cfg, 5).eval()
    for name, p in model.named_parameters():
        if name.endswith("gamma"):
            p.data.fill_(0.7)  # attention switched on (it starts at 0)
    return model


def test_attentive_and_global_tap_gradients_match_manual_autograd():
    model = _tiny()
    x = torch.randn(2, 3, 64, 32)
    target = torch.tensor([1, 4])
    taps = default_taps()
    assert taps["attentive"].name == "attentive"

    def score(out):
        return sum(lg[torch.arange(2), target] for lg in out.logits)

    cap = capture_taps(model, x, taps, score)
    assert not model.training

    with torch.no_grad():
        mid = model.middle(model.shallow_cam(model.stem(x)))
        ta = model.reduction(model.attentive_deep(mid))
        parts = torch.cat([ta, model.cam(ta), model.pam(ta)], dim=1)
        glob = model.global_deep(mid)
    xa = parts.clone().requires_grad_(True)
    ya = model.attentive_classifier(
        model.attentive_reduction(F.adaptive_avg_pool2d(xa, 1).flatten(1))
    )
    ya[torch.arange(2), target].sum().backward()
    xg = glob.clone().requires_grad_(True)
    yg = model.global_classifier(model.global_reduction(F.adaptive_avg_pool2d(xg, 1).flatten(1)))
    yg[torch.arange(2), target].sum().backward()

    torch.testing.assert_close(cap.maps["attentive"], parts)
    torch.testing.assert_close(cap.gradients["attentive"], xa.grad, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(cap.maps["global"], glob)
    torch.testing.assert_close(cap.gradients["global"], xg.grad, rtol=1e-4, atol=1e-7)
    cam = grad_cam(cap.maps["attentive"], cap.gradients["attentive"])
    assert cam.shape == (2, 4, 2) and torch.isfinite(cam).all()
    # any named map can be tapped (--layer)
    ta_cap = capture_taps(model, x, {"Ta": map_tap("reduction")})
    torch.testing.assert_close(ta_cap.maps["Ta"], ta)


def test_attention_taps_follow_the_config():
    model = _tiny()
    features = model(torch.randn(1, 3, 64, 32)).features
    assert set(attention_taps(features)) == {"Ta", "CAM", "PAM", "shallow CAM"}
    small = _tiny(cam=False, shallow_cam=False, of_positions=("shallow", "reduction", "pam"))
    assert set(attention_taps(small(torch.randn(1, 3, 64, 32)).features)) == {"Ta", "PAM"}


def test_official_taps_rebuild_the_striped_map():
    cfg = model_config(
        "official", backbone="resnet18", global_dim=16, attentive_dim=16, reduction_dim=16
    )
    torch.manual_seed(0)
    model = build_model_from_config(cfg, 5).eval()
    x = torch.randn(2, 3, 64, 32)
    cap = capture_taps(model, x, default_taps())
    emb = cap.output.embedding  # [stripe 1, stripe 2, global]
    fmap = cap.maps["attentive"]  # the two stripes' sum_conv outputs stacked on height
    assert fmap.shape == (2, 16, 4, 2)
    torch.testing.assert_close(fmap[:, :, :2].mean(dim=(2, 3)), emb[:, :16])
    torch.testing.assert_close(fmap[:, :, 2:].mean(dim=(2, 3)), emb[:, 16:32])
    assert cap.maps["global"].shape[:2] == (2, 512)  # res_conv_5 of resnet18
    assert {"Ta", "CAM", "PAM", "shallow CAM"} == set(attention_taps(cap.output.features))
    g = capture_taps(
        model, x, {"attentive": default_taps()["attentive"]}, lambda o: o.logits[0][:, 1]
    )
    # stripe 1's classifier reads only the top stripe: no gradient reaches the bottom one
    assert g.gradients["attentive"][:, :, 2:].abs().max() == 0
    assert g.gradients["attentive"][:, :, :2].abs().max() > 0
