"""The paper's network (``ABDNet``) against a plain, loop-based transcription of sections 3
and 4.1 on a tiny configuration: CAM (eq. 1-2) after res_conv_2 and on Ta, PAM (eq. 3 with
conv+BN+ReLU projections), the attentive concatenation, global average pooling, the reduction
layers and the classifiers. The torchvision trunk pieces are reused as they are; everything
the paper defines is recomputed here element by element from the state dict."""

from __future__ import annotations

import math

import pytest
import torch

from abdnet.config import model_config
from abdnet.models import ABDNet


def _bn(x: list[float], sd: dict, p: str, c: int) -> float:
    mean, var = sd[p + ".running_mean"][c].item(), sd[p + ".running_var"][c].item()
    w, b = sd[p + ".weight"][c].item(), sd[p + ".bias"][c].item()
    return (x - mean) / math.sqrt(var + 1e-5) * w + b


def _softmax(row: list[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _cam(a: torch.Tensor, gamma: float) -> torch.Tensor:
    """Eq. (1)-(2) for one sample (C, H, W): x_ij = softmax_j(A_i . A_j), E_i = g sum_j x_ij A_j + A_i."""
    c, h, w = a.shape
    flat = a.reshape(c, h * w).tolist()
    out = []
    for i in range(c):
        energy = [sum(p * q for p, q in zip(flat[i], flat[j])) for j in range(c)]
        x = _softmax(energy)
        out.append(
            [gamma * sum(x[j] * flat[j][n] for j in range(c)) + flat[i][n] for n in range(h * w)]
        )
    return torch.tensor(out, dtype=torch.float64).reshape(c, h, w)


def _proj(a: list[list[float]], sd: dict, p: str) -> list[list[float]]:
    """conv1x1 (no bias) + BN + ReLU of a (C, N) map, as lists."""
    weight = sd[p + ".0.weight"][:, :, 0, 0].tolist()  # (C', C)
    out = []
    for k, wk in enumerate(weight):
        row = []
        for n in range(len(a[0])):
            v = sum(wk[c] * a[c][n] for c in range(len(a)))
            row.append(max(0.0, _bn(v, sd, p + ".1", k)))
        out.append(row)
    return out


def _pam(a: torch.Tensor, sd: dict, gamma: float) -> torch.Tensor:
    """Section 3.1.2 for one sample: s_ij = softmax_j(B_i . C_j) over positions,
    E_i = g sum_j s_ij D_j + A_i."""
    c, h, w = a.shape
    n = h * w
    flat = a.reshape(c, n).tolist()
    b, cc, d = (_proj(flat, sd, f"pam.{name}_conv") for name in ("query", "key", "value"))
    out = [[0.0] * n for _ in range(c)]
    for i in range(n):
        energy = [sum(b[k][i] * cc[k][j] for k in range(len(b))) for j in range(n)]
        s = _softmax(energy)
        for ch in range(c):
            out[ch][i] = gamma * sum(s[j] * d[ch][j] for j in range(n)) + flat[ch][i]
    return torch.tensor(out, dtype=torch.float64).reshape(c, h, w)


def _reduction(v: list[float], sd: dict, p: str) -> list[float]:
    """The footnote's reduction layer in eval mode: Linear, BN1d, ReLU (dropout off)."""
    weight, bias = sd[p + ".0.weight"].tolist(), sd[p + ".0.bias"].tolist()
    out = []
    for k, wk in enumerate(weight):
        z = sum(wi * vi for wi, vi in zip(wk, v)) + bias[k]
        out.append(max(0.0, _bn(z, sd, p + ".1", k)))
    return out


def _linear(v: list[float], sd: dict, p: str) -> list[float]:
    weight, bias = sd[p + ".weight"].tolist(), sd[p + ".bias"].tolist()
    return [sum(wi * vi for wi, vi in zip(wk, v)) + bias[k] for k, wk in enumerate(weight)]


def _gap(m: torch.Tensor) -> list[float]:
    c = m.shape[0]
    return [m[k].double().mean().item() for k in range(c)]


def reference_forward(model: ABDNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Embedding (B, kg + ka) and the two branch logits, sample by sample."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    embs, glogits, alogits = [], [], []
    with torch.no_grad():
        stem = model.stem(x)
    for bi in range(x.shape[0]):
        s = _cam(stem[bi].double(), sd["shallow_cam.gamma"].item())
        with torch.no_grad():
            mid = model.middle(s[None].float())
            g5 = model.global_deep(mid)[0].double()
            a5 = model.attentive_deep(mid)[0].double()
        # Ta = ReLU(BN(conv1x1(res_conv_5)))
        r = sd["reduction.0.weight"].shape[0]
        a5f = a5.reshape(a5.shape[0], -1)
        ta = torch.empty(r, a5f.shape[1], dtype=torch.float64)
        for k in range(r):
            for n in range(a5f.shape[1]):
                v = sum(
                    sd["reduction.0.weight"][k, :, 0, 0][c].item() * a5f[c, n].item()
                    for c in range(a5f.shape[0])
                )
                ta[k, n] = max(0.0, _bn(v, sd, "reduction.1", k))
        ta = ta.reshape(r, *a5.shape[1:])
        cam = _cam(ta, sd["cam.gamma"].item())
        pam = _pam(ta, sd, sd["pam.gamma"].item())
        att = _reduction(_gap(ta) + _gap(cam) + _gap(pam), sd, "attentive_reduction")
        glob = _reduction(_gap(g5), sd, "global_reduction")
        embs.append(torch.tensor(glob + att, dtype=torch.float64))
        glogits.append(torch.tensor(_linear(glob, sd, "global_classifier"), dtype=torch.float64))
        alogits.append(torch.tensor(_linear(att, sd, "attentive_classifier"), dtype=torch.float64))
    return torch.stack(embs), [torch.stack(glogits), torch.stack(alogits)]


@pytest.fixture(scope="module")
def tiny() -> ABDNet:
    torch.manual_seed(0)
    model = ABDNet(
        3,
        model_config(
            "paper", backbone="resnet18", global_dim=6, attentive_dim=5, reduction_dim=8,
            pam_reduction=1,
        ),
    )  # fmt: skip
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.7)  # attention switched on (it starts at 0)
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model.eval()


def test_paper_forward_equals_the_loop_transcription(tiny: ABDNet) -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32) * 0.5
    out = tiny(x)
    emb, logits = reference_forward(tiny, x)
    assert out.embedding.shape == (2, 11)
    assert emb.abs().max() > 0.01  # not a trivially zero comparison
    torch.testing.assert_close(out.embedding.double(), emb, rtol=2e-4, atol=2e-5)
    for got, want in zip(out.logits, logits, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=2e-4, atol=2e-5)
    # the attention terms matter: with the gammas at 0 the embedding changes
    gammas = [p for n, p in tiny.named_parameters() if n.endswith("gamma")]
    saved = [p.detach().clone() for p in gammas]
    with torch.no_grad():
        for p in gammas:
            p.zero_()
        plain = tiny(x).embedding
        for p, v in zip(gammas, saved, strict=True):
            p.copy_(v)
    assert (plain - out.embedding).abs().max() > 1e-3
