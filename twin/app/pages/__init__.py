"""One module per app page; Streamlit runs each file as a script (see twin.app.main.PAGES)."""
