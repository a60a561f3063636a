"""Enhance (optional, between render and encode): takes rendered frames with their face landmarks
and gives them restored. Backend: GFPGAN v1.4 (``gfpgan``, the GPU extra); ``stage`` chooses it
once per request (auto: when its weights and runtime are here), else frames pass unchanged.
"""
