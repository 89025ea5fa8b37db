"""abdnet gallery add|search|delete|info, abdnet calibrate, and the verification numbers of
abdnet eval, end to end on a tiny model and synthetic crops; gallery commands on a Milvus Lite
file and on the Milvus server, and on Milvus Lite's server mode."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from abdnet.cli.main import main
from abdnet.data import open_dataset
from abdnet.evaluation import evaluate_verification, pairwise_distance
from abdnet.gallery import Threshold, describe_extractor, load_threshold, save_threshold
from abdnet.models import build_model_from_config
from abdnet.models.io import load_model, save_model
from abdnet.retrieval import FeatureExtractor, collect_images, parse_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_gallery_commands(gallery_target, tmp_path, tiny_checkpoint, synth_root, capsys):
    g = gallery_target.args()  # a Milvus Lite file, or a collection on the Milvus server
    images = str(synth_root / "bounding_box_test")
    n = len(collect_images([images]))
    ck = str(tiny_checkpoint)
    assert main(["gallery", "add", *g, "--checkpoint", ck, "--images", images,
                 "--no-progress", "--batch-size", "16"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert f"added {n}, already enrolled 0; {n} entries" in out.out  # rows counted once visible
    assert "ERROR" not in out.err and "WARNING" not in out.err
    assert main(["gallery", "add", *g, "--checkpoint", ck, "--images", images,
                 "--no-progress"]) == 0  # fmt: skip
    assert f"added 0, already enrolled {n}; {n} entries" in capsys.readouterr().out

    assert main(["gallery", "info", *g, "--json"]) == 0
    out = capsys.readouterr()
    info = json.loads(out.out)
    assert "ERROR" not in out.err and "WARNING" not in out.err
    assert info["backend"] == {"lite": "milvus-lite", "server": "milvus"}[gallery_target.kind]
    assert info["entries"] == n and info["crop_files"] == n and info["model"]["dim"] == 32

    query = collect_images([synth_root / "query"])[0]
    assert main(["gallery", "search", *g, "--checkpoint", ck, "--query", query,
                 "-k", "5", "--json"]) == 0  # fmt: skip
    (ans,) = json.loads(capsys.readouterr().out)
    paths = collect_images([images])
    ext = FeatureExtractor(tiny_checkpoint, device="cpu")
    d = pairwise_distance(ext([query]), ext(paths)).numpy()[0]
    qcam = parse_name(query).camid
    d[[parse_name(p).camid == qcam for p in paths]] = np.inf
    order = np.argsort(d, kind="stable")[:5]
    assert ans["camera"] == qcam + 1  # counted from 1, as the name's c<N>
    assert f"_c{ans['camera']}" in query
    assert all(r["camera"] != ans["camera"] for r in ans["results"])
    assert [r["frame"] for r in ans["results"]] == [parse_name(paths[i]).frame for i in order]
    np.testing.assert_allclose([r["distance"] for r in ans["results"]], d[order], atol=1e-5)
    assert [r["source"] for r in ans["results"]][:1] == [paths[order[0]]]

    # --threshold marks matches by the calibrated distance
    t = Threshold(
        # between the 3rd and 4th distance: float rounding of either side cannot flip it
        threshold=float((d[order[2]] + d[order[3]]) / 2),
        far=1e-3,
        far_achieved=1e-3,
        tar=0.5,
        eer=0.1,
        model=describe_extractor(ext),
    )
    save_threshold(tmp_path / "t.json", t)
    assert main(["gallery", "search", *g, "--checkpoint", ck, "--query", query,
                 "-k", "5", "--json", "--threshold", str(tmp_path / "t.json")]) == 0  # fmt: skip
    (marked,) = json.loads(capsys.readouterr().out)
    assert [r["match"] for r in marked["results"]] == [True, True, True, False, False]

    victim = ans["results"][0]["id"]
    assert main(["gallery", "delete", *g, victim, "0123456789abcdef"]) == 1
    out = capsys.readouterr()
    assert f"deleted {victim}" in out.out and "no entry 0123456789abcdef" in out.err
    assert f"{n - 1} entries" in out.out


def test_gallery_refuses_another_model(
    gallery_target, tmp_path, tiny_checkpoint, synth_root, capsys
):
    g = gallery_target.args()
    images = str(synth_root / "query")
    assert main(["gallery", "add", *g, "--checkpoint", str(tiny_checkpoint),
                 "--images", images, "--no-progress"]) == 0  # fmt: skip
    other = load_model(tiny_checkpoint)
    torch.manual_seed(1)
    model = build_model_from_config(other.config.model, 4)
    path = save_model(tmp_path / "other.safetensors", model, other.config)
    capsys.readouterr()
    assert main(["gallery", "add", *g, "--checkpoint", str(path),
                 "--images", images, "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "other weights" in err and gallery_target.uri in err


def test_a_flip_gallery_is_searched_with_flip(tmp_path, tiny_checkpoint, synth_root, capsys):
    g = str(tmp_path / "g.db")
    images = collect_images([synth_root / "query"])[:4]
    assert main(["gallery", "add", "--gallery", g, "--checkpoint", str(tiny_checkpoint),
                 "--images", *images, "--flip", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["gallery", "search", "--gallery", g, "--checkpoint", str(tiny_checkpoint),
                 "--query", images[0], "-k", "1", "--same-camera", "--json"]) == 0  # fmt: skip
    (ans,) = json.loads(capsys.readouterr().out)
    assert ans["results"][0]["source"] == images[0] and ans["results"][0]["distance"] < 1e-5
    assert main(["gallery", "info", "--gallery", g, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["flip"] is True


def test_calibrate_writes_the_operating_point(tmp_path, tiny_checkpoint, synth_root, capsys):
    out = tmp_path / "threshold.json"
    assert main(["calibrate", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--far", "0.1", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    t = load_threshold(out)
    ds = open_dataset(str(synth_root))
    ext = FeatureExtractor(tiny_checkpoint, device="cpu")
    gallery = [r for r in ds.gallery if r.pid >= 0]
    ref = evaluate_verification(
        ext([ds.read_image(r) for r in ds.query]),
        ext([ds.read_image(r) for r in gallery]),
        [r.pid for r in ds.query],
        [r.pid for r in gallery],
        [r.camid for r in ds.query],
        [r.camid for r in gallery],
        fars=(0.1,),
    )
    p = ref.at_far(0.1)
    assert (t.threshold, t.tar, t.far_achieved) == (p.threshold, p.tar, p.far)
    assert t.far == 0.1 and t.eer == ref.eer and t.num_impostor == ref.num_impostor
    assert t.model.fingerprint == describe_extractor(ext).fingerprint
    assert (tmp_path / "threshold.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "FAR <= 0.1: threshold" in printed and "EER" in printed
    # refuses to overwrite without --force
    assert main(["calibrate", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--out", str(out), "--no-progress"]) == 2  # fmt: skip
    assert "--force" in capsys.readouterr().err


def test_eval_reports_verification(tiny_checkpoint, synth_root, capsys):
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--json", "--device", "cpu"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    ds = open_dataset(str(synth_root))
    gallery = [r for r in ds.gallery if r.pid >= 0]
    cross = sum(q.camid != g.camid for q in ds.query for g in gallery)
    genuine = sum(q.camid != g.camid and q.pid == g.pid for q in ds.query for g in gallery)
    assert got["num_genuine_pairs"] == genuine and got["num_impostor_pairs"] == cross - genuine
    for key in ("tar@far=1e-02", "tar@far=1e-03", "eer"):
        assert 0.0 <= got[key] <= 1.0
    assert got["threshold@far=1e-03"] <= got["threshold@far=1e-02"]
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_root),
                 "--device", "cpu"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "TAR@FAR=1e-02" in text and "EER" in text


def _serve_args(*argv: str):
    from abdnet.cli.main import build_parser

    return build_parser(["serve"]).parse_args(
        ["serve", "--gallery", "g.db", "--checkpoint", "run", *argv]
    )


def test_serve_options_parse_into_the_access_policy_and_limits(tmp_path, capsys):
    from abdnet.cli.serve import access_policy, service_settings
    from abdnet.service import AuthError, ServiceSettings

    local, remote, key = "127.0.0.1", "192.168.0.5", "k" * 32

    def status(check, host, auth=None):
        try:
            check(host, auth)
        except AuthError as exc:
            return exc.status
        return 200

    # defaults: writes disabled, reads from the local host only, the documented limits
    args = _serve_args()
    assert (args.host, args.port, args.threshold, args.threads) == ("127.0.0.1", 8000, None, None)
    policy = access_policy(args)
    assert policy.writes == "disabled" and policy.keys is None
    assert status(policy.check_read, local) == 200 and status(policy.check_read, remote) == 403
    assert status(policy.check_write, local) == 403
    assert service_settings(args) == ServiceSettings(
        max_upload_bytes=16 * 2**20,
        max_image_pixels=4096 * 4096,
        max_batch=32,
        max_wait_ms=5.0,
        min_crop_side=8,
    )
    # a key file: writes and remote reads need one of its keys
    key_file = tmp_path / "keys"
    key_file.write_text(f"# comment\n{key}\n")
    key_file.chmod(0o600)
    policy = access_policy(_serve_args("--api-key-file", str(key_file)))
    assert policy.writes == "key" and policy.keys == [key]
    assert status(policy.check_write, local) == 401
    assert status(policy.check_write, remote, f"Bearer {key}") == 200
    assert status(policy.check_read, remote) == 401
    assert status(policy.check_read, remote, f"Bearer {key}") == 200
    # --no-auth --public-read: anyone reads and writes
    policy = access_policy(_serve_args("--no-auth", "--public-read"))
    assert policy.writes == "open"
    assert status(policy.check_write, remote) == status(policy.check_read, remote) == 200
    settings = service_settings(
        _serve_args("--max-upload-mb", "0.5", "--max-batch", "4", "--min-side", "20", "--port", "0")
    )
    assert (settings.max_upload_bytes, settings.max_batch, settings.min_crop_side) == (2**19, 4, 20)
    # refused: a key file together with --no-auth (argparse), bad limits (naming the option)
    with pytest.raises(SystemExit) as exc:
        _serve_args("--api-key-file", str(key_file), "--no-auth")
    assert exc.value.code == 2
    assert "--no-auth: not allowed with argument --api-key-file" in capsys.readouterr().err
    for argv, option in (
        (("--port", "70000"), "--port"),
        (("--max-batch", "0"), "--max-batch"),
        (("--threads", "0"), "--threads"),
    ):
        with pytest.raises(ValueError, match=option):
            service_settings(_serve_args(*argv))
    with pytest.raises(ValueError, match=r"--api-key-file .*line 1: a key must be at least"):
        key_file.write_text("short\n")
        access_policy(_serve_args("--api-key-file", str(key_file)))
    # the help text renders (a stray % in a help string would fail here)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0 and "--api-key-file" in capsys.readouterr().out


def test_milvus_lite_server_mode_prints_no_error_line(tmp_path, tiny_checkpoint, synth_root, capfd):
    """Milvus Lite's own gRPC server mode answers UNIMPLEMENTED to get_server_version:
    ``gallery info`` reports no version instead of an error line."""
    import milvus_lite

    lib = Path(milvus_lite.__file__).parent / "lib"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LD_LIBRARY_PATH=str(lib))
    server = subprocess.Popen(
        [str(lib / "milvus"), str(tmp_path / "lite.db"), f"127.0.0.1:{port}", "ERROR"],
        cwd=tmp_path,
        env=env,
    )
    try:
        g = ["--gallery", f"http://127.0.0.1:{port}", "--crops", str(tmp_path / "crops")]
        images = collect_images([synth_root / "query"])[:3]
        for _ in range(100):  # until it listens
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        assert main(["gallery", "add", *g, "--checkpoint", str(tiny_checkpoint),
                     "--images", *images, "--no-progress"]) == 0  # fmt: skip
        assert main(["gallery", "info", *g, "--json"]) == 0
        out = capfd.readouterr()
        info = json.loads(out.out[out.out.index("{") :])
        assert info["entries"] == 3 and info["server_version"] is None
        assert "ERROR" not in out.err and "UNIMPLEMENTED" not in out.err, out.err
    finally:
        server.terminate()
        server.wait(timeout=30)
