"""``sdic ui``: a web page to invert a photo, move edit sliders and paste the edit back.

:mod:`sdic.ui.core` holds the logic (no Gradio); :mod:`sdic.ui.app` the Gradio page
(``pip install 'sdic[ui]'``).
"""

from .core import Blend, Session, Slider, Studio, read_upload, save_inversion, slider_for, views

__all__ = ["Blend", "Session", "Slider", "Studio", "read_upload", "save_inversion", "slider_for", "views"]
