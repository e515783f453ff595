"""Where the shipped assets are: the model zoo (``models/``), the demo data set (``demo/demo.npz``) and the
latent-size sweep summary (``sweep/sweep.json``).

They ship as the package data of a small package, ``ae4ad_assets``, whose source folder is the repository's
top-level ``assets/`` (``package-dir`` in ``pyproject.toml``), so a plain ``pip install .`` carries them and
:func:`assets_dir` finds them through :mod:`importlib.resources`, wherever the package is installed.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

__all__ = ["ASSETS_ENV", "assets_dir"]

ASSETS_ENV = "AE4AD_ASSETS"
"""Environment variable naming another assets folder (same layout), e.g. a zoo on a shared drive."""

_CHECKOUT_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def assets_dir() -> Path:
    """The folder holding ``models/``, ``demo/`` and ``sweep/``.

    In order: ``$AE4AD_ASSETS`` when set; the installed ``ae4ad_assets`` package; the ``assets/`` folder of a
    source checkout that was not (re)installed since ``ae4ad_assets`` was added to the project.
    """
    override = os.environ.get(ASSETS_ENV)
    if override:
        return Path(override).expanduser()
    try:
        return Path(str(resources.files("ae4ad_assets")))
    except ModuleNotFoundError:
        return _CHECKOUT_ASSETS
