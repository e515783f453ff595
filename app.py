"""AE4AD Studio: the entry point. Builds the navigation over the pages and the shared sidebar.

Run with ``streamlit run app.py``. To add a page, add a line to ``PAGES`` (file, title, icon); the first
entry is the default page. Pages whose file does not exist (yet) are left out of the navigation.
"""

from pathlib import Path

import streamlit as st

from ae4ad_core.device import describe_device, select_device, skip_device_plugins

skip_device_plugins()  # before the first import of torch: it need not search every package for device plugins

st.set_page_config(page_title="AE4AD Studio", page_icon=":material/neurology:", layout="wide")

PAGES = [
    ("app_pages/analyze.py", "Analyze", ":material/image_search:"),
    ("app_pages/batch.py", "Batch", ":material/stacks:"),
    ("app_pages/train.py", "Train", ":material/model_training:"),
    ("app_pages/learn.py", "Learn", ":material/school:"),
    ("app_pages/models.py", "Models", ":material/hub:"),
]
HERE = Path(__file__).resolve().parent


@st.cache_resource
def _device_name() -> str:
    return describe_device(select_device())


page = st.navigation(
    [
        st.Page(path, title=title, icon=icon, default=k == 0)
        for k, (path, title, icon) in enumerate(PAGES)
        if (HERE / path).is_file()
    ]
)
with st.sidebar:
    st.warning("**Research and teaching tool — not for diagnosis.**", icon=":material/info:")
    st.caption(
        ":material/license: Real-patient cases and models (`flair-*`, `t1c-*`) come from BraTS 2013 glioma "
        "patients: licence CC BY-NC-SA 3.0 CH, non-commercial use only (see assets/ATTRIBUTION.md)."
    )
    st.caption(f"Computing on {_device_name()}")
page.run()
