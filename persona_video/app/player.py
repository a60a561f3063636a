"""The page's live player: the job's own HLS segments (``hls``) played while the job runs.

Gradio's streaming video output serves the chunks an event yields as an HLS playlist that its
player (hls.js) follows. Its stock component re-muxes each chunk and re-encodes the audio with
the system's ffmpeg and ffprobe; our segments come out of one encoder with one continuous clock
and one AAC track already, so they are handed over byte for byte (no system ffmpeg needed, and
nothing at the joins is touched). The duration of each is the playlist's own.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.data_classes import FileData

from ..encode.hls import read_playlist
from ..encode.probe import _stderr_tail, ffmpeg_exe
from ..errors import StageError

logger = logging.getLogger(__name__)


class LivePlayer(gr.Video):
    """A streaming gr.Video (make it with ``streaming=True``) whose chunks are paths of finished
    segments of a job's stream. gr.Video's own constructor is kept: Gradio reads the page's
    component settings from its signature."""

    def get_block_name(self) -> str:
        return "video"  # the page draws it with Gradio's own video player

    async def stream_output(self, value: Any, output_id: str, first_chunk: bool) -> tuple[dict | None, dict]:
        output_file = {"path": output_id, "is_stream": True, "orig_name": "video-stream.mp4"}
        output_file["meta"] = {"_type": "gradio.FileData"}
        if value is None:
            return None, output_file
        path = Path(str(value))
        segments, _ = read_playlist(path.parent)
        found = next((s for s in segments if s.path.name == path.name), None)
        if found is None:
            raise StageError("video", f"{path.name} is not a finished segment of the stream in {path.parent}")
        chunk = {"data": path.read_bytes(), "duration": found.end_s - found.start_s, "extension": ".ts"}
        return chunk, output_file

    async def flush_stream_output(self, output_id: str) -> None:
        return None

    def end_stream_output(self, output_id: str) -> None:
        return None

    async def combine_stream(self, stream: list[bytes], desired_output_format: str | None = None, only_file=False):
        """The segments played so far as one MP4 (their packets copied), for a client asking for the file."""
        del desired_output_format, only_file
        cache = Path(self.GRADIO_CACHE)
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(suffix=".ts", dir=cache, delete=False) as joined:
            joined.write(b"".join(stream))
        out = Path(joined.name).with_suffix(".mp4")
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", joined.name, "-c", "copy"]
        result = subprocess.run([*command, "-movflags", "+faststart", str(out)], capture_output=True, text=True)
        Path(joined.name).unlink(missing_ok=True)
        if result.returncode != 0:
            raise StageError("video", f"could not join the streamed segments: {_stderr_tail(result.stderr)}")
        return FileData(path=str(out), is_stream=False, orig_name="video-stream.mp4")


#: Runs in the browser when the finished video arrives: it takes over where the live player has
#: got to, so the viewer sees one video go on, not a restart from zero. The live player's place is
#: noted as it plays, because the page may take the live player down (and its position with it)
#: before the finished file is loaded; the finished player is looked for a while, as the page may
#: draw it anew as it shows it.
HANDOVER_JS = """
() => {
  const live = document.querySelector('#live video');
  if (!live || !(live.currentTime > 0)) return;
  let at = live.currentTime, when = performance.now(), playing = !live.paused;
  const note = () => {
    if (!live.currentSrc || !(live.currentTime > 0)) return;
    at = live.currentTime; when = performance.now(); playing = !live.paused;
  };
  live.addEventListener('timeupdate', note);
  const asked = Date.now();
  const take = () => {
    const done = document.querySelector('#video video');
    if (done && done.currentSrc && !done.pvTaken) {
      done.pvTaken = true;
      const go = () => {
        note();
        live.removeEventListener('timeupdate', note);
        live.pause();
        done.currentTime = at + (playing ? (performance.now() - when) / 1000 : 0);
        done.play();
      };
      if (done.readyState >= 1) go(); else done.addEventListener('loadedmetadata', go, { once: true });
    }
    if (Date.now() - asked < 10000) setTimeout(take, 100);
  };
  take();
}
"""
