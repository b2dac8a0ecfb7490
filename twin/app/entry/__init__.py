"""The Streamlit script that twin app runs."""
