"""Weights: the registry of every weight file the project can use (``catalog``, ``registry``),
the verified downloader behind ``python -m persona_video fetch`` (``fetch``), and ``doctor``."""
