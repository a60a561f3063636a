"""The REST API: ``routes`` (FastAPI: the synchronous call, jobs with server-sent stage events, the
stream playlist, uploads) over the pipeline and the job queue; ``models`` its request and response
schemas. ``server`` mounts it beside the page.
"""
