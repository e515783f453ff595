"""The training standardisation replayed on uploads: z in the brain, background at BACKGROUND_Z, a record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ae4ad_core.brats import BACKGROUND_Z, standardise_in_brain
from ae4ad_core.errors import DataError
from ae4ad_core.io import Image, read_image
from ae4ad_core.standardise import prepare_whole_head, standardise_like_training
from tests.test_brain_extraction import phantom_head

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLAIR_CARD = SimpleNamespace(
    name="flair-dae", training_data={"sequence": "flair", "source": "BraTS 2013 ..."}, training={}, metrics={}
)
TEACHING_CARD = SimpleNamespace(name="ae-d16", training_data={"sequence": "t1"}, training={}, metrics={})


def _image(pixels, name="case_flair.nii.gz", thickness=5.0):
    meta = {"format": "nifti", "voxel_size": [1.5, 1.5, thickness], "slice_axis": "axial"}
    return Image(
        pixels=np.ascontiguousarray(pixels, np.float32),
        name=name,
        format="nifti",
        metadata=meta,
        spacing=(1.5, 1.5),
    )


def test_standardise_like_training_is_the_brats_function():
    rng = np.random.default_rng(0)
    volume = rng.normal(300, 40, (3, 16, 16)).astype(np.float32)
    brain = np.zeros_like(volume, bool)
    brain[:, 4:12, 4:12] = True
    z, record = standardise_like_training(volume, brain)
    np.testing.assert_array_equal(z, standardise_in_brain(volume, brain))
    assert z[brain].mean() == pytest.approx(0, abs=1e-5) and z[brain].std() == pytest.approx(1, abs=1e-4)
    assert np.all(z[~brain] == BACKGROUND_Z)
    assert record["brain_mean"] == pytest.approx(float(volume[brain].mean()), rel=1e-4)
    with pytest.raises(DataError, match="shape"):
        standardise_like_training(volume, brain[:2])
    with pytest.raises(DataError, match="empty"):
        standardise_like_training(volume, np.zeros_like(brain))


def test_prepare_whole_head_on_a_phantom():
    pixels, truth = phantom_head(6, seed=3)
    slices, mask, record = prepare_whole_head(_image(pixels), FLAIR_CARD, extraction_method="classical")
    assert slices.shape == pixels.shape and mask.shape == pixels.shape
    assert np.all(slices[~mask] == BACKGROUND_Z)
    assert abs(float(slices[mask].mean())) < 1e-4
    assert json.loads(json.dumps(record)) == record
    assert record["model"] == "flair-dae" and record["sequence"]["sequence"] == "flair"
    assert record["sequence_matches"] and record["brain_extraction"]["method"].startswith("classical")
    assert record["brain_slices"] == list(range(6)) and 0 < record["brain_fraction"] < 0.5
    assert record["standardisation"]["background_z"] == BACKGROUND_Z


def test_mismatched_sequence_and_teaching_model_are_recorded():
    pixels, _ = phantom_head(2, seed=4)
    _, _, record = prepare_whole_head(
        _image(pixels, name="case_t2.nii.gz"), FLAIR_CARD, extraction_method="classical"
    )
    assert not record["sequence_matches"] and record["sequence"]["sequence"] == "t2"
    slices, _, record = prepare_whole_head(_image(pixels), TEACHING_CARD, extraction_method="classical")
    np.testing.assert_array_equal(slices, pixels)
    assert record["standardisation"]["method"].startswith("none")


def test_given_mask_and_single_slice():
    pixels, truth = phantom_head(1, seed=5)
    slices, mask, record = prepare_whole_head(_image(pixels), FLAIR_CARD, brain_mask=truth[0])
    np.testing.assert_array_equal(mask, truth)
    assert record["brain_extraction"]["method"] == "given by the caller"
    assert record["notes"] and "single slice" in record["notes"][0]
    with pytest.raises(DataError, match="does not match"):
        prepare_whole_head(_image(pixels), FLAIR_CARD, brain_mask=truth[0, :10])


def test_skull_stripped_input_keeps_its_brain():
    rng = np.random.default_rng(6)
    z = np.full((3, 32, 32), -3.5, np.float32)
    z[:, 8:24, 8:24] = rng.standard_normal((3, 16, 16))
    slices, mask, record = prepare_whole_head(_image(z), FLAIR_CARD)
    assert record["brain_extraction"]["method"].startswith("already skull-stripped")
    assert mask.sum() == 3 * 16 * 16
    np.testing.assert_allclose(slices[mask], standardise_in_brain(z, mask)[mask])


BRATS_FLAIR = SHARED / "brats2013" / "brats_2013_pat0003_1" / "Flair_subtrMeanDivStd.nii.gz"
BRATS_MASK = SHARED / "brats2013" / "brats_2013_pat0003_1" / "brainmask.nii.gz"


def test_a_brats_volume_comes_out_as_the_training_data():
    if not BRATS_FLAIR.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"missing {BRATS_FLAIR}")
        pytest.skip("shared BraTS data missing")
    image = read_image(BRATS_FLAIR)
    truth = read_image(BRATS_MASK).pixels > 0.5
    slices, mask, record = prepare_whole_head(image, FLAIR_CARD)
    assert (mask == truth).mean() > 0.999
    np.testing.assert_allclose(slices, standardise_in_brain(image.pixels, truth), atol=1e-4)
    assert record["sequence"]["sequence"] == "flair" and record["sequence_matches"]


def test_one_standardised_slice_is_kept_as_it_is():
    rng = np.random.default_rng(7)
    z = np.full((1, 32, 32), -3.5, np.float32)
    z[0, 8:24, 8:24] = rng.normal(
        0.15, 1.1, (16, 16)
    )  # a slice of a z-scored volume: not itself mean 0, SD 1
    slices, mask, record = prepare_whole_head(_image(z, name="demo.png"), FLAIR_CARD)
    np.testing.assert_array_equal(slices, z)
    assert record["standardisation"]["method"].startswith("already standardised") and not record["notes"]
