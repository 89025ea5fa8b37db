"""The ``official`` architecture against the reference key list and an independent,
functional re-implementation of the authors' eval-mode forward pass over a raw state dict."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from abdnet.models import ModelOutput, build_model, canonical_official_state_dict, load_official

REFERENCE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "official-abdnet-state-dict-shapes.json"
)


@pytest.fixture(scope="module")
def official751() -> nn.Module:
    return build_model("official", num_classes=751)


# ---------------------------------------------------------------------------------------
# Independent reference: the authors' eval forward, written from the facts of their code
# (torchreid/models/resnet.py, components/branches.py, components/attention.py), functional.


def _bn(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[p + ".running_mean"],
        sd[p + ".running_var"],
        sd[p + ".weight"],
        sd[p + ".bias"],
        False,
        0.0,
        1e-5,
    )


def _bottleneck(x: torch.Tensor, sd: dict, p: str, stride: int) -> torch.Tensor:
    out = F.relu(_bn(F.conv2d(x, sd[p + ".conv1.weight"]), sd, p + ".bn1"))
    out = F.relu(
        _bn(F.conv2d(out, sd[p + ".conv2.weight"], stride=stride, padding=1), sd, p + ".bn2")
    )
    out = _bn(F.conv2d(out, sd[p + ".conv3.weight"]), sd, p + ".bn3")
    if p + ".downsample.0.weight" in sd:
        x = _bn(F.conv2d(x, sd[p + ".downsample.0.weight"], stride=stride), sd, p + ".downsample.1")
    return F.relu(out + x)


def _layer(x: torch.Tensor, sd: dict, p: str, stride: int) -> torch.Tensor:
    n = 1 + max(int(k[len(p) + 1 :].split(".")[0]) for k in sd if k.startswith(p + "."))
    for i in range(n):
        x = _bottleneck(x, sd, f"{p}.{i}", stride if i == 0 else 1)
    return x


def _cam(x: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    q = x.view(b, c, -1)
    energy = torch.bmm(q, q.permute(0, 2, 1))
    energy = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
    out = torch.bmm(F.softmax(energy, dim=-1), q).view(b, c, h, w)
    return gamma * out + x


def _pam(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    b, c, h, w = x.shape
    q = (
        F.conv2d(x, sd[p + ".query_conv.weight"], sd[p + ".query_conv.bias"])
        .view(b, -1, h * w)
        .permute(0, 2, 1)
    )
    k = F.conv2d(x, sd[p + ".key_conv.weight"], sd[p + ".key_conv.bias"]).view(b, -1, h * w)
    att = F.softmax(torch.bmm(q, k), dim=-1)
    v = F.conv2d(x, sd[p + ".value_conv.weight"], sd[p + ".value_conv.bias"]).view(b, -1, h * w)
    out = torch.bmm(v, att.permute(0, 2, 1)).view(b, c, h, w)
    return sd[p + ".gamma"] * out + x


def _head(x: torch.Tensor, sd: dict, p: str, kind: str) -> torch.Tensor:
    f = F.relu(_bn(F.conv2d(x, sd[p + ".conv5c.0.weight"], padding=1), sd, p + ".conv5c.1"))
    if kind == "cam":
        f = _cam(f, sd[p + ".attention_module.gamma"])
    elif kind == "pam":
        f = _pam(f, sd, p + ".attention_module")
    f = F.relu(_bn(F.conv2d(f, sd[p + ".conv52.0.weight"], padding=1), sd, p + ".conv52.1"))
    return F.conv2d(f, sd[p + ".conv7.1.weight"], sd[p + ".conv7.1.bias"])


def official_reference_embedding(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The authors' eval embedding: cat of branch outputs in the checkpoint's branch order."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    p = "common_branch.backbone1"
    x = F.relu(_bn(F.conv2d(x, sd[p + ".0.weight"], stride=2, padding=3), sd, p + ".1"))
    x = F.max_pool2d(x, 3, 2, 1)
    x = _layer(x, sd, p + ".4", 1)
    x = _cam(x, sd["common_branch.shallow_cam._cam_module.gamma"])
    x = _layer(x, sd, "common_branch.backbone2.0", 2)
    x = _layer(x, sd, "common_branch.backbone2.1", 2)
    predict = []
    for i in (0, 1):
        b = f"branches.{i}"
        t = _layer(x, sd, b + ".0.backbone", 1)  # last stride removed
        if any(k.startswith(b + ".1.reduction.") for k in sd):  # the ABD branch
            t = F.relu(_bn(F.conv2d(t, sd[b + ".1.reduction.0.weight"]), sd, b + ".1.reduction.1"))
            margin = t.size(2) // 2
            for s in range(2):
                piece = t[:, :, margin * s : margin * (s + 1), :]
                summed = sum(
                    _head(piece, sd, f"{b}.1.{n}_module", n) for n in ("before", "cam", "pam")
                )
                after = F.conv2d(
                    summed, sd[b + ".1.sum_conv.1.weight"], sd[b + ".1.sum_conv.1.bias"]
                )
                predict.append(F.adaptive_avg_pool2d(after, 1).view(x.size(0), -1))
        else:  # the global branch
            v = F.adaptive_avg_pool2d(t, 1).view(x.size(0), -1)
            v = F.linear(v, sd[b + ".1.fc.0.weight"], sd[b + ".1.fc.0.bias"])
            predict.append(F.relu(_bn(v, sd, b + ".1.fc.1")))
    return torch.cat(predict, 1)


def _randomized_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's weights with non-trivial BN statistics, BN affine and attention gammas."""
    g = torch.Generator().manual_seed(seed)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for k, v in sd.items():
        if k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
        elif k.endswith("num_batches_tracked"):
            v.fill_(1234)
        elif k.endswith("gamma"):
            v.copy_(torch.rand(v.shape, generator=g) * 0.8 + 0.2)
        elif (k.endswith(".weight") and v.dim() == 1) or k.endswith(".bias"):
            v.copy_(
                torch.randn(v.shape, generator=g) * 0.05 + (1.0 if k.endswith(".weight") else 0.0)
            )
    return sd


def _swap_branches(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k.startswith("branches.0."):
            k = "branches.1." + k[len("branches.0.") :]
        elif k.startswith("branches.1."):
            k = "branches.0." + k[len("branches.1.") :]
        out[prefix + k] = v
    return out


def _pdist(e: torch.Tensor) -> torch.Tensor:
    return torch.cdist(e.double(), e.double()) ** 2


# ---------------------------------------------------------------------------------------


def test_state_dict_equals_reference_key_list(official751: nn.Module) -> None:
    ref = json.loads(REFERENCE.read_text())
    assert len(ref) == 450
    own = {k: list(v.shape) for k, v in official751.state_dict().items()}
    assert sorted(set(own) - set(ref)) == [] and sorted(set(ref) - set(own)) == []
    assert own == ref


def test_parameter_count_and_dim(official751: nn.Module) -> None:
    assert sum(p.numel() for p in official751.parameters()) == 69_175_184
    classifiers = [
        m
        for n, m in official751.named_modules()
        if n.endswith(("classifier", "classifiers.0", "classifiers.1"))
    ]
    assert sum(p.numel() for m in classifiers for p in m.parameters()) == 69_175_184 - 66_865_859
    assert official751.feature_dim == 3072 and official751.num_classes == 751


def test_load_official_matches_reference_forward(official751: nn.Module, tmp_path: Path) -> None:
    sd = _randomized_state(official751, seed=0)
    torch.manual_seed(0)
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        want_abd_first = official_reference_embedding(sd, x)
        global_first = _swap_branches(sd, prefix="module.")
        want_global_first = official_reference_embedding(global_first, x)
    assert want_abd_first.shape == (3, 3072)
    # the two orders give permuted embeddings with equal distances
    torch.testing.assert_close(want_global_first[:, :1024], want_abd_first[:, 2048:])
    assert (want_abd_first - want_global_first).abs().max() > 0

    a = tmp_path / "abd_first.pth.tar"
    torch.save({"state_dict": sd, "rank1": 0.9, "epoch": 3}, a)
    b = tmp_path / "global_first_module.pth.tar"
    torch.save({"state_dict": global_first, "rank1": 0.9, "epoch": 3}, b)
    for path, want in ((a, want_abd_first), (b, want_global_first)):
        model = load_official(path)
        assert not model.training and model.num_classes == 751
        with torch.no_grad():
            got = model(x).embedding
        ref_d, got_d = _pdist(want), _pdist(got)
        rel = (got_d - ref_d).abs().max() / ref_d.abs().max()
        assert rel < 1e-4, f"{path.name}: relative distance error {rel:.2e}"
        # our embedding order is always [stripe 1, stripe 2, global]
        torch.testing.assert_close(
            got, want_abd_first, rtol=1e-4, atol=1e-4 * float(want.abs().max())
        )


def test_load_official_bare_state_dict_and_num_classes(
    official751: nn.Module, tmp_path: Path
) -> None:
    sd = _randomized_state(official751, seed=1)
    path = tmp_path / "bare.pth"
    torch.save(sd, path)
    loaded = load_official(path, num_classes=751)
    for key in ("branches.1.1.classifier.weight", "common_branch.shallow_cam._cam_module.gamma"):
        torch.testing.assert_close(loaded.state_dict()[key], sd[key])
    with pytest.raises(ValueError, match="751"):
        load_official(path, num_classes=7)


def test_load_official_reports_bad_keys(official751: nn.Module, tmp_path: Path) -> None:
    sd = {k: v.clone() for k, v in official751.state_dict().items()}
    del sd["common_branch.backbone2.1.3.conv2.weight"]
    sd["branches.0.1.sum_conv.1.bias"] = torch.zeros(5)
    sd["branches.1.1.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth.tar"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ValueError) as info:
        load_official(path)
    msg = str(info.value)
    for needle in (
        str(path),
        "missing",
        "common_branch.backbone2.1.3.conv2.weight",
        "unexpected",
        "branches.1.1.extra.weight",
        "mis-shaped",
        "branches.0.1.sum_conv.1.bias",
    ):
        assert needle in msg


def test_branch_detection_needs_both_branches() -> None:
    sd = {"branches.0.1.fc.0.weight": torch.zeros(1), "branches.1.1.fc.0.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="cannot identify"):
        canonical_official_state_dict(sd, "x.pth")


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):  # unpickling calls open(marker, "w"), creating the file
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"common_branch.backbone1.0.weight": Payload()}}, path)
    with pytest.raises(ValueError, match="refused"):
        load_official(path)
    assert not marker.exists()
    # the payload is live: plain pickle would have run it
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Payload()))
    pickle.loads(plain.read_bytes()).close()
    assert marker.exists()


def test_train_mode_output(official751: nn.Module) -> None:
    official751.train()
    try:
        out = official751(torch.randn(2, 3, 64, 32))
    finally:
        official751.eval()
    assert isinstance(out, ModelOutput)
    assert out.embedding.shape == (2, 3072)
    assert [t.shape for t in out.logits] == [(2, 751)] * 3
    assert [t.shape for t in out.triplet_features] == [(2, 1024)] * 3
    # stripe vectors and the global vector form the embedding, in that order
    torch.testing.assert_close(out.embedding, torch.cat(out.triplet_features, 1))
    positions = ("shallow", "before", "cam", "pam", "sum")
    names = [(n, w) for n, _, w in out.features.of_terms(positions)]
    assert names == [("shallow", 0.01)] + [
        (n, 0.5) for n in ("before", "before", "cam", "cam", "pam", "pam", "sum", "sum")
    ]
    terms = out.features.of_terms(positions)
    assert terms[0][1].shape == (2, 256, 16, 8)
    assert terms[1][1].shape == (2, 1024, 2, 2)


def test_ow_scopes(official751: nn.Module) -> None:
    weights = official751.ow_weights()
    assert len(weights) == 1 + 10 + 13 + 19 + 2 * 10  # stem + layer1..3 + 2 x layer4 (resnet50)
    stem = build_model("official", num_classes=3, backbone="resnet18", ow_scope="stem")
    assert [tuple(w.shape) for w in stem.ow_weights()] == [(64, 3, 7, 7)]
    assert stem.ow_weights()[0] is stem.common_branch.backbone1[0].weight


def test_official_config_checks() -> None:
    with pytest.raises(ValueError, match="svd_layer"):
        build_model("official", num_classes=3, backbone="resnet18", svd_layer=True)
    # Ta exists in this network too: O.F. may be put there (the authors' code does not)
    ta = build_model("official", num_classes=3, backbone="resnet18", of_positions=("reduction",))
    assert ta.eval()(torch.randn(1, 3, 64, 32)).features.map("reduction").shape[1] == 1024
    with pytest.raises(ValueError, match="'pam'"):
        build_model("official", num_classes=3, backbone="resnet18", pam=False)
    m = build_model(
        "official", num_classes=3, backbone="resnet18", pam=False, of_positions=("cam", "sum")
    )
    assert not any(k.startswith("branches.0.1.pam_module") for k in m.state_dict())
    with pytest.raises(ValueError, match="divisible"):
        m.eval()(torch.randn(1, 3, 48, 32))


def test_canonical_state_dict_prefix_alias_and_order() -> None:
    t = {i: torch.full((1,), float(i)) for i in range(5)}
    raw = {
        "module.common_branch.shallow_cam._cam_module.gamma": t[0],
        "module.common_branch.shallow_cam._cam_module_abc.gamma": t[0],  # --compatibility alias
        "module.branches.0.1.fc.0.weight": t[1],
        "module.branches.0.0.backbone.0.conv1.weight": t[2],
        "module.branches.1.1.reduction.0.weight": t[3],
        "module.branches.1.0.backbone.0.conv1.weight": t[4],
    }
    out = canonical_official_state_dict(raw, "ckpt.pth.tar")
    assert out == {
        "common_branch.shallow_cam._cam_module.gamma": t[0],
        "branches.1.1.fc.0.weight": t[1],
        "branches.1.0.backbone.0.conv1.weight": t[2],
        "branches.0.1.reduction.0.weight": t[3],
        "branches.0.0.backbone.0.conv1.weight": t[4],
    }
    with pytest.raises(ValueError, match="ckpt.pth.tar"):
        canonical_official_state_dict({"branches.0.1.fc.0.weight": "not a tensor"}, "ckpt.pth.tar")
