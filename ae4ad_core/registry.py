"""Model registry: weights in safetensors plus a JSON model card; loading never unpickles.

A model lives in a folder ``<root>/<name>/`` holding ``model.safetensors`` and ``card.json``. Roots searched, in
order: the shipped zoo ``assets/models`` and the user's folder (``$AE4AD_HOME/models``, default
``~/.ae4ad/models``), where models trained in the app or with ``ae4ad train`` are written.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelCardError, UnknownModelError

if TYPE_CHECKING:  # torch and the model classes are imported where used: reading cards needs no torch
    import torch

    from .model_config import ModelConfig
    from .models import AutoEncoder
    from .preprocess import PreprocessConfig

__all__ = [
    "CARD_VERSION",
    "ModelCard",
    "LoadedModel",
    "shipped_models_dir",
    "user_models_dir",
    "registry_roots",
    "save_model",
    "load_card",
    "load_model",
    "load_shared_model",
    "list_models",
    "find_model_dir",
]

CARD_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


def shipped_models_dir() -> Path:
    """``models/`` of the shipped assets (:func:`ae4ad_core.assets.assets_dir`)."""
    from .assets import assets_dir

    return assets_dir() / "models"


def user_models_dir() -> Path:
    """Where user-trained models go: ``$AE4AD_HOME/models`` (default ``~/.ae4ad/models``)."""
    home = os.environ.get("AE4AD_HOME")
    return (Path(home) if home else Path.home() / ".ae4ad") / "models"


def registry_roots() -> list[Path]:
    """Folders searched for models: the shipped zoo, then the user's models."""
    return [shipped_models_dir(), user_models_dir()]


@dataclass(frozen=True)
class ModelCard:
    """Everything known about a model besides its weights (``card.json``).

    Attributes
    ----------
    name : registry name (folder name)
    architecture : ModelConfig
    preprocessing : PreprocessConfig
    description : one line for pickers
    training_data : description of the data (sources, split, counts)
    training : training configuration and figures (epochs, loss, throughput, device, duration)
    calibration : normal reference statistics per mode, thresholds, normal score samples
    latent : latent statistics (see :class:`ae4ad_core.entropy.LatentStatistics`)
    metrics : evaluation results per mode
    provenance : command, code version, date
    scoring : map post-processing and image-score aggregation (:class:`ae4ad_core.postprocess.MapScoring`;
        empty = the AE4AD paper's squared error and mean) and how it was chosen
    weights_dtype : dtype the weights are stored in ("float32" or "float16")
    version : card format version
    """

    name: str
    architecture: ModelConfig
    preprocessing: PreprocessConfig
    description: str = ""
    training_data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    latent: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    scoring: dict = field(default_factory=dict)
    weights_dtype: str = "float32"
    version: int = CARD_VERSION

    @property
    def map_scoring(self):
        """The card's :class:`ae4ad_core.postprocess.MapScoring` (the paper's protocol when none is stored)."""
        from .postprocess import MapScoring

        return MapScoring.from_dict(self.scoring.get("rule"))

    @property
    def kind(self) -> str:
        return self.architecture.kind

    @property
    def latent_dim(self) -> int:
        return self.architecture.latent_dim

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "architecture": self.architecture.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "weights_dtype": self.weights_dtype,
            "training_data": self.training_data,
            "training": self.training,
            "calibration": self.calibration,
            "latent": self.latent,
            "metrics": self.metrics,
            "provenance": self.provenance,
            "scoring": self.scoring,
        }

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "card") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelCardError(f"{source}: a model card must be a JSON object.")
        version = data.get("version")
        if version != CARD_VERSION:
            raise ModelCardError(
                f"{source}: card version {version!r} is not supported (this library reads version {CARD_VERSION})."
            )
        for key in ("name", "architecture", "preprocessing"):
            if key not in data:
                raise ModelCardError(f"{source}: the model card has no {key!r} field.")
        from .model_config import ModelConfig
        from .preprocess import PreprocessConfig

        try:
            arch = ModelConfig.from_dict(data["architecture"])
            prep = PreprocessConfig.from_dict(data["preprocessing"])
            from .postprocess import MapScoring

            MapScoring.from_dict(dict(data.get("scoring", {})).get("rule"))
        except (TypeError, ValueError) as exc:
            raise ModelCardError(f"{source}: {exc}") from None
        dtype = data.get("weights_dtype", "float32")
        if dtype not in ("float32", "float16"):
            raise ModelCardError(f"{source}: weights_dtype must be float32 or float16, got {dtype!r}.")
        return cls(
            name=str(data["name"]),
            architecture=arch,
            preprocessing=prep,
            description=str(data.get("description", "")),
            training_data=dict(data.get("training_data", {})),
            training=dict(data.get("training", {})),
            calibration=dict(data.get("calibration", {})),
            latent=dict(data.get("latent", {})),
            metrics=dict(data.get("metrics", {})),
            provenance=dict(data.get("provenance", {})),
            scoring=dict(data.get("scoring", {})),
            weights_dtype=dtype,
        )

    def replace(self, **changes) -> ModelCard:
        from dataclasses import replace

        return replace(self, **changes)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: its card, the trainable module (eval mode) and a BN-fused inference copy
    on ``device``. Both modules are shared read-only (e.g. across app sessions): never train or mutate them.

    ``model`` is ``None`` in the process-wide cache of :func:`load_shared_model`, which scores with
    ``inference`` only and so keeps half the weights in memory; :func:`load_model` gives the trainable module
    (to save, fine-tune or compare with)."""

    card: ModelCard
    model: AutoEncoder | None
    inference: AutoEncoder
    device: torch.device
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.card.name

    @functools.cached_property
    def calibration(self):
        """The card's :class:`ae4ad_core.calibration.Calibration`, parsed once (read-only afterwards)."""
        from .calibration import Calibration

        return Calibration.from_card(self.card)


def _atomic_write_dir(target: Path, write) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model(model: AutoEncoder, card: ModelCard, root: Path | str | None = None) -> Path:
    """Write ``model`` and ``card`` to ``<root>/<card.name>/`` atomically (temporary folder, then rename), so an
    interrupted save never leaves a half-written model. Returns the model folder."""
    import torch
    from safetensors.torch import save_file

    if card.architecture != model.config:
        raise ModelCardError(f"Card architecture {card.architecture} does not match the model {model.config}.")
    root = Path(root) if root is not None else user_models_dir()
    dtype = torch.float16 if card.weights_dtype == "float16" else torch.float32
    state = {
        k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
        for k, v in model.state_dict().items()
    }

    def write(folder: Path) -> None:
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "ae4ad_card_version": "1"})
        (folder / CARD_FILE).write_text(json.dumps(card.to_dict(), indent=1, allow_nan=False))

    target = root / card.name
    _atomic_write_dir(target, write)
    return target


def load_card(folder: Path | str) -> ModelCard:
    """Read and validate ``card.json`` of a model folder."""
    folder = Path(folder)
    path = folder / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"{folder.name}: no {CARD_FILE} in {folder}.")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelCardError(f"{folder.name}/{CARD_FILE}: not valid JSON ({exc}).") from None
    return ModelCard.from_dict(data, source=f"{folder.name}/{CARD_FILE}")


def find_model_dir(name_or_path: str | Path, roots: list[Path] | None = None) -> Path:
    """Resolve a registry name or a model folder path; unknown names list the available ones."""
    p = Path(name_or_path)
    if p.is_dir() and (p / CARD_FILE).is_file():
        return p
    if p.is_dir() and (p / WEIGHTS_FILE).is_file():
        raise ModelCardError(f"{p.name}: the folder has weights but no {CARD_FILE}; a model needs both.")
    roots = registry_roots() if roots is None else roots
    for root in roots:
        candidate = Path(root) / str(name_or_path)
        if (candidate / CARD_FILE).is_file():
            return candidate
    names = sorted({c.name for c in list_models(roots)})
    import difflib

    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {str(name_or_path)!r}; available: {', '.join(names) or 'none'}.{hint}"
    )


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelCardError(f"{path.parent.name}: no {WEIGHTS_FILE} (only safetensors weights are loaded).")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelCardError(
            f"{path.parent.name}/{path.name}: not a valid safetensors file ({msg}); pickled weights are never loaded."
        ) from None


def load_model(
    name_or_path: str | Path,
    *,
    device: str | torch.device | None = None,
    roots: list[Path] | None = None,
    keep_trainable: bool = True,
) -> LoadedModel:
    """Load a model by registry name or folder path, validate it against its card, and prepare it on ``device``.

    With ``keep_trainable=False`` only the inference copy is kept (``model`` is ``None``).

    Raises
    ------
    UnknownModelError
        The name is not in any registry root.
    ModelCardError
        The card is invalid, or the weights are not safetensors, miss or add tensors, have wrong shapes, or hold
        NaN/inf values.
    """
    import torch

    from .device import select_device
    from .models import build_model, fuse_for_inference

    folder = find_model_dir(name_or_path, roots)
    card = load_card(folder)
    state = _read_weights(folder / WEIGHTS_FILE)
    with torch.device("meta"):  # the shapes only: the weights replace the parameters below
        model = build_model(card.architecture)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ModelCardError(
            f"{folder.name}: weights do not match the card's architecture "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {extra[:3]})."
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelCardError(
                f"{folder.name}: tensor {key!r} has shape {tuple(tensor.shape)}, the card's architecture needs "
                f"{tuple(expected[key].shape)}."
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelCardError(f"{folder.name}: tensor {key!r} contains NaN or infinite values.")
    # Own copies: safetensors serves the tensors from a mapping of the file, which a model kept in memory must not
    # share (a retrained model written over the same file would change or truncate it under the loaded one).
    model.load_state_dict({k: v.to(expected[k].dtype, copy=True) for k, v in state.items()}, assign=True)
    del state
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:  # a tensor the weights file does not hold (a buffer outside the state dict): no value for it
        raise ModelCardError(f"{folder.name}: the architecture has tensors the weights cannot fill ({left[:3]}).")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dev = select_device(device)
    inference = fuse_for_inference(model, in_place=not keep_trainable).to(dev)
    return LoadedModel(card=card, model=model if keep_trainable else None, inference=inference, device=dev,
                       path=folder)


_SHARED: collections.OrderedDict = collections.OrderedDict()
_SHARED_LOCK = threading.Lock()
SHARED_MODELS_MAX = 32


def load_shared_model(name_or_path: str | Path, *, device: str | torch.device | None = None) -> LoadedModel:
    """:func:`load_model` through one process-wide cache shared by every caller (all app pages and sessions),
    holding the inference copy only (``model`` is ``None``: 9 MB less per 64 px model).

    Keyed by the model folder, the modification times of its card and weights, and the device, so a retrained
    or replaced model is reloaded and an unchanged one is loaded once. The result is shared: use it read-only.
    At most ``SHARED_MODELS_MAX`` models are kept (least recently used dropped first).
    """
    from .device import select_device

    folder = find_model_dir(name_or_path).resolve()
    dev = select_device(device)
    stamps = tuple((folder / f).stat().st_mtime_ns if (folder / f).exists() else 0 for f in (CARD_FILE, WEIGHTS_FILE))
    key = (str(folder), stamps, str(dev))
    with _SHARED_LOCK:
        if key in _SHARED:
            _SHARED.move_to_end(key)
            return _SHARED[key]
    loaded = load_model(folder, device=dev, keep_trainable=False)
    with _SHARED_LOCK:
        loaded = _SHARED.setdefault(key, loaded)
        _SHARED.move_to_end(key)
        while len(_SHARED) > SHARED_MODELS_MAX:
            _SHARED.popitem(last=False)
    return loaded


def list_models(roots: list[Path] | None = None) -> list[ModelCard]:
    """Cards of every valid model under the roots (invalid folders are skipped), sorted by name."""
    from .cards import read_registry

    return read_registry(load_card, roots)
