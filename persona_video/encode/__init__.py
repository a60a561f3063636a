"""Encode: takes rendered frames and the speech and gives the job's MP4 (H.264 + AAC, faststart,
"AI-generated" metadata) with WebVTT captions.

Modules: ``encoder`` (ffmpeg through an argument list), ``hls`` (the streaming segments the page and
the API play while a job runs), ``captions`` (WebVTT from the segment spans), ``probe`` (a file
read back as a player sees it).
"""
