"""Synthetic lesions: confined to their masks, inside the brain, deterministic, for every kind and difficulty."""

from __future__ import annotations

import numpy as np
import pytest

from ae4ad_core.data import load_demo
from ae4ad_core.errors import DataError
from ae4ad_core.lesions import DIFFICULTIES, LESION_KINDS, add_lesion


@pytest.fixture(scope="module")
def normal_slices():
    """Real normal slices (held-out Colin27 test slices without lesion) at several axial levels."""
    test = load_demo().test
    normal = np.flatnonzero(test.labels == 0)
    levels = test.extra["slice_index"][normal]
    order = normal[np.argsort(levels, kind="stable")]
    chosen = order[np.linspace(0, len(order) - 1, 6).astype(int)]  # from the cerebellum to the vertex
    return [(test.images[i].copy(), test.brain[i].copy()) for i in chosen]


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
@pytest.mark.parametrize("kind", LESION_KINDS)
def test_lesion_changes_only_masked_pixels_inside_the_brain(normal_slices, kind, difficulty):
    for position, (image, brain) in enumerate(normal_slices):
        for seed in range(3):
            rng = np.random.default_rng([seed, position])
            lesioned, mask = add_lesion(image, brain, kind=kind, rng=rng, difficulty=difficulty)
            assert lesioned.shape == image.shape and lesioned.dtype == np.float32
            assert mask.shape == image.shape and mask.dtype == np.uint8
            assert set(np.unique(mask)) <= {0, 1}
            assert mask.sum() > 0, "the mask must not be empty"
            assert not np.any(mask.astype(bool) & (brain == 0)), "the mask must lie inside the brain"
            changed = np.abs(lesioned - image) > 1e-6
            assert not np.any(changed & (mask == 0)), "pixels outside the mask must be unchanged"
            assert np.all(lesioned >= 0.0) and np.all(lesioned <= 1.0)
            assert changed.any(), "a lesion must change the image"


@pytest.mark.parametrize("kind", ["hyperintense", "hypointense", "noise", "tumour"])
def test_most_of_an_intensity_lesion_mask_is_visible(normal_slices, kind):
    image, brain = normal_slices[3]
    lesioned, mask = add_lesion(image, brain, kind=kind, rng=np.random.default_rng(1), difficulty="easy")
    changed = np.abs(lesioned - image) > 1e-3
    assert changed[mask == 1].mean() > 0.6


def test_difficulty_orders_size_and_contrast(normal_slices):
    image, brain = normal_slices[3]
    areas, shifts = {}, {}
    for difficulty in DIFFICULTIES:
        area, shift = [], []
        for seed in range(8):
            lesioned, mask = add_lesion(image, brain, kind="hyperintense", rng=np.random.default_rng(seed),
                                        difficulty=difficulty)  # fmt: skip
            area.append(mask.sum())
            shift.append(float(np.abs(lesioned - image)[mask == 1].mean()))
        areas[difficulty], shifts[difficulty] = np.mean(area), np.mean(shift)
    assert areas["easy"] > areas["medium"] > areas["hard"]
    assert shifts["easy"] > shifts["medium"] > shifts["hard"]


def test_lesion_is_deterministic_given_the_generator(normal_slices):
    image, brain = normal_slices[2]
    first = add_lesion(image, brain, kind="tumour", rng=np.random.default_rng(7), difficulty="medium")
    second = add_lesion(image, brain, kind="tumour", rng=np.random.default_rng(7), difficulty="medium")
    third = add_lesion(image, brain, kind="tumour", rng=np.random.default_rng(8), difficulty="medium")
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(first[1], third[1])


def test_input_is_not_modified(normal_slices):
    image, brain = normal_slices[2]
    before = image.copy()
    add_lesion(image, brain, kind="deformation", rng=np.random.default_rng(0), difficulty="easy")
    assert np.array_equal(image, before)


def test_unknown_kind_suggests_the_closest_name(normal_slices):
    image, brain = normal_slices[0]
    with pytest.raises(ValueError, match="Did you mean 'tumour'"):
        add_lesion(image, brain, kind="tumor", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="difficulty"):
        add_lesion(image, brain, kind="noise", rng=np.random.default_rng(0), difficulty="extreme")


def test_empty_brain_and_shape_mismatch_raise_data_error():
    image = np.zeros((32, 32), np.float32)
    with pytest.raises(DataError, match="brain mask has 0 pixels"):
        add_lesion(image, np.zeros((32, 32), np.uint8), kind="noise", rng=np.random.default_rng(0))
    with pytest.raises(DataError, match="same shape"):
        add_lesion(image, np.ones((16, 16), np.uint8), kind="noise", rng=np.random.default_rng(0))


def test_small_brain_still_gets_a_confined_lesion():
    """A thin slice (near the vertex) shrinks the lesion instead of spilling out of the brain."""
    image = np.zeros((64, 64), np.float32)
    brain = np.zeros((64, 64), np.uint8)
    brain[28:36, 20:44] = 1
    image[brain == 1] = 0.6
    for kind in LESION_KINDS:
        lesioned, mask = add_lesion(image, brain, kind=kind, rng=np.random.default_rng(3), difficulty="easy")
        assert mask.sum() > 0 and not np.any((mask == 1) & (brain == 0))
        assert not np.any((np.abs(lesioned - image) > 1e-6) & (mask == 0))
