"""The installed package carries what it needs: every subpackage is listed in ``pyproject.toml`` and the shipped
assets are found through :func:`ae4ad_core.assets.assets_dir` (package data, or ``$AE4AD_ASSETS``).

The slow test builds a wheel of this checkout without network access, installs it into a fresh virtual
environment (the dependencies come from the test environment, nothing is downloaded) and runs ``ae4ad models``
and a demo case from another folder; it skips where the wheel cannot be built offline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from browser_utils import REPO

from ae4ad_core.assets import ASSETS_ENV, assets_dir


def test_every_package_of_the_checkout_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setuptools_config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {"ae4ad_assets"} | {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("ae4ad_core", "ae4ad_app")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert set(setuptools_config["packages"]) == found
    assert setuptools_config["package-dir"]["ae4ad_assets"] == "assets"
    assert (REPO / "assets" / "__init__.py").is_file()


def test_assets_are_found_in_the_checkout_and_the_environment_overrides_them(monkeypatch, tmp_path):
    monkeypatch.delenv(ASSETS_ENV, raising=False)
    assert (assets_dir() / "ATTRIBUTION.md").is_file()
    monkeypatch.setenv(ASSETS_ENV, str(tmp_path))
    assert assets_dir() == tmp_path


CHECK = """
import sys
from pathlib import Path

import ae4ad_core
from ae4ad_core.analysis import analyze
from ae4ad_core.assets import assets_dir
from ae4ad_core.demo_cases import demo_cases
from ae4ad_core.registry import load_model, shipped_models_dir

assert "site-packages" in ae4ad_core.__file__, ae4ad_core.__file__
assert "site-packages" in str(assets_dir()), assets_dir()
case = next(c for c in demo_cases() if not c.is_normal)
result = analyze(case.pixels, load_model(shipped_models_dir() / "ae-d16", device="cpu"))
print(f"{case.label}: {result.verdict(0)}")
"""


def _copy_checkout(dst: Path) -> Path:
    """The checkout's files a wheel is built from, without the virtual environment, git data or build
    leftovers (so the build writes nothing into the working tree)."""
    skip = {".venv", ".git", "build", "dist", "test-artifacts", "__pycache__", ".pytest_cache", ".ruff_cache"}
    return Path(
        shutil.copytree(
            REPO, dst, ignore=lambda _, names: [n for n in names if n in skip or n.endswith(".egg-info")]
        )
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_plain_install_lists_the_zoo_and_scores_a_demo_case(tmp_path):
    if not (REPO / "assets" / "models" / "ae-d16" / "card.json").is_file():
        pytest.skip("the shipped zoo is missing")
    source = _copy_checkout(tmp_path / "src")
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, source],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"no offline wheel build here: {build.stderr.strip()[-300:]}")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies (torch, ...) come from this test environment, after the fresh environment's own
    # site-packages (a path line in a .pth file: the test environment's editable hook is not loaded).
    Path(purelib, "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = next(wheels.glob("ae4ad_studio-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", wheel], check=True
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in (ASSETS_ENV, "AE4AD_DEMO", "PYTHONPATH", "VIRTUAL_ENV")
    }
    env |= {"AE4AD_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    models = subprocess.run(
        [venv / "bin" / "ae4ad", "models"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert models.returncode == 0, models.stderr
    assert "ae-d16" in models.stdout and "vae-d16" in models.stdout, models.stdout
    demo = subprocess.run(
        [python, "-c", CHECK], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert demo.stdout.startswith("Lesion 1"), demo.stdout
