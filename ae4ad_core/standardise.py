"""The standardisation the real-patient models' training data went through, replayed on a new scan.

The ``flair-*`` and ``t1c-*`` models were trained on BraTS slices that were skull-stripped and z-scored inside
the brain, per volume, with the background at :data:`ae4ad_core.brats.BACKGROUND_Z`
(:func:`ae4ad_core.brats.standardise_in_brain`). A clinical upload is a whole head in scanner units, so before
a model sees it:

1. the brain is found (:func:`ae4ad_core.brain_extraction.extract_brain_from_image`), unless the caller gives
   a mask or the image is already skull-stripped: z-scored around a constant background
   (:func:`ae4ad_core.sequence.sequence_from_pixels`), or a constant background around a region the extraction
   finds to be nearly all brain (:data:`SKULL_STRIPPED_COVER`);
2. :func:`standardise_like_training` z-scores the whole stack inside that mask with the very function the
   training data went through and sets everything outside to the background value.

:func:`prepare_whole_head` does both and returns a JSON-ready record of what was done (extraction method and
brain fraction, standardisation statistics, sequence detected and whether it matches the model) for the
analysis JSON/CSV/PDF.
"""

from __future__ import annotations

import numpy as np

from .brain_extraction import BrainMask, extract_brain_from_image
from .brats import BACKGROUND_Z, MIN_BRAIN_FRACTION, Z_WINDOW, standardise_in_brain
from .errors import DataError
from .model_choice import is_patient_model, model_sequence
from .sequence import SequenceGuess, detect_sequence, sequence_from_pixels

__all__ = ["SKULL_STRIPPED_COVER", "standardise_like_training", "prepare_whole_head"]

SKULL_STRIPPED_COVER = 0.85
"""An image with a constant background counts as skull-stripped when the extracted brain covers at least this
share of everything else (a whole head with zero-filled air: about 0.4-0.7; a skull-stripped brain: 1)."""

STANDARDISATION = (
    "z-score inside the brain mask over the whole stack (mean 0, SD 1 over brain voxels), background set to "
    f"z = {BACKGROUND_Z:g}: ae4ad_core.brats.standardise_in_brain, as the BraTS 2013 training data"
)


def standardise_like_training(volume: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, dict]:
    """Z-score ``volume`` inside ``brain`` as the real models' training data were.

    Parameters
    ----------
    volume : (N, H, W) or (H, W) array
        Intensities in any unit; the statistics are taken over the whole stack (one volume).
    brain : bool array of the same shape

    Returns
    -------
    z : float32 array of the shape of ``volume``
        Standardised intensities; :data:`~ae4ad_core.brats.BACKGROUND_Z` outside the brain.
    record : dict
        ``method``, ``brain_mean`` and ``brain_sd`` (in the input's unit), ``background_z``, ``window`` and
        the share of brain voxels above the models' window (:data:`~ae4ad_core.brats.Z_WINDOW`).

    Raises
    ------
    DataError
        If the shapes differ or the mask is empty.
    """
    v = np.asarray(volume, dtype=np.float32)
    b = np.asarray(brain, dtype=bool)
    if v.shape != b.shape:
        raise DataError(f"Image and brain mask differ in shape ({v.shape} vs {b.shape}).")
    z = standardise_in_brain(v, b)
    values = v[b].astype(np.float64)
    record = {
        "method": STANDARDISATION,
        "brain_mean": round(float(values.mean()), 4),
        "brain_sd": round(float(values.std()), 4),
        "background_z": BACKGROUND_Z,
        "window": list(Z_WINDOW),
        "brain_above_window": round(float(np.mean(z[b] > Z_WINDOW[1])), 5),
    }
    return z, record


def _background_mask(pixels: np.ndarray) -> np.ndarray:
    """Brain of an already skull-stripped image: everything but the most common (background) value."""
    finite = pixels[np.isfinite(pixels)]
    values, counts = np.unique(finite[:: max(1, finite.size // 200_000)], return_counts=True)
    return np.isfinite(pixels) & (pixels != values[int(np.argmax(counts))])


def prepare_whole_head(
    image,
    card,
    *,
    guess: SequenceGuess | None = None,
    brain_mask: np.ndarray | None = None,
    extraction_method: str = "auto",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Brain extraction and standardisation of an upload for ``card``'s model, with a record of both.

    Parameters
    ----------
    image : Image
        As :func:`ae4ad_core.io.read_image` returns it: ``(N, H, W)`` slices, spacing and metadata.
    card : CardSummary or ModelCard
        The model the slices are for. Patient models (BraTS source) get :func:`standardise_like_training`;
        other models (the teaching models) get the pixels unchanged, their own preprocessing applies.
    guess : SequenceGuess, optional
        The detection already made (:func:`ae4ad_core.sequence.detect_sequence` otherwise).
    brain_mask : (N, H, W) bool array, optional
        A brain mask to use instead of extracting one.
    extraction_method : {"auto", "net", "classical", "deepbet"}
        See :func:`ae4ad_core.brain_extraction.extract_brain_from_image` (``"auto"``: deepbet when
        installed, else the classical method; ``"net"``: the shipped U-Net, on request only).

    Returns
    -------
    slices : (N, H, W) float32
        Standardised slices (z inside the brain, :data:`~ae4ad_core.brats.BACKGROUND_Z` outside) for patient
        models; the input pixels for the others.
    brain_mask : (N, H, W) bool
    record : dict
        JSON-ready: ``model``, ``model_sequence``, ``sequence`` (the detection's record),
        ``sequence_matches``, ``brain_extraction`` (method, brain fraction, parameters, seconds, notes),
        ``standardisation``, ``brain_fraction``, ``brain_slices`` (indices of slices whose brain covers at
        least :data:`~ae4ad_core.brats.MIN_BRAIN_FRACTION`, the rule the training slices were chosen by) and
        ``notes``.

    Raises
    ------
    DataError
        If no brain is found or the given mask does not match the image.
    """
    pixels = np.asarray(image.pixels, dtype=np.float32)
    guess = guess if guess is not None else detect_sequence(image)
    notes: list[str] = []
    already_standardised = False
    if brain_mask is not None:
        mask = np.asarray(brain_mask, dtype=bool)
        if mask.ndim == 2:
            mask = mask[None]
        if mask.shape != pixels.shape:
            raise DataError(
                f"{image.name}: the brain mask {mask.shape} does not match the image {pixels.shape}."
            )
        extraction = BrainMask(mask=mask, method="given by the caller")
    else:
        _, _, facts = sequence_from_pixels(pixels)
        already_standardised = facts["standardised"]
        stripped = _background_mask(pixels) if facts["constant_background"] else None
        extraction = (
            None if facts["standardised"] else extract_brain_from_image(image, method=extraction_method)
        )
        if (
            stripped is not None
            and stripped.any()
            and (
                extraction is None or extraction.mask[stripped].sum() >= SKULL_STRIPPED_COVER * stripped.sum()
            )
        ):
            # Nothing but brain around a constant background: the image was skull-stripped already.
            extraction = BrainMask(
                mask=stripped,
                method="already skull-stripped: the brain is everything but the constant background",
            )
        elif extraction is None:
            extraction = extract_brain_from_image(image, method=extraction_method)
    mask = extraction.mask
    if not mask.any():
        raise DataError(f"{image.name}: no brain found; give a brain mask or a skull-stripped image.")
    per_slice = mask.reshape(len(mask), -1).mean(axis=1)
    brain_slices = [int(i) for i in np.flatnonzero(per_slice >= MIN_BRAIN_FRACTION)]
    keep = already_standardised and len(pixels) == 1
    if len(pixels) == 1 and not keep:
        notes.append(
            "a single slice: the brain statistics come from this slice alone (the training volumes "
            "were standardised as whole volumes)"
        )
    if is_patient_model(card) and keep:
        # One slice already z-scored (e.g. a demo case cut from a standardised volume): z-scoring it again on
        # its own would move it away from the per-volume standardisation the model was trained with.
        slices = np.where(mask, pixels, np.float32(BACKGROUND_Z)).astype(np.float32)
        standardisation = {
            "method": "already standardised (z inside the brain): the single slice is kept as it "
            "is, background set to the models' background value",
            "background_z": BACKGROUND_Z,
            "window": list(Z_WINDOW),
        }
    elif is_patient_model(card):
        slices, standardisation = standardise_like_training(pixels, mask)
    else:
        slices = pixels
        standardisation = {"method": "none: a teaching model; its card's preprocessing applies to the pixels"}
    seq = model_sequence(card)
    record = {
        "model": card.name,
        "model_sequence": seq,
        "sequence": guess.to_record(),
        "sequence_matches": bool(seq is not None and seq == guess.sequence),
        "brain_extraction": extraction.to_record(),
        "standardisation": standardisation,
        "brain_fraction": round(float(mask.mean()), 4),
        "brain_slices": brain_slices,
        "slices": int(len(pixels)),
        "notes": notes,
    }
    return slices, mask, record
