"""The Gradio page: ``layout`` builds the Blocks, ``events`` turns the pipeline's events into page
updates, ``content`` holds its texts, ``plot`` the intent and gain plot, ``session`` what one browser
tab keeps, ``player`` the live player of the streaming segments. ``app.py`` at the repository top
launches it (the Hugging Face Space entry).
"""
