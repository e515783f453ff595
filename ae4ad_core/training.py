"""Train an AE or VAE on normal images, calibrate it on normal validation images, register it.

Fast on every device: the (small) training set is preprocessed once, by the very function inference uses
(:func:`ae4ad_core.preprocess.prepare_slices`, see :func:`model_inputs`), into a tensor on the device; each batch
is augmented on the device (:mod:`ae4ad_core.augment`) in the [0, 1] view of that same model space and mapped
back linearly, never re-scaled, so a non-augmented training batch is bit-identical to what inference feeds the
model, and nothing is decoded or converted per epoch. On CUDA, bf16 autocast and (optionally) ``torch.compile`` are used.

Multi-GPU / multi-process: run ``torchrun --nproc_per_node=N -m ae4ad_core.training --data demo ...``; every
process takes a disjoint shard of each epoch's (shared, seeded) permutation and gradients are averaged by
``torch.nn.parallel.DistributedDataParallel`` (NCCL on CUDA, gloo on CPU). Rank 0 calibrates and saves.

Loss (Cai et al. 2024 benchmark code): MSE for the AE; MSE + ``kl_weight`` * KL (mean over the batch, KL summed
over latent dimensions) for the VAE, with ``kl_weight = 0.005``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .denoising import coarse_noise
from .device import describe_device, select_device
from .distributed import distributed_info, init_distributed
from .models import AutoEncoder, ModelConfig, build_model, kl_divergence
from .preprocess import PreprocessConfig, prepare_slices

__all__ = [
    "TrainConfig", "TrainResult", "train", "train_and_register", "main", "seed_everything", "model_inputs",
    "training_batch",
]


@dataclass(frozen=True)
class TrainConfig:
    """Training configuration (stored in the model card).

    Attributes
    ----------
    kind : {"ae", "vae"}
    latent_dim : int
    image_size : int
    epochs : int
        Passes over the training images.
    batch_size, lr : int, float
        Per-process batch size and Adam learning rate.
    kl_weight : float
        Weight of the KL term for a VAE.
    rate_weight : float
        Weight of the rate (bits per image) for a rate-distortion AE (``kind="rdae"``): the entropy control.
    seed : int
    augment : bool
        Use :class:`ae4ad_core.augment.AugmentConfig` defaults (on-device augmentation).
    augment_intensity : bool
        Include the intensity transforms (bias field, gamma, blur, noise); False keeps only the geometric ones,
        for data whose intensity is the signal (standardised FLAIR, where an AE taught to reproduce brightness
        changes would reproduce hyperintense lesions too).
    channels : tuple of int or None
        Encoder/U-Net channels (None: the architecture's default).
    noise_std, noise_resolution : float, int
        Coarse training noise of the denoising U-Net (``kind="dae"``, Kascenas et al. 2022): standard deviation
        in model-space units and the side of the grid it is drawn on before upsampling.
    val_every : int
        Epochs between validation-loss evaluations.
    checkpoint_every : int
        Epochs between checkpoints (when a checkpoint folder is given).
    amp : bool
        bf16 autocast on CUDA.
    compile : bool
        ``torch.compile`` the model on CUDA.
    fpr : float
        False-positive rate of the calibrated image threshold.
    weights_dtype : {"float32", "float16"}
    """

    kind: str = "ae"
    latent_dim: int = 16
    image_size: int = 64
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    kl_weight: float = 0.005
    rate_weight: float = 1e-4
    seed: int = 0
    augment: bool = True
    augment_intensity: bool = True
    channels: tuple[int, ...] | None = None
    noise_std: float = 0.2
    noise_resolution: int = 16
    val_every: int = 5
    checkpoint_every: int = 10
    amp: bool = True
    compile: bool = False
    fpr: float = 0.05
    weights_dtype: str = "float32"

    def model_config(self) -> ModelConfig:
        extra = {"channels": tuple(self.channels)} if self.channels else {}
        if self.kind == "dae":
            chans = tuple(self.channels or (16, 32, 64, 128))
            return ModelConfig(kind="dae", latent_dim=chans[-1], image_size=self.image_size, channels=chans)
        if self.kind == "intensity":
            return ModelConfig(kind="intensity", latent_dim=2, image_size=self.image_size, **extra)
        return ModelConfig(kind=self.kind, latent_dim=self.latent_dim, image_size=self.image_size, **extra)

    def augment_config(self):
        """The :class:`ae4ad_core.augment.AugmentConfig` this training uses."""
        from .augment import AugmentConfig

        if not self.augment:
            return AugmentConfig(enabled=False)
        return AugmentConfig() if self.augment_intensity else AugmentConfig(intensity_p=0.0)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = None if self.channels is None else list(self.channels)
        return d


@dataclass
class TrainResult:
    """A trained model (eval mode, on CPU) and what happened."""

    model: AutoEncoder
    history: list[dict] = field(default_factory=list)
    images_per_second: float = 0.0
    seconds: float = 0.0
    device: str = "cpu"
    world_size: int = 1
    cancelled: bool = False


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a CPU generator for data order and augmentation."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def model_inputs(images, prep: PreprocessConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """The model-space tensor ``(N, 1, S, S)`` in [-1, 1] of raw slices ``images``: exactly what inference
    (:func:`ae4ad_core.analysis.analyze`, calibration, evaluation) computes for the same slices."""
    x, _ = prepare_slices(list(images), prep, device="cpu")
    return x.to(device)


def training_batch(x: torch.Tensor, aug, generator: torch.Generator | None) -> torch.Tensor:
    """One training batch from model-space inputs ``x`` ``(B, 1, S, S)``: augmented in the [0, 1] view of model
    space (what :func:`ae4ad_core.augment.augment_batch` expects) and mapped back linearly. With augmentation
    disabled the batch is ``x`` itself, so training sees the inference transform unchanged."""
    if aug.enabled:
        x = augment_batch_unit(x, aug, generator)
    return x.contiguous(memory_format=torch.channels_last)


def augment_batch_unit(x: torch.Tensor, aug, generator: torch.Generator | None) -> torch.Tensor:
    """Augment model-space images ``x`` in [-1, 1] through their [0, 1] view."""
    from .augment import augment_batch

    unit = augment_batch((x + 1.0) / 2.0, config=aug, generator=generator)
    return unit * 2.0 - 1.0


def _adam(model: AutoEncoder, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch has it (CPU and CUDA; ~10 ms less per CPU step here)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def _loss(model, x: torch.Tensor, kl_weight: float, rate_weight: float = 0.0,
          target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:  # fmt: skip
    out = model(x)
    mse = F.mse_loss(out.reconstruction.float(), (x if target is None else target).float())
    if out.rate is not None:
        rate = out.rate.float().mean()
        return mse + rate_weight * rate, {"mse": mse.detach(), "rate_bits": rate.detach()}
    if out.logvar is None:
        return mse, {"mse": mse.detach()}
    kl = kl_divergence(out.mu.float(), out.logvar.float()).mean()
    return mse + kl_weight * kl, {"mse": mse.detach(), "kl": kl.detach()}


def _checkpoint_path(folder: Path | None) -> Path | None:
    return None if folder is None else Path(folder) / "checkpoint.pt"


def train(
    config: TrainConfig,
    train_images: np.ndarray,
    val_images: np.ndarray | None = None,
    *,
    preprocessing: PreprocessConfig | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: Path | str | None = None,
    progress: bool = True,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train a model on normal images.

    Parameters
    ----------
    config : TrainConfig
    train_images, val_images : (N, H, W) arrays of raw slices (any intensity range; preprocessing is replayed)
    preprocessing : PreprocessConfig, default percentile scaling to ``config.image_size``
    device : "cuda", "mps", "cpu" or None (best available)
    checkpoint_dir : folder for ``checkpoint.pt``; training resumes from it when present
    progress : show a tqdm bar (rank 0 only)
    on_progress : called after every epoch with a dict (epoch, loss, val_loss, images_per_second, ...)
    should_stop : polled every step; training stops early (result.cancelled = True) when it returns True

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    rank, world = distributed_info()
    prep = preprocessing or PreprocessConfig(size=config.image_size)
    if prep.size != config.image_size:
        raise ValueError(f"Preprocessing size {prep.size} differs from the model size {config.image_size}.")
    if len(train_images) < 2:
        raise ValueError(f"Training needs at least 2 images, got {len(train_images)}.")
    if world > 1 and device is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    dev = select_device(device)
    gen = seed_everything(config.seed)
    # channels-last is faster for these small convolutions on CPU (~20% per step) and on CUDA
    model = build_model(config.model_config()).to(dev).to(memory_format=torch.channels_last)
    x_train = model_inputs(train_images, prep, dev)
    x_val = model_inputs(val_images, prep, dev) if val_images is not None and len(val_images) else None
    aug = config.augment_config()
    if config.kind == "intensity":  # nothing to optimise: the baseline's level is a statistic of normals
        t0 = time.perf_counter()
        model.fit(x_train).eval()
        return TrainResult(model=model.to("cpu").to(memory_format=torch.contiguous_format).eval(),
                           history=[], seconds=time.perf_counter() - t0, device=describe_device(dev))
    opt = _adam(model, config.lr)

    start_epoch, history = 0, []
    ckpt = _checkpoint_path(checkpoint_dir)
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start_epoch = int(state["epoch"])
        history = [dict(zip(state["history_keys"], row, strict=False)) for row in state["history"].tolist()]

    train_module = model
    if world > 1:
        train_module = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if config.compile and dev.type == "cuda":
        train_module = torch.compile(train_module)
    use_amp = config.amp and dev.type == "cuda"

    n = len(x_train)
    per_rank = max(1, n // world)
    steps_per_epoch = max(1, math.ceil(per_rank / config.batch_size))
    bar = tqdm(total=config.epochs, initial=start_epoch, desc=f"train {config.kind} d={config.latent_dim}",
               disable=not progress or rank != 0, unit="epoch")
    images_done, train_seconds, cancelled = 0, 0.0, False
    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)[: per_rank * world]
        shard = perm[rank::world] if world > 1 else perm
        losses = []
        t0 = time.perf_counter()
        for step in range(steps_per_epoch):
            idx = shard[step * config.batch_size: (step + 1) * config.batch_size]
            if len(idx) < 2:
                continue
            xb = training_batch(x_train[idx.to(x_train.device)], aug, gen)
            target = None
            if config.kind == "dae":  # denoise coarse noise back to the clean slice (Kascenas et al. 2022)
                target = xb
                xb = xb + coarse_noise(xb.shape, std=config.noise_std, resolution=config.noise_resolution,
                                       generator=gen, device=xb.device)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, parts = _loss(train_module, xb, config.kl_weight, config.rate_weight, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(parts)
            images_done += len(idx)
            if should_stop is not None and should_stop():
                cancelled = True
                break
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_seconds += time.perf_counter() - t0
        record = {"epoch": epoch + 1, "loss": _mean_of(losses, "mse")}
        for key in ("kl", "rate_bits"):
            if losses and key in losses[0]:
                record[key] = _mean_of(losses, key)
        if x_val is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
            record["val_loss"] = validation_loss(model, x_val)
        record["images_per_second"] = images_done * world / max(train_seconds, 1e-9)
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['images_per_second']:.0f}")
        bar.update(1)
        if on_progress is not None and rank == 0:
            on_progress(dict(record, epochs=config.epochs))
        if ckpt is not None and rank == 0 and ((epoch + 1) % config.checkpoint_every == 0 or cancelled):
            _save_checkpoint(ckpt, model, opt, gen, epoch + 1, history)
        if cancelled:
            break
    bar.close()
    model.eval()
    return TrainResult(
        model=model.to("cpu").to(memory_format=torch.contiguous_format).eval(),
        history=history,
        images_per_second=images_done * world / max(train_seconds, 1e-9),
        seconds=time.perf_counter() - t_start,
        device=describe_device(dev),
        world_size=world,
        cancelled=cancelled,
    )


def round_like_stored(model, weights_dtype: str):
    """Round ``model``'s floating tensors in place to how they will be stored (``"float16"``), so calibration
    and evaluation see exactly the weights that ship; returns the model."""
    if weights_dtype == "float16":
        with torch.no_grad():
            for t in list(model.parameters()) + list(model.buffers()):
                if t.is_floating_point():
                    t.copy_(t.half().float())
    return model


def _mean_of(parts: list[dict], key: str) -> float:
    return float(torch.stack([p[key] for p in parts]).mean()) if parts else float("nan")


@torch.no_grad()
def validation_loss(model: AutoEncoder, x: torch.Tensor, batch_size: int = 256) -> float:
    """Mean squared reconstruction error of preprocessed images ``x`` (eval mode, ``z = mu``)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size]
        total += float(F.mse_loss(model(xb).reconstruction.float(), xb.float(), reduction="sum"))
        count += xb.numel()
    model.train(was_training)
    return total / max(count, 1)


def _save_checkpoint(path: Path, model, opt, gen, epoch: int, history: list[dict]) -> None:
    keys = sorted({k for h in history for k in h})
    rows = torch.tensor([[float(h.get(k, float("nan"))) for k in keys] for h in history], dtype=torch.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "epoch": epoch, "history": rows, "history_keys": keys}, tmp)
    os.replace(tmp, path)


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def train_and_register(
    config: TrainConfig,
    dataset,
    *,
    name: str | None = None,
    root: Path | str | None = None,
    preprocessing: PreprocessConfig | None = None,
    device: str | torch.device | None = None,
    checkpoint_dir: Path | str | None = None,
    evaluate_test: bool = True,
    progress: bool = True,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    command: str | None = None,
    description: str | None = None,
    scoring: dict | None = None,
    training_data_extra: dict | None = None,
) -> Path | None:
    """Train on ``dataset.train``, calibrate on the normal images of ``dataset.val``, evaluate on
    ``dataset.test`` (if any and ``evaluate_test``), and save weights + card to the registry ``root``.

    ``scoring`` is the card's map scoring (``{"rule": MapScoring.to_dict(), "chosen_by": "..."}``; default the
    paper's protocol), used for calibration and evaluation; ``training_data_extra`` adds fields (sequence,
    licence, patients...) to the card's ``training_data``.

    Returns the model folder (``None`` on non-zero ranks or when cancelled).
    """
    from .calibration import calibrate
    from .registry import ModelCard, save_model

    prep = preprocessing or PreprocessConfig(size=config.image_size)
    val_normal = dataset.val.images[np.asarray(dataset.val.labels) == 0]
    result = train(config, dataset.train.images, val_normal, preprocessing=prep, device=device,
                   checkpoint_dir=checkpoint_dir, progress=progress, on_progress=on_progress,
                   should_stop=should_stop)
    rank, _ = distributed_info()
    if rank != 0 or result.cancelled:
        return None
    model = round_like_stored(result.model, config.weights_dtype)
    cal_device = select_device(device) if device is not None or torch.cuda.is_available() else torch.device("cpu")
    from .models import fuse_for_inference

    inference = fuse_for_inference(model).to(cal_device)
    from .postprocess import MapScoring

    rule = MapScoring.from_dict((scoring or {}).get("rule"))
    x_val = model_inputs(val_normal, prep, cal_device)
    cal = calibrate(inference, x_val, fpr=config.fpr, scoring=rule)
    cal_fields, latent_fields = cal.to_card_fields()
    name = name or f"{config.kind}-d{config.latent_dim}-s{config.image_size}"
    last = result.history[-1] if result.history else {}
    card = ModelCard(
        name=name,
        architecture=config.model_config(),
        preprocessing=prep,
        description=description or (
            f"{'VAE' if config.kind == 'vae' else 'AE'}, d={config.latent_dim}, {config.image_size}px, "
            f"trained on {getattr(dataset, 'description', 'user data')}"
        ),
        training_data={
            "description": getattr(dataset, "description", ""),
            "n_train": int(len(dataset.train.images)),
            "n_val_normal": int(len(val_normal)),
            "train_subjects": sorted({str(s) for s in np.asarray(dataset.train.subjects)}),
            "val_subjects": sorted({str(s) for s in np.asarray(dataset.val.subjects)}),
            **(training_data_extra or {}),
        },
        training={
            "config": config.to_dict(),
            "final_loss": last.get("loss"),
            "final_val_loss": next((h["val_loss"] for h in reversed(result.history) if "val_loss" in h), None),
            "history": result.history,
            "images_per_second": result.images_per_second,
            "seconds": result.seconds,
            "device": result.device,
            "world_size": result.world_size,
        },
        calibration=cal_fields,
        latent=latent_fields,
        provenance={
            "command": command,
            "code_version": _git_commit(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "library": "ae4ad_core",
        },
        weights_dtype=config.weights_dtype,
        scoring=dict(scoring or {}),
    )
    if evaluate_test and getattr(dataset, "test", None) is not None and len(dataset.test.images):
        from .evaluation import evaluate_all_modes
        from .registry import LoadedModel

        loaded = LoadedModel(card=card, model=model, inference=inference, device=cal_device)
        results = evaluate_all_modes(loaded, dataset.test)
        card = card.replace(metrics={m: r.to_dict() for m, r in results.items()})
    return save_model(model, card, root)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``ae4ad train`` and ``python -m ae4ad_core.training``."""
    p = argparse.ArgumentParser(prog="ae4ad train", description="Train, calibrate and register an AE or VAE.")
    p.add_argument("--data", default="demo", help="'demo' or a dataset folder (own normals, MedIAnomaly or BraTS layout)")
    p.add_argument("--kind", choices=["ae", "vae", "rdae", "dae", "intensity"], default="ae")
    p.add_argument("--d", "--latent-dim", dest="latent_dim", type=int, default=16)
    p.add_argument("--size", dest="image_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=0.005)
    p.add_argument("--rate-weight", type=float, default=1e-4, help="rate penalty per bit (rdae)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", dest="augment", action="store_false")
    p.add_argument("--val-every", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile on CUDA")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--fpr", type=float, default=0.05)
    p.add_argument("--float16", action="store_true", help="store weights in float16")
    p.add_argument("--name", default=None, help="registry name (default kind-dD-sSIZE)")
    p.add_argument("--out", default=None, help="registry folder (default: the user's models folder)")
    p.add_argument("--device", default=None)
    p.add_argument("--checkpoint-dir", default=None, help="checkpoint folder; training resumes from it")
    p.add_argument("--no-evaluate", dest="evaluate", action="store_false")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; under ``torchrun`` it initialises the process group and uses DDP."""
    import shlex
    import sys

    from .data import load_dataset

    args = build_parser().parse_args(argv)
    distributed, device = init_distributed(args.device)
    try:
        config = TrainConfig(
            kind=args.kind, latent_dim=args.latent_dim, image_size=args.image_size, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, kl_weight=args.kl_weight, rate_weight=args.rate_weight,
            seed=args.seed, augment=args.augment,
            val_every=args.val_every, amp=args.amp, compile=args.compile, fpr=args.fpr,
            weights_dtype="float16" if args.float16 else "float32",
        )
        dataset = load_dataset(args.data, size=max(128, args.image_size))
        command = "ae4ad train " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        path = train_and_register(
            config, dataset, name=args.name, root=args.out, device=device,
            checkpoint_dir=args.checkpoint_dir, evaluate_test=args.evaluate, command=command,
            progress=not args.quiet,
        )
        if path is not None:
            print(f"saved {path}")
    finally:
        if distributed:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
