"""The Streamlit side of AE4AD Studio that several pages share (the pages themselves are in ``app_pages/``).

Only :mod:`ae4ad_app.widgets`: the model and scoring-mode picker and the cached loaders. Computation stays in
:mod:`ae4ad_core`, which never imports Streamlit.
"""
