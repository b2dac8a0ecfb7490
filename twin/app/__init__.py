"""Streamlit app for the twin: pages, the hospital map and their shared helpers."""

__all__: list[str] = []
