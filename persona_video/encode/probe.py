"""What a player sees in an MP4: codecs, size, frame and sample counts, tags, box order.

Read with the same ffmpeg the encoder uses (``imageio-ffmpeg``), by parsing what it
prints about a file and decoding the streams to count frames and samples.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import imageio_ffmpeg

from ..errors import StageError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    return imageio_ffmpeg.get_ffmpeg_exe()


_STDERR_TAIL_CHARS = 2000


def _stderr_tail(text: str) -> str:
    """The end of what ffmpeg printed, for an error message."""
    text = text.strip()
    return text[-_STDERR_TAIL_CHARS:] if text else "(ffmpeg printed nothing)"


def _header(path: str | os.PathLike[str]) -> str:
    """What ffmpeg prints about a file's container and streams (it reads the header only)."""
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, check=False)
    return result.stderr.decode("utf-8", errors="replace")


def has_aac_track(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable media file with an AAC audio stream."""
    if not Path(path).is_file():
        return False
    return any("Audio: aac" in line for line in _header(path).splitlines() if line.strip().startswith("Stream #"))


def _split_top_level(text: str) -> list[str]:
    """Split ffmpeg's stream description on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def top_level_atoms(path: str | os.PathLike[str]) -> list[str]:
    """Types of the top-level MP4 boxes in file order, e.g. ['ftyp', 'moov', 'free', 'mdat']."""
    atoms: list[str] = []
    with open(path, "rb") as file:
        size_total = os.fstat(file.fileno()).st_size
        offset = 0
        while offset + 8 <= size_total:
            file.seek(offset)
            header = file.read(16)
            size, kind = int.from_bytes(header[:4], "big"), header[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            atoms.append(kind)
            offset += size
    return atoms


def probe(path: str | os.PathLike[str]) -> dict:
    """What a player sees in an MP4.

    Returns video_codec, pix_fmt, width, height, fps, num_frames, video_duration_s
    (decoded frames / fps), audio_codec, sample_rate, audio_duration_s (decoded
    samples / rate), duration_s (container), metadata (dict of tags), comment,
    atoms (top-level boxes) and faststart (moov before mdat).
    """
    path = Path(path)
    if not path.is_file():
        raise StageError("encode", f"cannot probe {path}: no such file")
    text = _header(path)
    info: dict = {"metadata": {}, "video_codec": None, "audio_codec": None}
    in_input_metadata = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Input #"):
            in_input_metadata = False
        elif stripped == "Metadata:" and "duration_s" not in info:  # the file's tags come before its duration
            in_input_metadata = True
        elif stripped.startswith("Duration:"):
            in_input_metadata = False
            hours, minutes, seconds = stripped.split(",")[0].split(": ")[1].split(":")
            info["duration_s"] = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        elif in_input_metadata and ":" in stripped:
            key, value = stripped.split(":", 1)
            info["metadata"][key.strip()] = value.strip()
        elif stripped.startswith("Stream #"):
            kind, _, description = stripped.partition(": ")[2].partition(": ")
            parts = _split_top_level(description)
            if kind == "Video" and info["video_codec"] is None:
                info["video_codec"] = parts[0].split()[0]
                info["pix_fmt"] = parts[1].split("(")[0]
                size = next(p for p in parts if "x" in p and p.split("x")[0].isdigit()).split()[0]
                info["width"], info["height"] = (int(v) for v in size.split("x"))
                info["fps"] = float(next(p for p in parts if p.endswith(" fps")).split()[0])
            elif kind == "Audio" and info["audio_codec"] is None:
                info["audio_codec"] = parts[0].split()[0]
                info["sample_rate"] = int(next(p for p in parts if p.endswith(" Hz")).split()[0])
    if info["video_codec"] is None and info["audio_codec"] is None:
        raise StageError("encode", f"{path.name} is not a readable video: {_stderr_tail(text)}")
    if info["video_codec"] is not None:
        info["num_frames"] = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
        info["video_duration_s"] = info["num_frames"] / info["fps"]
    if info["audio_codec"] is not None:
        decoded = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1", "pipe:1"],
            capture_output=True,
            check=False,
        )
        if decoded.returncode != 0:
            raise StageError(
                "encode", f"cannot decode the audio of {path.name}: {_stderr_tail(decoded.stderr.decode())}"
            )
        info["audio_duration_s"] = len(decoded.stdout) / 2 / info["sample_rate"]
    info["comment"] = info["metadata"].get("comment", "")
    info["atoms"] = top_level_atoms(path)
    atoms = info["atoms"]
    info["faststart"] = "moov" in atoms and "mdat" in atoms and atoms.index("moov") < atoms.index("mdat")
    return info
