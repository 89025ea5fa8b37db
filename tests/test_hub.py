"""hub.py: spec parsing; URL downloads over a real HTTP server (pins, cache, revalidation,
offline, dropped connections, concurrent processes); hf:// through huggingface_hub against
a server speaking the Hub's resolve protocol."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from abdnet import hub
from abdnet.hub import ChecksumError, HubSource, SourceError, UrlSource, parse_source

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several read chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_files(root: Path) -> list[Path]:
    """Everything in the cache but lock files."""
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv(hub.CACHE_ENV, str(root))
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    return root


# ---------------------------------------------------------------------------------------
# parsing


def test_parse_local_and_file_url(tmp_path):
    assert parse_source(str(tmp_path / "m.safetensors")) == tmp_path / "m.safetensors"
    assert parse_source(tmp_path) == tmp_path
    assert parse_source("~/x.pth.tar") == Path.home() / "x.pth.tar"
    assert parse_source(f"file://{tmp_path}/a%20b.safetensors") == tmp_path / "a b.safetensors"


def test_parse_urls():
    pin = "AB" * 32
    src = parse_source(f"https://host.org/a/b/model.safetensors?x=1#sha256={pin}")
    assert src == UrlSource("https://host.org/a/b/model.safetensors?x=1", pin.lower())
    assert src.filename == "model.safetensors"
    assert parse_source("http://h/x/abd.pth.tar") == UrlSource("http://h/x/abd.pth.tar", None)
    assert parse_source("https://h/").filename == "download"
    assert parse_source("https://h/a/..%2F..%2Fetc").filename == "_.._etc"  # no path escape
    with pytest.raises(SourceError, match="64 hex digits"):
        parse_source("https://h/m.safetensors#sha256=abc")
    with pytest.raises(SourceError, match=r"#md5=.*only one understood is #sha256"):
        parse_source("https://h/m.safetensors#md5=" + "0" * 32)
    with pytest.raises(SourceError, match="no host"):
        parse_source("https:///m.safetensors")
    with pytest.raises(SourceError, match=r"s3://.*expected a local path"):
        parse_source("s3://bucket/m.safetensors")


def test_parse_hub():
    assert parse_source("hf://me/reid") == HubSource("me/reid", "model.safetensors", None)
    assert parse_source("hf://me/reid@v1.0") == HubSource("me/reid", "model.safetensors", "v1.0")
    assert parse_source("hf://me/reid/sub/abd.pth.tar@refs/pr/3") == HubSource(
        "me/reid", "sub/abd.pth.tar", "refs/pr/3"
    )
    for bad in ("hf://me", "hf://me/", "hf:///reid", "hf://me/reid@"):
        with pytest.raises(SourceError, match="hf://"):
            parse_source(bad)


def test_offline_variable(monkeypatch):
    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv(hub.OFFLINE_ENV, value)
        assert hub.is_offline() is expected
    monkeypatch.setenv(hub.OFFLINE_ENV, "maybe")
    with pytest.raises(SourceError, match="ABDNET_OFFLINE='maybe'"):
        hub.is_offline()
    assert hub.is_offline(False) is False


def test_local_paths_pass_through_untouched(tmp_path, cache):
    assert hub.resolve_source(str(tmp_path / "missing.safetensors")) == tmp_path / (
        "missing.safetensors"
    )
    assert not cache.exists()


# ---------------------------------------------------------------------------------------
# pinned URLs


def test_pinned_download_verifies_caches_and_needs_no_server_afterwards(file_server, cache):
    file_server.put("/w/model.safetensors", PAYLOAD)
    spec = file_server.url("/w/model.safetensors") + f"#sha256={sha(PAYLOAD)}"
    path = hub.resolve_source(spec)
    assert path.read_bytes() == PAYLOAD and path.name == "model.safetensors"
    assert path.is_relative_to(cache)
    record = json.loads(path.with_name("model.safetensors.json").read_text())
    assert record["sha256"] == sha(PAYLOAD) and record["size"] == len(PAYLOAD)
    assert record["url"] == file_server.url("/w/model.safetensors")
    file_server.stop()
    assert hub.resolve_source(spec) == path  # from the cache, the server is gone
    assert file_server.requests["/w/model.safetensors"] == 1


def test_wrong_pin_is_refused_and_nothing_is_cached(file_server, cache):
    file_server.put("/w/model.safetensors", PAYLOAD)
    wrong = "0" * 64
    url = file_server.url("/w/model.safetensors")
    with pytest.raises(ChecksumError) as err:
        hub.resolve_source(f"{url}#sha256={wrong}")
    msg = str(err.value)
    assert url in msg and wrong in msg and sha(PAYLOAD) in msg and "nothing cached" in msg
    assert cached_files(cache) == []
    # the right pin afterwards works: the failed attempt left nothing in the way
    assert hub.resolve_source(f"{url}#sha256={sha(PAYLOAD)}").read_bytes() == PAYLOAD


def test_same_url_with_different_pins_are_different_entries(file_server, cache):
    file_server.put("/m.safetensors", PAYLOAD)
    url = file_server.url("/m.safetensors")
    a = hub.resolve_source(f"{url}#sha256={sha(PAYLOAD)}")
    b = hub.resolve_source(url)
    assert a != b and a.read_bytes() == b.read_bytes() == PAYLOAD


def test_corrupted_cache_file_is_detected_and_downloaded_again(file_server, cache, caplog):
    file_server.put("/m.safetensors", PAYLOAD)
    spec = file_server.url("/m.safetensors") + f"#sha256={sha(PAYLOAD)}"
    path = hub.resolve_source(spec)
    path.write_bytes(b"bit rot")
    with caplog.at_level(logging.WARNING, logger="abdnet.hub"):
        assert hub.resolve_source(spec).read_bytes() == PAYLOAD
    assert "discarding it" in caplog.text
    assert file_server.bodies["/m.safetensors"] == 2


def test_dropped_connection_leaves_no_usable_file(file_server, cache):
    file_server.put("/m.safetensors", PAYLOAD, drop_after=300_000)
    url = file_server.url("/m.safetensors")
    for spec in (url, f"{url}#sha256={sha(PAYLOAD)}"):
        with pytest.raises(SourceError, match=r"connection lost after \d+ of 1048580 bytes"):
            hub.resolve_source(spec)
    assert cached_files(cache) == []  # neither the final name nor a temporary
    file_server.put("/m.safetensors", PAYLOAD)  # the server recovers
    assert hub.resolve_source(url).read_bytes() == PAYLOAD


def test_http_error_and_unreachable_server_without_cache(file_server, cache):
    with pytest.raises(SourceError, match=r"/nope.safetensors.*HTTP 404"):
        hub.resolve_source(file_server.url("/nope.safetensors"))
    url = file_server.url("/m.safetensors")
    file_server.stop()
    with pytest.raises(SourceError, match=r"m.safetensors: download failed.*cannot reach"):
        hub.resolve_source(url)
    assert cached_files(cache) == []


def test_offline_uses_the_cache_and_never_the_network(file_server, cache, monkeypatch):
    file_server.put("/m.safetensors", PAYLOAD)
    pinned = file_server.url("/m.safetensors") + f"#sha256={sha(PAYLOAD)}"
    unpinned = file_server.url("/m.safetensors")
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    for spec in (pinned, unpinned):
        with pytest.raises(SourceError, match=r"offline \(ABDNET_OFFLINE is set\).*not in the"):
            hub.resolve_source(spec)
    assert sum(file_server.requests.values()) == 0
    monkeypatch.setenv(hub.OFFLINE_ENV, "0")
    paths = [hub.resolve_source(s) for s in (pinned, unpinned)]
    monkeypatch.setenv(hub.OFFLINE_ENV, "1")
    before = sum(file_server.requests.values())
    assert [hub.resolve_source(s) for s in (pinned, unpinned)] == paths
    assert sum(file_server.requests.values()) == before


# ---------------------------------------------------------------------------------------
# unpinned URLs: revalidated


def test_unpinned_is_revalidated_replaced_when_changed_and_kept_when_unreachable(
    file_server, cache, caplog
):
    file_server.put("/latest.safetensors", PAYLOAD)
    url = file_server.url("/latest.safetensors")
    with caplog.at_level(logging.INFO, logger="abdnet.hub"):
        path = hub.resolve_source(url)
    assert f"pin it with {url}#sha256={sha(PAYLOAD)}" in caplog.text
    assert hub.resolve_source(url) == path  # 304: body not sent again
    assert file_server.requests["/latest.safetensors"] == 2
    assert file_server.bodies["/latest.safetensors"] == 1
    new = PAYLOAD[::-1]
    file_server.put("/latest.safetensors", new)
    assert hub.resolve_source(url).read_bytes() == new
    record = json.loads(path.with_name("latest.safetensors.json").read_text())
    assert record["sha256"] == sha(new)
    file_server.put("/latest.safetensors", PAYLOAD, drop_after=1000)  # fails mid-way
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="abdnet.hub"):
        assert hub.resolve_source(url).read_bytes() == new
    assert "connection lost" in caplog.text and "using the cached copy" in caplog.text
    file_server.stop()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="abdnet.hub"):
        assert hub.resolve_source(url).read_bytes() == new
    assert "cannot reach the server" in caplog.text


def test_unpinned_without_validators_downloads_again(file_server, cache):
    file_server.put("/m.safetensors", PAYLOAD, etag=False)
    url = file_server.url("/m.safetensors")
    hub.resolve_source(url)
    hub.resolve_source(url)
    assert file_server.bodies["/m.safetensors"] == 2


# ---------------------------------------------------------------------------------------
# concurrency


def test_concurrent_processes_download_once_and_all_get_the_file(file_server, tmp_path):
    # slow enough (~0.3 s) that the three processes overlap
    file_server.put("/m.safetensors", PAYLOAD, chunk_delay=0.02)
    spec = file_server.url("/m.safetensors") + f"#sha256={sha(PAYLOAD)}"
    code = "import sys; from abdnet.hub import resolve_source; print(resolve_source(sys.argv[1]))"
    env = {**os.environ, hub.CACHE_ENV: str(tmp_path / "c"), hub.OFFLINE_ENV: "0"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, spec],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in results]
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1 and Path(paths.pop()).read_bytes() == PAYLOAD
    assert file_server.bodies["/m.safetensors"] == 1


# ---------------------------------------------------------------------------------------
# hf://


def _serve_hf(server, repo: str, revision: str, filename: str, data: bytes, commit: str):
    # The Hub's resolve endpoint: HEAD/GET /{repo}/resolve/{revision}/{file}, the commit in
    # X-Repo-Commit and the file's SHA-256 as its ETag (how LFS files are served).
    server.put(
        f"/{repo}/resolve/{revision}/{filename}",
        data,
        headers={"X-Repo-Commit": commit, "X-Linked-Etag": f'"{sha(data)}"'},
    )


def _resolve_in_subprocess(spec: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import sys; from abdnet.hub import resolve_source; print(resolve_source(sys.argv[1]))"
    return subprocess.run(
        [sys.executable, "-c", code, spec],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_hf_revisions_cache_and_offline(file_server, tmp_path):
    v1, v2 = b"weights v1" * 1000, b"weights v2" * 1000
    c1, c2 = "1" * 40, "2" * 40
    _serve_hf(file_server, "me/reid", "v1", "model.safetensors", v1, c1)
    _serve_hf(file_server, "me/reid", "main", "model.safetensors", v2, c2)
    _serve_hf(file_server, "me/reid", "main", "other/abd.pth.tar", b"official", c2)
    env = {
        "HF_ENDPOINT": file_server.url(""),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        hub.OFFLINE_ENV: "0",
    }
    got = {}
    for spec in ("hf://me/reid@v1", "hf://me/reid", "hf://me/reid/other/abd.pth.tar"):
        run = _resolve_in_subprocess(spec, env)
        assert run.returncode == 0, run.stderr
        got[spec] = Path(run.stdout.strip())
    assert got["hf://me/reid@v1"].read_bytes() == v1
    assert got["hf://me/reid"].read_bytes() == v2
    assert got["hf://me/reid/other/abd.pth.tar"].read_bytes() == b"official"
    assert str(got["hf://me/reid"]).startswith(str(tmp_path / "hf"))  # huggingface_hub's cache
    run = _resolve_in_subprocess("hf://me/reid@v3", env)
    assert run.returncode != 0 and "hf://me/reid/model.safetensors@v3" in run.stderr
    file_server.stop()
    for offline in ({}, {"HF_HUB_OFFLINE": "1"}, {hub.OFFLINE_ENV: "1"}):  # {}: server gone
        run = _resolve_in_subprocess("hf://me/reid@v1", {**env, **offline})
        assert run.returncode == 0, run.stderr
        assert Path(run.stdout.strip()).read_bytes() == v1
        run = _resolve_in_subprocess("hf://me/reid@v9", {**env, **offline})
        assert run.returncode != 0 and "not in the Hugging Face cache" in run.stderr


def test_leftovers_of_a_killed_download_are_removed_by_the_next_one(file_server, cache):
    file_server.put("/m.safetensors", PAYLOAD)
    url = file_server.url("/m.safetensors")
    path = hub.resolve_source(url)
    incoming = path.parent / ".incoming"  # where pooch streams its temporary file
    incoming.mkdir()
    (incoming / "tmpkilled").write_bytes(PAYLOAD[:1000])
    assert hub.resolve_source(url) == path  # revalidated: 304
    assert cached_files(cache) == [path, path.with_name("m.safetensors.json")]
