"""Training throughput of the reference AE (64 px, batch 64): the project's trainer vs a plain loop.

The plain loop is the authors' style: a torch DataLoader over in-memory PIL images converted per item
(ToTensor + Normalize equivalents), Adam, MSE, no augmentation. The project's trainer keeps the set as a tensor
on the device and augments there. Prints one JSON object.

    python benchmarks/train_throughput.py [--images 2048] [--epochs 2] [--device cpu]
    python benchmarks/train_throughput.py --sweep-budget   # on a GPU: time 8 d x 250 epochs x 4000 images
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ae4ad_core.device import describe_device, select_device
from ae4ad_core.models import ModelConfig, build_model
from ae4ad_core.training import TrainConfig, train


class _PILSet(torch.utils.data.Dataset):
    """In-memory PIL images, converted per item like torchvision's ToTensor + Normalize(0.5, 0.5)."""

    def __init__(self, images: list[Image.Image]):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        arr = np.asarray(self.images[i], dtype=np.float32) / 255.0  # ToTensor
        t = torch.from_numpy(arr)[None]
        return (t - 0.5) / 0.5  # Normalize


def plain_loop(images_u8: np.ndarray, *, epochs: int, device: torch.device) -> float:
    pil = [Image.fromarray(a) for a in images_u8]
    loader = torch.utils.data.DataLoader(_PILSet(pil), batch_size=64, shuffle=True, num_workers=0, drop_last=True)
    torch.manual_seed(0)
    model = build_model(ModelConfig(latent_dim=16)).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n, t0 = 0, None
    for epoch in range(epochs + 1):  # epoch 0 = warm-up, not timed
        if epoch == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        for x in loader:
            x = x.to(device, non_blocking=True)
            loss = F.mse_loss(model(x).reconstruction, x)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if epoch >= 1:
                n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def project_trainer(images: np.ndarray, *, epochs: int, device: torch.device, augment: bool, compile_: bool) -> float:
    cfg = TrainConfig(latent_dim=16, image_size=64, batch_size=64, epochs=epochs + 1, augment=augment,
                      compile=compile_, val_every=10**9)
    res = train(cfg, images, None, device=device, progress=False)
    # the first epoch includes one-time costs (compilation, allocator warm-up): use the later epochs' figure
    hist = res.history
    if len(hist) >= 2:
        n_img = len(images) // 64 * 64
        first_rate = hist[0]["images_per_second"]
        last_rate = hist[-1]["images_per_second"]
        total_t = len(hist) * n_img / last_rate
        first_t = n_img / first_rate
        return (len(hist) - 1) * n_img / max(total_t - first_t, 1e-9)
    return res.images_per_second


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--sweep-budget", action="store_true")
    args = ap.parse_args()
    dev = select_device(args.device)
    rng = np.random.default_rng(0)
    base = rng.random((args.images, 64, 64)).astype(np.float32)
    u8 = (base * 255).astype(np.uint8)
    out = {"device": describe_device(dev), "torch": torch.__version__, "machine": platform.machine(),
           "images": args.images, "epochs_timed": args.epochs}
    out["plain_loop_images_per_s"] = plain_loop(u8, epochs=args.epochs, device=dev)
    out["trainer_no_augment_images_per_s"] = project_trainer(base, epochs=args.epochs, device=dev, augment=False,
                                                            compile_=False)
    out["trainer_images_per_s"] = project_trainer(base, epochs=args.epochs, device=dev, augment=True, compile_=False)
    if dev.type == "cuda":
        out["trainer_compiled_images_per_s"] = project_trainer(base, epochs=args.epochs, device=dev, augment=True,
                                                              compile_=True)
    best = max(v for k, v in out.items() if k.startswith("trainer") and k.endswith("_per_s"))
    out["ratio_trainer_vs_plain"] = out["trainer_images_per_s"] / out["plain_loop_images_per_s"]
    out["ratio_best_vs_plain"] = best / out["plain_loop_images_per_s"]
    if args.sweep_budget:
        total = 8 * 250 * 4000
        out["sweep_budget_images"] = total
        out["sweep_budget_seconds_sequential_estimate"] = total / best
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
