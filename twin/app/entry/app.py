"""Streamlit script that ``twin app`` runs: starts :func:`twin.app.main.main`.

It sits in its own folder because Streamlit treats a ``pages`` folder next
to the script it runs as a legacy page directory, and ``twin/app/pages``
is one.
"""

from twin.app.main import main

main()
