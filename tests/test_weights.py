"""Weights registry: lookup order, one-line errors, hashing cache, fetch from file:// URLs."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from vidpipe import weights as W
from vidpipe.cli.weights import weights_cli
from vidpipe.weights import WeightsCorrupt, WeightsEntry, WeightsError, WeightsNotFound

PAYLOAD = b"not really an onnx file, but bytes with a known sha256\n" * 10


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolated lookup: cwd, cache and $VIDPIPE_WEIGHTS all under tmp_path; a toy entry."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(W.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(W.ENV_WEIGHTS, raising=False)
    monkeypatch.setattr(W, "_MEMO", {})
    src = tmp_path / "upstream" / "toy.onnx"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    entry = WeightsEntry("toy", "face_det/toy.onnx", hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD),
                         src.as_uri(), "test licence", "face_detection")
    monkeypatch.setitem(W.REGISTRY, "toy", entry)
    return tmp_path


def _put(d: Path, rel: str = "face_det/toy.onnx", data: bytes = PAYLOAD) -> Path:
    p = d / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def test_registry_entries_are_well_formed() -> None:
    assert {"scrfd_500m", "scrfd_2.5g", "mobilefacenet_128d", "mobilefacenet_128d_paddle", "scrfd_person_2.5g",
            "yolox_nano", "osnet_x0_25_msmt17", "det_10g", "w600k_r50"} <= set(W.REGISTRY)
    for name, e in W.REGISTRY.items():
        assert e.name == name and e.relpath.count("/") == 1 and e.relpath.endswith((".onnx", ".model"))
        assert e.url.startswith("https://") and e.licence and e.task
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0)
    # buffalo_l members are listed but honestly unpinned
    assert W.REGISTRY["det_10g"].sha256 is None and W.REGISTRY["w600k_r50"].archive_member == "w600k_r50.onnx"


def test_unknown_name_lists_known() -> None:
    with pytest.raises(WeightsError, match="unknown weights 'nope'; known: .*scrfd_500m"):
        W.resolve("nope")


def test_lookup_order(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, envdir, local, cache = env / "explicit", env / "envdir", env / "weights", env / "cache" / "weights"
    monkeypatch.setenv(W.ENV_WEIGHTS, str(envdir))
    paths = [_put(d) for d in (explicit, envdir, local, cache)]
    assert [label for label, _ in W.search_dirs(explicit)] == ["--weights", "$VIDPIPE_WEIGHTS", "./weights", "user cache"]
    for i, p in enumerate(paths):
        assert W.resolve("toy", explicit).resolve() == p.resolve()
        p.unlink()
        assert i < 3 or W.find("toy", explicit) is None


def test_flat_layout_accepted(env: Path) -> None:
    flat = _put(env / "w", "toy.onnx")
    assert W.resolve("toy", env / "w") == flat
    nested = _put(env / "w")  # the task-folder layout wins within one dir
    assert W.resolve("toy", env / "w") == nested


def test_missing_is_one_line_naming_file_dirs_and_fix(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(W.ENV_WEIGHTS, str(env / "envdir"))
    with pytest.raises(WeightsNotFound) as ei:
        W.resolve("toy", env / "explicit")
    msg = str(ei.value)
    assert "\n" not in msg
    for part in ("toy.onnx", str(env / "explicit"), str(env / "envdir"), str(env / "weights"),
                 str(env / "cache" / "weights"), "vidpipe weights fetch toy"):
        assert part in msg


@pytest.mark.parametrize("data", [PAYLOAD[:-1] + b"?", PAYLOAD[:-1]], ids=["bad-sha", "bad-size"])
def test_corrupt_is_one_line(env: Path, data: bytes) -> None:
    p = _put(env / "weights", data=data)
    with pytest.raises(WeightsCorrupt) as ei:
        W.resolve("toy")
    msg = str(ei.value)
    assert "\n" not in msg and str(p.absolute()) in msg and "corrupt" in msg and "vidpipe weights fetch toy" in msg
    assert W.resolve("toy", verify=False) == p.absolute()


def test_hash_cache_by_path_size_mtime(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _put(env / "weights")
    real = hashlib.sha256(PAYLOAD).hexdigest()
    assert W.sha256_file(p) == real
    cache = json.loads((env / "cache" / "sha256.json").read_text())
    assert cache[str(p.resolve())]["sha256"] == real
    # a fresh process (empty memo) trusts the JSON while path, size and mtime agree ...
    cache[str(p.resolve())]["sha256"] = "0" * 64
    (env / "cache" / "sha256.json").write_text(json.dumps(cache))
    monkeypatch.setattr(W, "_MEMO", {})
    assert W.sha256_file(p) == "0" * 64
    assert W.sha256_file(p, use_cache=False) == real  # verify always rehashes
    # ... and rehashes once the file changes
    monkeypatch.setattr(W, "_MEMO", {})
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert W.sha256_file(p) == real


def test_fetch_file_url_verifies_then_renames(env: Path) -> None:
    out = W.fetch("toy", env / "dest")
    assert out == env / "dest" / "face_det" / "toy.onnx" and out.read_bytes() == PAYLOAD
    assert W.resolve("toy", env / "dest") == out
    assert not list((env / "dest" / "face_det").glob(".*part"))


def test_fetch_bad_download_leaves_nothing(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = W.REGISTRY["toy"]
    monkeypatch.setitem(W.REGISTRY, "toy", WeightsEntry(e.name, e.relpath, "f" * 64, e.size, e.url, e.licence, e.task))
    with pytest.raises(WeightsCorrupt):
        W.fetch("toy", env / "dest")
    assert list((env / "dest").rglob("*")) == [env / "dest" / "face_det"]
    monkeypatch.setitem(W.REGISTRY, "toy", WeightsEntry(e.name, e.relpath, e.sha256, e.size,
                                                       (env / "absent.onnx").as_uri(), e.licence, e.task))
    with pytest.raises(WeightsError, match="^cannot download file://.*absent.onnx") as ei:
        W.fetch("toy", env / "dest")
    assert "\n" not in str(ei.value)


def test_fetch_zip_member(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z = env / "pack.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("pack/toy.onnx", PAYLOAD)
        zf.writestr("pack/other.onnx", b"x")
    e = W.REGISTRY["toy"]
    monkeypatch.setitem(W.REGISTRY, "toy", WeightsEntry(e.name, e.relpath, None, None, z.as_uri(), e.licence,
                                                       e.task, archive_member="toy.onnx"))
    assert W.fetch("toy", env / "dest").read_bytes() == PAYLOAD
    assert not list((env / "dest" / "face_det").glob(".*"))


def test_fetch_default_dest_is_env_then_cache(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert W.fetch("toy") == env / "cache" / "weights" / "face_det" / "toy.onnx"
    monkeypatch.setenv(W.ENV_WEIGHTS, str(env / "envdir"))
    assert W.fetch("toy") == env / "envdir" / "face_det" / "toy.onnx"


def test_list_weights_rows(env: Path) -> None:
    _put(env / "weights")
    rows = {r.entry.name: r for r in W.list_weights()}
    assert rows["toy"].path == (env / "weights" / "face_det" / "toy.onnx").absolute()
    assert rows["det_10g"].path is None


def test_cli_list_verify_fetch(env: Path) -> None:
    runner = CliRunner()
    (env / "empty").mkdir()
    r = runner.invoke(weights_cli, ["list", "--weights", str(env / "empty")])
    assert r.exit_code == 0
    toy = next(line for line in r.output.splitlines() if line.startswith("toy "))
    assert "missing" in toy and "test licence" in toy

    r = runner.invoke(weights_cli, ["fetch", "toy", "--dest", str(env / "weights")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(weights_cli, ["verify", "toy"])
    assert r.exit_code == 0 and "toy: ok" in r.output

    (env / "weights" / "face_det" / "toy.onnx").write_bytes(PAYLOAD[:-1] + b"?")
    r = runner.invoke(weights_cli, ["verify"])
    assert r.exit_code == 1 and "toy: BAD" in r.output and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1] == "Error: 1 weights file(s) failed verification"

    r = runner.invoke(weights_cli, ["fetch", "nope"])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and r.output.startswith("Error: unknown weights 'nope'")


def test_shared_weights_match_registry(shared: Path, env: Path) -> None:
    """The real files in ../shared/weights hash to the registry's pins (catches typos)."""
    pinned = [e for e in W.REGISTRY.values() if e.sha256 and e.name != "toy"]
    for e in pinned:
        path = W.resolve(e.name, shared / "weights")
        assert path == shared / "weights" / e.relpath


def test_a_package_that_ships_weights_is_found():
    from vidpipe.weights import WeightsNotFound, package_dir

    assert (package_dir("silero_vad", "silero-vad") / "data" / "silero_vad.onnx").is_file()
    assert (package_dir("resemblyzer", "resemblyzer") / "pretrained.pt").is_file()
    with pytest.raises(WeightsNotFound, match="pip install no-such-weights"):  # "auto" then tries the next backend
        package_dir("no_such_weights_package", "no-such-weights")
