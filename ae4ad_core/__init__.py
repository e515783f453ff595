"""AE4AD Studio core library: autoencoder-based anomaly detection for medical images.

The public API, module by module (import from the modules; the most used names are re-exported here):

* :mod:`ae4ad_core.io` -- ``read_image``, ``read_images``, ``read_dicom_series`` (DICOM, NIfTI, PNG/JPEG/TIFF)
* :mod:`ae4ad_core.preprocess` -- ``PreprocessConfig``, ``prepare_slices``, ``restore_map``
* :mod:`ae4ad_core.models` -- ``ModelConfig``, ``build_model`` (reference AE, VAE, rate-distortion AE)
* :mod:`ae4ad_core.scoring` -- ``score_batch`` (reconstruction, kl, combined)
* :mod:`ae4ad_core.entropy` -- latent entropy estimators and ``LatentStatistics``
* :mod:`ae4ad_core.calibration` -- thresholds and reference statistics from normal data
* :mod:`ae4ad_core.registry` -- ``load_model``, ``save_model``, ``list_models`` (safetensors + JSON card)
* :mod:`ae4ad_core.cards` -- ``list_card_summaries``: the registry listed from card JSON alone (no torch)
* :mod:`ae4ad_core.analysis` -- ``analyze``: one call from slices to an ``Analysis``
* :mod:`ae4ad_core.dicom_results` -- ``write_dicom_results``: an analysis as a DICOM Parametric Map and
  Segmentation in the source's study (on request only: they carry the patient's identifiers)
* :mod:`ae4ad_core.training`, :mod:`ae4ad_core.evaluation`, :mod:`ae4ad_core.sweep`, :mod:`ae4ad_core.data`
* :mod:`ae4ad_core.cli` -- the ``ae4ad`` command
"""

import importlib

# The re-exported names and the module each lives in. They are imported on first use (PEP 562), so that
# ``import ae4ad_core.cli`` (``ae4ad models``, ``ae4ad info``) does not pay for torch, SciPy and pandas.
_EXPORTS = {
    "Analysis": "analysis",
    "analyze": "analysis",
    "describe_device": "device",
    "select_device": "device",
    "Ae4adError": "errors",
    "ImageTooLargeError": "errors",
    "ModelCardError": "errors",
    "UnknownModelError": "errors",
    "UnreadableImageError": "errors",
    "UnsupportedImageError": "errors",
    "UnsupportedModeError": "errors",
    "ModelConfig": "models",
    "build_model": "models",
    "PreprocessConfig": "preprocess",
    "LoadedModel": "registry",
    "ModelCard": "registry",
    "list_models": "registry",
    "load_model": "registry",
    "save_model": "registry",
    "SCORING_MODES": "scoring",
    "score_batch": "scoring",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "analyze",
    "describe_device",
    "select_device",
    "Ae4adError",
    "ImageTooLargeError",
    "ModelCardError",
    "UnknownModelError",
    "UnreadableImageError",
    "UnsupportedImageError",
    "UnsupportedModeError",
    "ModelConfig",
    "build_model",
    "PreprocessConfig",
    "LoadedModel",
    "ModelCard",
    "list_models",
    "load_model",
    "save_model",
    "SCORING_MODES",
    "score_batch",
    "__version__",
]
