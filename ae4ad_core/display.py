"""Former home of the display helpers, now split into modules named for what they hold.

Import from those modules: :mod:`ae4ad_core.render` (windows, grey images, anomaly overlays, colour bars, the
Analyze views), :mod:`ae4ad_core.demo_cases`, :mod:`ae4ad_core.model_summary` (pickers, zoo table, stored
evaluations), :mod:`ae4ad_core.explanations` (plain-language text about an image and its analysis),
:mod:`ae4ad_core.exports` (CSV/JSON downloads) and :mod:`ae4ad_core.content_hash` (cache keys).

The names below are re-exported only for the callers not yet moved over (:func:`ae4ad_core.batch` thumbnails,
``benchmarks/screen_throughput.py``); this module goes once they import from the modules above.
"""

from .model_summary import default_model_name
from .render import is_ct, view_images, window_for

__all__ = ["default_model_name", "is_ct", "view_images", "window_for"]
