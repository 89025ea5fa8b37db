"""Trunk split, res_conv_5 stride and the three ways of getting weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from abdnet.models.backbones import BACKBONES, build_trunk

# (backbone, stem channels, middle channels, deep channels, stem down-sampling), from the
# architectures' papers; test_every_registered_backbone_has_expected_shapes keeps it complete.
EXPECTED = [
    ("resnet18", 64, 256, 512, 4),
    ("resnet34", 64, 256, 512, 4),
    ("resnet50", 256, 1024, 2048, 4),
    ("resnet101", 256, 1024, 2048, 4),
    ("resnet152", 256, 1024, 2048, 4),
    ("densenet121", 128, 1024, 1024, 8),
]


@pytest.mark.parametrize(("name", "c2", "c4", "c5", "down"), EXPECTED)
def test_trunk_shapes(name: str, c2: int, c4: int, c5: int, down: int) -> None:
    last_stride = 1 if name in ("resnet34", "resnet50", "resnet152") else 2  # both strides
    trunk = build_trunk(name, last_stride=last_stride)
    for piece in (trunk.stem, trunk.middle, trunk.deep):
        piece.eval()
    assert (trunk.stem_channels, trunk.middle_channels, trunk.deep_channels) == (c2, c4, c5)
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        s = trunk.stem(x)
        m = trunk.middle(s)
        d = trunk.deep(m)
    assert s.shape == (1, c2, 64 // down, 32 // down)
    assert m.shape[1] == c4 and m.shape[2:] == (4, 2)  # res_conv_4: 1/16
    assert d.shape == (1, c5, 4 // last_stride, 2 // last_stride)
    assert trunk.first_conv is trunk.stem[0] and trunk.first_conv.kernel_size == (7, 7)


def test_resnet_trunk_equals_torchvision_forward() -> None:
    # With last_stride=2 the three pieces are exactly torchvision's feature extractor.
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None).eval()
    path_state = ref.state_dict()
    trunk = build_trunk("resnet18", last_stride=2)
    nn.Sequential(trunk.stem, trunk.middle, trunk.deep).eval()
    own = {**_prefixed(trunk.stem, ["conv1", "bn1", "relu", "maxpool", "layer1"])}
    own.update(_prefixed(trunk.middle, ["layer2", "layer3"]))
    for k, v in trunk.deep.state_dict().items():
        own[f"layer4.{k}"] = v
    for k, v in own.items():
        v.copy_(path_state[k])
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        want = ref.layer4(
            ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x)))))))
        )
        got = trunk.deep(trunk.middle(trunk.stem(x)))
    torch.testing.assert_close(got, want)


def _prefixed(seq: nn.Sequential, names: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    for i, name in enumerate(names):
        for k, v in seq[i].state_dict().items():
            out[f"{name}.{k}"] = v
    return out


def test_pretrained_from_local_file(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = torchvision.models.resnet18(weights=None)
    for m in src.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    trunk = build_trunk("resnet18", pretrained=str(path))
    torch.testing.assert_close(trunk.stem[0].weight, src.conv1.weight)
    torch.testing.assert_close(trunk.stem[4][1].bn2.running_mean, src.layer1[1].bn2.running_mean)
    torch.testing.assert_close(trunk.deep[1].conv2.weight, src.layer4[1].conv2.weight)
    # The ImageNet classifier may be absent from the file.
    head_less = {k: v for k, v in src.state_dict().items() if not k.startswith("fc.")}
    torch.save(head_less, path)
    trunk = build_trunk("resnet18", pretrained=path)
    torch.testing.assert_close(trunk.middle[1][0].conv1.weight, src.layer3[0].conv1.weight)


def test_pretrained_file_mismatch_names_file_and_keys(tmp_path: Path) -> None:
    state = torchvision.models.resnet18(weights=None).state_dict()
    del state["layer2.0.conv1.weight"]
    state["layer3.0.bn1.weight"] = torch.ones(7)
    state["extra.weight"] = torch.ones(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as info:
        build_trunk("resnet18", pretrained=str(path))
    msg = str(info.value)
    for needle in (str(path), "layer2.0.conv1.weight", "layer3.0.bn1.weight", "extra.weight"):
        assert needle in msg


def test_pretrained_missing_file_and_unknown_backbone(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_trunk("resnet18", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="resnet7"):
        build_trunk("resnet7")
    with pytest.raises(ValueError, match="last_stride"):
        build_trunk("resnet18", last_stride=3)


def test_pretrained_file_with_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # unpickling would call open(marker, "w")
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        build_trunk("resnet18", pretrained=str(path))
    assert not marker.exists()


def test_imagenet_goes_through_torchvision_weights_api(monkeypatch: pytest.MonkeyPatch) -> None:
    # No download in tests: the weights enum's get_state_dict is replaced by a local dict.
    torch.manual_seed(2)
    src = torchvision.models.resnet34(weights=None)
    seen = []

    def fake_get_state_dict(self, *args, **kwargs):
        seen.append(self)
        return src.state_dict()

    monkeypatch.setattr(torchvision.models._api.WeightsEnum, "get_state_dict", fake_get_state_dict)
    trunk = build_trunk("resnet34", pretrained=True)
    assert seen == [torchvision.models.ResNet34_Weights.IMAGENET1K_V1]
    torch.testing.assert_close(trunk.stem[0].weight, src.conv1.weight)
    build_trunk("resnet34", pretrained="imagenet")
    assert len(seen) == 2


def test_densenet_old_style_keys(tmp_path: Path) -> None:
    # torchvision's DenseNet ImageNet file names layers "norm.1"; the loader renames them.
    src = torchvision.models.densenet121(weights=None)
    old = {}
    for k, v in src.state_dict().items():
        if k.endswith("num_batches_tracked"):  # absent from the old ImageNet files
            continue
        for part in ("norm1", "norm2", "conv1", "conv2"):
            k = k.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.")
        old[k] = v
    assert any(".norm.1." in k for k in old)
    path = tmp_path / "d121.pth"
    torch.save(old, path)
    trunk = build_trunk("densenet121", pretrained=str(path))
    want = src.features.denseblock2.denselayer3.conv2.weight
    torch.testing.assert_close(trunk.middle[0].denselayer3.conv2.weight, want)


def test_every_registered_backbone_has_expected_shapes() -> None:
    # a backbone added to the registry must be added to EXPECTED (and so be tested above)
    assert sorted(name for name, *_ in EXPECTED) == sorted(BACKBONES)
