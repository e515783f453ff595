"""Device choice and the torch start-up setting of the command line and the app."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ae4ad_core.cli import _requested_device
from ae4ad_core.device import select_device, skip_device_plugins

REPO = Path(__file__).resolve().parent.parent
VARIABLE = "TORCH_DEVICE_BACKEND_AUTOLOAD"


@pytest.fixture
def unset(monkeypatch):
    """Neither variable set, and whatever a test sets removed afterwards (``delenv`` of an absent variable
    would record nothing to undo)."""
    for name in (VARIABLE, "AE4AD_DEVICE"):
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("preferred", [None, "auto", "cpu", "CUDA", "cuda:1", "mps"])
def test_plugins_are_skipped_for_the_built_in_devices(unset, preferred):
    assert skip_device_plugins(preferred) is True
    assert os.environ[VARIABLE] == "0"


@pytest.mark.parametrize(("preferred", "environment"), [("npu", None), (None, "hpu:0"), ("privateuseone", "cpu")])
def test_plugins_load_when_an_out_of_tree_device_is_asked_for(unset, preferred, environment):
    if environment is not None:
        unset.setenv("AE4AD_DEVICE", environment)
    assert skip_device_plugins(preferred) is False
    assert VARIABLE not in os.environ


@pytest.mark.parametrize("value", ["1", "0"])
def test_the_users_own_setting_stands(monkeypatch, value):
    monkeypatch.setenv(VARIABLE, value)
    assert skip_device_plugins("cpu") is False
    assert os.environ[VARIABLE] == value


@pytest.mark.skipif(not hasattr(torch, "_is_device_backend_autoload_enabled"),
                    reason="torch < 2.5 loads no device plugins on import (nothing to skip)")
def test_torch_reads_the_setting():
    """Guards the variable's name: a torch that renamed it would search for plugins again, silently."""
    code = (
        "from ae4ad_core.device import skip_device_plugins\n"
        "assert skip_device_plugins()\n"
        "import torch\n"
        "print(torch._is_device_backend_autoload_enabled())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (VARIABLE, "AE4AD_DEVICE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


def test_importing_the_device_module_does_not_import_torch():
    code = "import sys, ae4ad_core.device; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["screen", "in", "--model", "m", "--out", "o.csv"], None),
        (["screen", "in", "--device", "npu", "--out", "o.csv"], "npu"),
        (["score", "x.dcm", "--device=cuda:1"], "cuda:1"),
        (["score", "x.dcm", "--device"], None),
    ],
)
def test_the_command_line_finds_the_device_it_is_asked_for(argv, expected):
    assert _requested_device(argv) == expected


def test_select_device_honours_the_choice(monkeypatch):
    monkeypatch.setenv("AE4AD_DEVICE", "cpu")
    assert select_device() == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")


_APP_IMPORTS_TORCH = """
import os, sys
from streamlit.testing.v1 import AppTest

seen = []


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("TORCH_DEVICE_BACKEND_AUTOLOAD"))
        return None


sys.meta_path.insert(0, Watch())
assert "torch" not in sys.modules
AppTest.from_file(sys.argv[1], default_timeout=120).run()
print(seen)
"""


def test_the_app_skips_device_plugins_before_torch_is_first_imported():
    env = {k: v for k, v in os.environ.items() if k not in (VARIABLE, "AE4AD_DEVICE")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _APP_IMPORTS_TORCH, str(REPO / "app.py")], capture_output=True,
                          text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "['0']"
