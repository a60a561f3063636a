"""The growing HLS stream (real ffmpeg): segments cut while frames arrive, one continuous
audio track across the joins, and the finished MP4 made of the same packets."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from persona_video.encode.encoder import rgb_to_yuv
from persona_video.encode.hls import SEGMENT_S, HlsEncoder, concatenated_segments, is_segment_name, read_playlist
from persona_video.encode.probe import ffmpeg_exe, probe
from persona_video.errors import StageError

SIZE = 128
FPS = 25
RATE = 24000
NUM_FRAMES = 112  # 4.48 s: four whole segments and a short last one


def moving_frame(index: int) -> np.ndarray:
    """A picture that changes every frame (a bar moving across a gradient)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    frame = np.stack([cols * 2, rows * 2, np.full_like(rows, 90)], -1).astype(np.uint8)
    left = (index * 3) % (SIZE - 16)
    frame[:, left : left + 16] = 250
    return frame


def chirp(num_samples: int) -> np.ndarray:
    """A sweep: any sample missing or doubled at a join would show as a jump in its phase."""
    t = np.arange(num_samples) / RATE
    return (0.4 * np.sin(2 * np.pi * (200 * t + 40 * t * t))).astype(np.float32)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list, np.ndarray]:
    folder = tmp_path_factory.mktemp("job") / "stream"
    audio = chirp(int(NUM_FRAMES / FPS * RATE) + 300)
    seen_while_writing = []
    with HlsEncoder(folder, SIZE, SIZE, FPS, RATE, {"title": "joins"}) as encoder:
        per_frame = RATE // FPS
        for index in range(NUM_FRAMES):
            if index % 25 == 0:  # the speech arrives a sentence ahead of the frames, as in the pipeline
                encoder.write_audio(audio[index * per_frame : (index + 25) * per_frame])
            encoder.write_yuv(rgb_to_yuv(moving_frame(index)))
            seen_while_writing += [(index, s) for s in encoder.new_segments()]
        encoder.write_audio(audio[NUM_FRAMES * per_frame :])
        last = encoder.close()
    out = encoder.finish(folder.parent / "video.mp4")
    return out, seen_while_writing, last, audio


def decoded_frames(path: Path) -> list[np.ndarray]:
    reader = imageio_ffmpeg.read_frames(str(path))
    reader.__next__()
    return [np.frombuffer(chunk, np.uint8).reshape(SIZE, SIZE, 3) for chunk in reader]


def decoded_audio(path: Path) -> np.ndarray:
    command = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(RATE), "pipe:1"]
    pcm = subprocess.run(command, capture_output=True, check=True).stdout
    return np.frombuffer(pcm, "<i2").astype(np.float32) / 32767.0


def test_segments_come_out_while_frames_are_still_written(stream) -> None:
    _out, seen, last, _audio = stream
    assert seen, "no segment was finished before the stream ended"
    first_index, first = seen[0]
    assert first.index == 0 and first.start_s == 0.0 and first.end_s == pytest.approx(SEGMENT_S)
    assert first_index < NUM_FRAMES - 25  # long before the last frame
    segments = [s for _, s in seen] + last
    assert [s.index for s in segments] == list(range(len(segments)))
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start_s == pytest.approx(before.end_s)  # no hole in the clock
    assert segments[-1].end_s == pytest.approx(NUM_FRAMES / FPS, abs=0.05)
    listed, ended = read_playlist(first.path.parent)
    assert ended and [s.path for s in listed] == [s.path for s in segments]
    assert all(is_segment_name(s.name) for s in segments)


def test_finished_mp4_is_an_ordinary_faststart_file_starting_at_zero(stream) -> None:
    out, *_ = stream
    info = probe(out)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["faststart"] and info["num_frames"] == NUM_FRAMES
    assert info["video_duration_s"] == pytest.approx(NUM_FRAMES / FPS)
    assert "AI-generated" in info["comment"] and info["metadata"]["title"] == "joins"
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert "start: 0.000000" in header


def test_streamed_and_finished_videos_show_the_same_frames(stream, tmp_path: Path) -> None:
    out, seen, *_ = stream
    joined = concatenated_segments(seen[0][1].path.parent, tmp_path / "joined.ts")
    finished, played = decoded_frames(out), decoded_frames(joined)
    assert len(finished) == len(played) == NUM_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(finished, played, strict=True))
    for index in (0, 25, 26, 50, 111):  # the pictures are the ones written, in order, across joins
        error = np.abs(finished[index].astype(int) - moving_frame(index).astype(int)).mean()
        assert error < 4.0, (index, error)


def test_audio_is_continuous_across_segment_joins(stream) -> None:
    out, _seen, _last, audio = stream
    heard = decoded_audio(out)
    # one encoder over the whole track: the sweep comes back in step at every join, no sample lost
    lag = int(np.argmax(np.correlate(heard[:4800], audio[:2400], mode="valid")))
    assert lag <= 2
    for join_s in (1.0, 2.0, 3.0, 4.0):
        at = int(join_s * RATE)
        window = slice(at - 480, at + 480)
        expected, got = audio[window], heard[lag:][window]
        error = np.sqrt(np.mean((expected - got) ** 2)) / np.sqrt(np.mean(expected**2))
        assert error < 0.1, (join_s, error)  # AAC at 128 kb/s is a few per cent off; a gap is 100 %
    assert len(heard) >= len(audio) - 2  # the audio is never cut to the video


def test_bad_frame_is_an_error_and_the_stream_stops(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="must be uint8 of shape"):
        with HlsEncoder(tmp_path / "stream", SIZE, SIZE, FPS, RATE) as encoder:
            encoder.write_yuv(np.zeros((SIZE, SIZE), np.uint8))
    assert not (tmp_path / "stream" / "stream.m3u8").exists() or not read_playlist(tmp_path / "stream")[1]


def test_odd_size_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="must be positive and even"):
        HlsEncoder(tmp_path / "stream", 127, 128)


def test_unfinished_stream_cannot_be_assembled(tmp_path: Path) -> None:
    from persona_video.encode.hls import remux_stream

    with pytest.raises(StageError, match="is not finished"):
        remux_stream(tmp_path, tmp_path / "video.mp4")
