"""AE4AD Studio core library: autoencoder-based anomaly detection for medical images.

The public API, module by module (import from the modules; the most used names are re-exported here):

* :mod:`ae4ad_core.io` -- ``read_image``, ``read_images``, ``read_dicom_series`` (DICOM, NIfTI, PNG/JPEG/TIFF)
* :mod:`ae4ad_core.preprocess` -- ``PreprocessConfig``, ``prepare_slices``, ``restore_map``
* :mod:`ae4ad_core.models` -- ``ModelConfig``, ``build_model`` (reference AE, VAE, rate-distortion AE)
* :mod:`ae4ad_core.scoring` -- ``score_batch``, ``score_in_batches`` (reconstruction, kl, combined, mse)
* :mod:`ae4ad_core.entropy` -- latent entropy estimators and ``LatentStatistics``
* :mod:`ae4ad_core.calibration` -- thresholds and reference statistics from normal data
* :mod:`ae4ad_core.registry` -- ``load_model``, ``save_model``, ``list_models`` (safetensors + JSON card)
* :mod:`ae4ad_core.cards` -- ``list_card_summaries``: the registry listed from card JSON alone (no torch)
* :mod:`ae4ad_core.analysis` -- ``analyze``: one call from slices to an ``Analysis``
* :mod:`ae4ad_core.dicom_results` -- ``write_dicom_results``: an analysis as a DICOM Parametric Map and
  Segmentation in the source's study (on request only: they carry the patient's identifiers)
* :mod:`ae4ad_core.postprocess` -- ``MapScoring``: residual sign, smoothing, brain restriction, intensity prior
  and slice aggregation, carried in a card and replayed at inference
* :mod:`ae4ad_core.baseline`, :mod:`ae4ad_core.denoising` -- the plain-intensity baseline and the denoising U-Net
* :mod:`ae4ad_core.brats` -- BraTS 2013/2021/2023 patients, standardisation, the MedIAnomaly layout, the shipped
  real-patient slices; :mod:`ae4ad_core.crossval` -- leave-one-patient-out evaluation and the real-patient zoo
* :mod:`ae4ad_core.nifti_maps` -- anomaly maps as NIfTI in the input's voxel grid
* :mod:`ae4ad_core.sequence`, :mod:`ae4ad_core.model_choice`, :mod:`ae4ad_core.brain_extraction`,
  :mod:`ae4ad_core.standardise` -- which model fits a scan, and a whole head brought into the models' form
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
    "score_in_batches": "scoring",
    "MapScoring": "postprocess",
    "detect_sequence": "sequence",
    "choose_model": "model_choice",
    "prepare_whole_head": "standardise",
    "extract_brain": "brain_extraction",
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
    "score_in_batches",
    "MapScoring",
    "detect_sequence",
    "choose_model",
    "prepare_whole_head",
    "extract_brain",
    "__version__",
]
