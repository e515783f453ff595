"""Pixels to pictures: display windows, grey images, inferno anomaly maps, outlines, colour bars.

The one implementation of every picture the app, the CLI, the reports and the Learn page draw. Nothing here
imports Streamlit; every function returns arrays or PNG bytes.

Conventions (the same everywhere): anomaly maps use the perceptually uniform inferno colormap on the FIXED
scale ``[0, vmax]`` (``vmax`` = the model's ``display_max`` from its normal validation images, never a
per-image min-max); the boundary of the pixels above the calibrated pixel threshold is drawn in cyan
(:data:`THRESHOLD_COLOUR`), the ground-truth boundary in green (:data:`TRUTH_COLOUR`).

* windows: :data:`WINDOW_PRESETS`, :data:`CT_WINDOWS`, :func:`window_for`, :func:`window_description`,
  :func:`apply_window` (DICOM ``center +- width / 2``);
* images, ``(H, W, 3)`` uint8: :func:`grey_rgb`, :func:`heat_rgb`, :func:`overlay_rgb`, with
  :func:`mask_boundary` for the outlines, and :func:`view_images` for the Analyze page's three views;
* PNG bytes: :func:`colorbar_png`, :func:`panels_png`.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence

import numpy as np

from .analysis import outline_in_input_space

__all__ = [
    "THRESHOLD_COLOUR",
    "TRUTH_COLOUR",
    "UNIT_WINDOW",
    "WINDOW_PRESETS",
    "CT_WINDOWS",
    "is_ct",
    "window_for",
    "window_description",
    "legend_html",
    "apply_window",
    "as_slice",
    "check_map_shapes",
    "mask_boundary",
    "draw_brain_outline",
    "grey_rgb",
    "heat_rgb",
    "overlay_rgb",
    "reconstruction_in_raw_units",
    "view_images",
    "colorbar_png",
    "panels_png",
]

THRESHOLD_COLOUR: tuple[int, int, int] = (0, 255, 255)
"""Cyan: boundary of the pixels above the calibrated pixel threshold."""

TRUTH_COLOUR: tuple[int, int, int] = (0, 220, 0)
"""Green: boundary of the ground-truth annotation."""

BRAIN_COLOUR: tuple[int, int, int] = (200, 200, 200)
"""Light grey: edge of the extracted brain."""

UNIT_WINDOW: tuple[float, float] = (0.5, 1.0)
"""The window ``(center, width)`` showing [0, 1] as black to white (demo images are in [0, 1])."""

WINDOW_PRESETS: tuple[str, ...] = ("auto", "brain", "soft tissue", "bone")
"""Window/level presets offered for display."""

CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "soft tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
}
"""Standard CT windows ``(center, width)`` in Hounsfield units."""

# Non-CT images have no physical intensity unit: presets are windows over the image's own histogram,
# as percentiles (low, high) of the tissue pixels (brain) or of all pixels.
_RELATIVE_WINDOWS: dict[str, tuple[float, float]] = {
    "auto": (0.5, 99.5),
    "brain": (2.0, 98.0),
    "soft tissue": (0.5, 99.5),
    "bone": (0.0, 100.0),
}

_WINDOW_SAMPLE = 2_000_000
_COLORMAP = "inferno"


# ------------------------------------------------------------------------------------------------- windows


def is_ct(metadata: Mapping | None) -> bool:
    """True for CT images (pixels in Hounsfield units)."""
    return str((metadata or {}).get("modality", "")).upper() == "CT"


def window_for(
    pixels: np.ndarray,
    preset: str = "auto",
    *,
    default_window: tuple[float, float] | None = None,
    ct: bool = False,
) -> tuple[float, float]:
    """Display window ``(center, width)`` in the unit of ``pixels``.

    ``auto`` uses the file's own window (DICOM Window Center/Width) when it has one, else the 0.5-99.5th
    percentiles. For CT, ``brain``, ``soft tissue`` and ``bone`` are the standard Hounsfield windows
    (:data:`CT_WINDOWS`). Other images have no physical unit, so the presets are relative to the image's own
    histogram: ``brain`` = 2nd-98th percentile of the tissue (non-background) pixels (tight contrast),
    ``soft tissue`` = 0.5-99.5th percentile, ``bone`` = the full range.
    """
    from .errors import look_up_option

    look_up_option(preset, WINDOW_PRESETS, what="window preset")
    if preset == "auto" and default_window is not None:
        return float(default_window[0]), max(float(default_window[1]), 1e-6)
    if ct and preset in CT_WINDOWS:
        return CT_WINDOWS[preset]
    values = np.asarray(pixels, dtype=np.float32).ravel()
    if values.size > _WINDOW_SAMPLE:  # large volumes: a regular subsample is plenty for percentiles
        values = values[:: values.size // _WINDOW_SAMPLE + 1]
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.5, 1.0
    if preset == "brain":
        lo_all = float(values.min())
        tissue = values[values > lo_all + 0.05 * (float(values.max()) - lo_all)]
        values = tissue if tissue.size >= 16 else values
    lo, hi = np.percentile(values, _RELATIVE_WINDOWS[preset])
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return (lo + hi) / 2.0, hi - lo


def window_description(preset: str, ct: bool) -> str:
    """One line saying what a preset means for this image."""
    if ct and preset in CT_WINDOWS:
        c, w = CT_WINDOWS[preset]
        return f"CT {preset} window: level {c:g} HU, width {w:g} HU."
    return {
        "auto": "The file's own window if it has one, else the 0.5-99.5th percentile of the image.",
        "brain": "Tight contrast on the tissue: 2nd-98th percentile of non-background pixels.",
        "soft tissue": "0.5-99.5th percentile of all pixels.",
        "bone": "The full intensity range.",
    }[preset]


def legend_html(preset: str, image, has_truth: bool, *, truth_label: str = "ground truth") -> str:
    """The caption under the views: what the window shows and what the outline colours mean (HTML);
    ``truth_label`` names the green outline (e.g. "expert outline (tumour)" for a real patient)."""

    def swatch(rgb):
        return f'<span style="color:rgb{tuple(rgb)};font-weight:700">&#9632;</span>'

    text = (
        f"{window_description(preset, is_ct(image.metadata))} {swatch(THRESHOLD_COLOUR)} above the "
        "calibrated pixel threshold"
    )
    if has_truth:
        text += f" &nbsp;{swatch(TRUTH_COLOUR)} {truth_label}"
    return text + "."


def _window_unit(pixels, window: tuple[float, float] | None, *, invert: bool = False) -> np.ndarray:
    """``pixels`` mapped to [0, 1] through ``window`` = (center, width) (default :func:`window_for` "auto")."""
    pixels = np.asarray(pixels, dtype=np.float32)
    center, width = window_for(pixels) if window is None else (float(v) for v in window)
    unit = np.clip((pixels - (center - width / 2.0)) / max(width, 1e-6), 0.0, 1.0)
    unit = np.nan_to_num(unit, nan=0.0)
    return 1.0 - unit if invert else unit


def apply_window(pixels: np.ndarray, center: float, width: float, *, invert: bool = False) -> np.ndarray:
    """Map intensities through a linear window to uint8 grey (DICOM ``center +- width / 2``)."""
    return np.round(_window_unit(pixels, (center, width), invert=invert) * 255.0).astype(np.uint8)


# -------------------------------------------------------------------------------------------------- images


def mask_boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` that touch its outside (4-connected), as a bool array of the same shape."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0) if mask.any() else mask


def as_slice(image) -> np.ndarray:
    """One slice ``(H, W)`` float32 from an ``(H, W)`` or ``(1, H, W)`` array; ValueError otherwise."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"Expected one 2D slice (H, W) or (1, H, W), got shape {np.shape(image)}.")
    return img


def check_map_shapes(image: np.ndarray, amap: np.ndarray, **masks) -> None:
    """Raise ValueError unless ``image`` and ``amap`` are 2D of one shape and every mask given has it too."""
    if image.ndim != 2 or image.shape != amap.shape:
        raise ValueError(f"image and map must be 2D of the same shape, got {image.shape} and {amap.shape}.")
    for name, mask in masks.items():
        if mask is not None and np.shape(mask) != image.shape:
            raise ValueError(f"{name} has shape {np.shape(mask)}, the image {image.shape}.")


def _paint_outlines(rgb: np.ndarray, *, outline=None, truth=None) -> np.ndarray:
    """Draw the boundaries of ``outline`` (cyan) and ``truth`` (green) into ``rgb`` (H, W, 3), in place."""
    check_map_shapes(rgb[..., 0], rgb[..., 0], outline=outline, truth=truth)
    for mask, colour in ((outline, THRESHOLD_COLOUR), (truth, TRUTH_COLOUR)):
        if mask is not None:
            rgb[mask_boundary(mask)] = colour
    return rgb


def draw_brain_outline(rgb: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) with the edge of the extracted ``brain`` (H, W) drawn in light grey;
    ``rgb`` itself when the shapes differ."""
    if np.shape(brain) != rgb.shape[:2]:
        return rgb
    out = rgb.copy()
    out[mask_boundary(brain)] = BRAIN_COLOUR
    return out


def _inferno_unit(amap, vmax: float) -> tuple[np.ndarray, np.ndarray]:
    """``(norm, colour)``: the map on the fixed scale ``[0, vmax]`` clipped to [0, 1], and its inferno RGB in
    [0, 255] (float32, ``(H, W, 3)``)."""
    from matplotlib import colormaps

    norm = np.clip(np.nan_to_num(np.asarray(amap, dtype=np.float32)) / max(float(vmax), 1e-12), 0.0, 1.0)
    return norm, colormaps[_COLORMAP](norm)[..., :3].astype(np.float32) * 255.0


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def grey_rgb(
    image,
    *,
    window: tuple[float, float] | None = UNIT_WINDOW,
    invert: bool = False,
    outline: np.ndarray | None = None,
    truth: np.ndarray | None = None,
) -> np.ndarray:
    """A slice as ``(H, W, 3)`` uint8 grey through ``window``, with outline boundaries drawn over it.

    Parameters
    ----------
    image : (H, W) or (1, H, W) array
    window : (center, width), optional
        Default :data:`UNIT_WINDOW` ([0, 1] as black to white); None: the image's 0.5-99.5 percentiles.
    invert : bool
        White for low intensities.
    outline, truth : (H, W) bool arrays, optional
        Above-threshold pixels (boundary in cyan) and the ground truth (boundary in green).
    """
    unit = _window_unit(as_slice(image), window, invert=invert)
    rgb = np.repeat(_to_uint8(unit * 255.0)[..., None], 3, axis=2)
    return _paint_outlines(rgb, outline=outline, truth=truth)


def heat_rgb(
    amap: np.ndarray, *, vmax: float, outline: np.ndarray | None = None, truth: np.ndarray | None = None
) -> np.ndarray:
    """An anomaly map alone as ``(H, W, 3)`` uint8: inferno on the FIXED scale ``[0, vmax]`` (values above are
    clipped, never stretched per image), with outline boundaries as in :func:`grey_rgb`."""
    _, colour = _inferno_unit(as_slice(amap), vmax)
    return _paint_outlines(_to_uint8(colour), outline=outline, truth=truth)


def overlay_rgb(
    image: np.ndarray,
    amap: np.ndarray,
    *,
    vmax: float,
    alpha: float = 0.5,
    outline: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
    invert: bool = False,
) -> np.ndarray:
    """An anomaly map over a greyscale image as an RGB array, without building a figure (views, thumbnails).

    Parameters
    ----------
    image : (H, W) array
        Greyscale underlay in any intensity units.
    amap : (H, W) array
        Anomaly map, shown with inferno on the fixed scale ``[0, vmax]`` (values outside are clipped).
    vmax : float
        Top of the colour scale (the model's ``display_max``).
    alpha : float
        Opacity of the map where it reaches ``vmax``; it fades as ``alpha * sqrt(amap / vmax)`` so that
        near-zero values leave the anatomy visible (0 shows only the image).
    outline, truth : (H, W) bool arrays, optional
        Pixels above the calibrated threshold (boundary drawn in cyan) and the ground truth (green).
    window : (center, width), optional
        Intensity window of the underlay; default: the image's 0.5-99.5 percentile range.
    invert : bool
        Invert the underlay's grey levels.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8.
    """
    image, amap = np.asarray(image), np.asarray(amap, dtype=np.float32)
    check_map_shapes(image, amap)
    grey = _window_unit(image, window, invert=invert)[..., None] * 255.0
    norm, colour = _inferno_unit(amap, vmax)
    a = (float(np.clip(alpha, 0.0, 1.0)) * np.sqrt(norm))[..., None]
    rgb = _to_uint8(grey * (1.0 - a) + colour * a)
    return _paint_outlines(rgb, outline=outline, truth=truth)


# --------------------------------------------------------------------------------------- the Analyze views


def reconstruction_in_raw_units(
    reconstruction: np.ndarray, raw_slice: np.ndarray, preprocessing
) -> np.ndarray:
    """A reconstruction in model units ([-1, 1], input geometry) in the input's intensity units, so it can be
    shown with the input's window (:func:`ae4ad_core.preprocess.restore_intensity`)."""
    from .preprocess import restore_intensity

    return restore_intensity(reconstruction, raw_slice, preprocessing)


def view_images(
    raw_slice: np.ndarray,
    analysis,
    i: int,
    *,
    window: tuple[float, float],
    preprocessing,
    invert: bool = False,
    opacity: float = 0.5,
    show_outlines: bool = True,
    truth: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three views of slice ``i``, all ``(H, W, 3)`` uint8 in the input geometry.

    Returns ``(input, reconstruction, overlay)``: the input windowed for display; the reconstruction mapped
    back to input intensity units and shown with the same window; the anomaly map over the input
    (:func:`overlay_rgb`: inferno on the fixed scale ``[0, display_max]``, cyan threshold outline, green
    ground-truth outline).
    """
    recon = reconstruction_in_raw_units(analysis.reconstruction_in_input_space(i), raw_slice, preprocessing)
    outline = outline_in_input_space(analysis, i) if show_outlines else None
    truth = truth if show_outlines and truth is not None and truth.shape == raw_slice.shape else None
    over = overlay_rgb(
        raw_slice,
        analysis.map_in_input_space(i),
        vmax=analysis.display_max,
        alpha=opacity,
        outline=outline,
        truth=truth,
        window=window,
        invert=invert,
    )
    return grey_rgb(raw_slice, window=window, invert=invert), grey_rgb(recon, window=window, invert=invert), over


# ----------------------------------------------------------------------------------------------- PNG bytes

# Layout of the two colour bars: a slim horizontal one under the views, a square vertical one that sits in a
# grid of square maps (the Learn page) with the same height as them.
_COLORBAR_LAYOUTS = {
    "horizontal": {"figsize": (4.0, 0.62), "dpi": 150, "axes": (0.04, 0.58, 0.92, 0.22), "fontsize": 7},
    "vertical": {"figsize": (1.3, 1.3), "dpi": 200, "axes": (0.30, 0.06, 0.14, 0.88), "fontsize": 10},
}


@functools.lru_cache(maxsize=64)
def colorbar_png(
    vmax: float,
    *,
    label: str = "anomaly map (fixed scale from normal images)",
    orientation: str = "horizontal",
) -> bytes:
    """An inferno colour bar from 0 to ``vmax`` as PNG bytes (transparent background).

    ``orientation="horizontal"``: a slim bar with the label under it (under the Analyze views);
    ``"vertical"``: a bar on a square canvas with the label at its left, to sit in a grid of square maps.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from .errors import look_up_option

    layout = _COLORBAR_LAYOUTS[look_up_option(orientation, tuple(_COLORBAR_LAYOUTS), what="orientation")]
    fig = Figure(figsize=layout["figsize"], dpi=layout["dpi"])
    bar = fig.colorbar(
        ScalarMappable(Normalize(0.0, vmax), _COLORMAP),
        cax=fig.add_axes(layout["axes"]),
        orientation=orientation,
    )
    digits = ".3g" if orientation == "horizontal" else ".2g"
    bar.set_ticks([0.0, vmax / 2.0, vmax])
    bar.set_ticklabels(["0", format(vmax / 2, digits), format(vmax, digits)])
    bar.ax.tick_params(labelsize=layout["fontsize"], length=2, pad=1)
    bar.outline.set_linewidth(0.4)
    text = {"ha": "center", "fontsize": layout["fontsize"], "color": "#444"}
    if orientation == "horizontal":
        fig.text(0.5, 0.02, label, va="bottom", **text)
    else:
        fig.text(0.14, 0.5, label, rotation=90, va="center", **text)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", transparent=True)
    return buf.getvalue()


def panels_png(panels: Sequence[np.ndarray], titles: Sequence[str] | None = None) -> bytes:
    """Side-by-side RGB panels (same height) as one PNG, with optional titles above them."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    h = max(p.shape[0] for p in panels)
    gap = 8
    head = 18 if titles else 0
    width = sum(p.shape[1] for p in panels) + gap * (len(panels) - 1)
    canvas = PILImage.new("RGB", (width, h + head), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for k, p in enumerate(panels):
        canvas.paste(PILImage.fromarray(np.ascontiguousarray(p)), (x, head))
        if titles:
            draw.text((x + 2, 3), titles[k], fill=(0, 0, 0))
        x += p.shape[1] + gap
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
