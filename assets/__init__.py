"""Package data: the shipped model zoo, demo data set and sweep summary (found with
:func:`ae4ad_core.assets.assets_dir`). Installed as ``ae4ad_assets``; no code."""
