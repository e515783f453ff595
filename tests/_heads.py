"""Whole heads with reference brain masks for the brain-extraction tests: the TCGA T1c (../shared/data) and
Colin27 (Debian's mricron-data), and the rule for when they are missing (skip, but fail under ``CI=true``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TCGA_T1C = SHARED / "tcga-head" / "TCGA-FG-6692_t1c.nii.gz"
TCGA_MASK = SHARED / "tcga-head" / "TCGA-FG-6692_t1c_brainmask.nii.gz"
CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
CH2_BET = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
MARGIN = 0.01
"""How far below its measured Dice an extraction may fall before a test fails."""


def require(*paths: Path, hint: str) -> None:
    """Skip when a file is missing, except under ``CI=true``, where the data must be there."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing test data {missing}: {hint}")
        pytest.skip(f"missing test data {missing}: {hint}")
