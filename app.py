"""Streamlit entry: ``streamlit run app.py`` from the repository root, or ``twin app``.

The app lives in :mod:`twin.app`; this file only starts it.
"""

from twin.app.main import main

main()
