"""Persona Video: a prompt and a presenter style in, a talking-head explainer video out.

Stages (one module each): script -> speech -> motion -> governor -> render -> encode;
``pipeline`` runs them in order and yields an event per stage.
"""

__version__ = "0.1.0"
