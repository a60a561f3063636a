"""Weights: the registry of every weight file the project can use (``catalog``, ``registry``),
whether each heavy backend can run here and why not (``runtime``), the verified downloader
behind ``python -m persona_video fetch`` (``fetch``), ``doctor``, the heavy models loaded once
at start-up (``preload``) and the runner of the user's SadTalker checkout that SadTalker's
motion and render share (``sadtalker_runner``, ``sadtalker_driver``)."""
