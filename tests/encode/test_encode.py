"""Encoder with the real ffmpeg: codecs, faststart, sync, metadata, atomic writes, captions."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from persona_video.encode.encoder import VideoEncoder, encode_video, webvtt_cues, write_webvtt
from persona_video.encode.probe import ffmpeg_exe, probe
from persona_video.errors import StageError
from persona_video.types import SegmentSpan

WIDTH, HEIGHT, FPS = 192, 128, 25
SAMPLE_RATE = 22050
DURATION_S = 2.53  # not a whole number of frames: int(2.53 * 25) = 63 frames, audio 10 ms longer
TONE_HZ = 440.0


def gradient_frame(index: int) -> np.ndarray:
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    return np.stack([(cols + 3 * index) % 256, (rows * 2) % 256, np.full_like(cols, 40)], axis=-1).astype(np.uint8)


def tone(duration_s: float = DURATION_S) -> np.ndarray:
    t = np.arange(round(duration_s * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.4 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, np.ndarray]:
    out_path = tmp_path_factory.mktemp("encode") / "video.mp4"
    num_frames = int(DURATION_S * FPS)
    audio = tone()
    with VideoEncoder(out_path, WIDTH, HEIGHT, FPS, audio, SAMPLE_RATE, {"title": "Why M4 is fast"}) as encoder:
        encoder.write(gradient_frame(0))
        encoder.write_batch(np.stack([gradient_frame(i) for i in range(1, num_frames)]))
    return out_path, num_frames, audio


def test_codecs_size_and_fps(encoded: tuple[Path, int, np.ndarray]) -> None:
    info = probe(encoded[0])
    assert info["video_codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["audio_codec"] == "aac"
    assert (info["width"], info["height"], info["fps"]) == (WIDTH, HEIGHT, 25.0)
    assert info["sample_rate"] == SAMPLE_RATE


def test_faststart_moov_before_mdat(encoded: tuple[Path, int, np.ndarray]) -> None:
    data = encoded[0].read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")
    info = probe(encoded[0])
    assert info["faststart"] and info["atoms"][0] == "ftyp"


def test_frame_count_and_av_sync(encoded: tuple[Path, int, np.ndarray]) -> None:
    out_path, num_frames, audio = encoded
    info = probe(out_path)
    assert info["num_frames"] == num_frames == 63
    assert info["video_duration_s"] == pytest.approx(63 / 25)
    assert abs(info["audio_duration_s"] - info["video_duration_s"]) < 0.04
    # the audio is not cut to the video: every sample is there
    assert info["audio_duration_s"] == pytest.approx(len(audio) / SAMPLE_RATE, abs=0.002)


def test_metadata_comment_and_title(encoded: tuple[Path, int, np.ndarray]) -> None:
    info = probe(encoded[0])
    assert "AI-generated" in info["comment"]
    assert info["metadata"]["title"] == "Why M4 is fast"
    raw = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(encoded[0])], capture_output=True, check=False)
    assert re.search(r"comment\s+: .*AI-generated", raw.stderr.decode())


def test_decoded_picture_and_sound_match_the_input(encoded: tuple[Path, int, np.ndarray]) -> None:
    out_path = encoded[0]
    reader = imageio_ffmpeg.read_frames(str(out_path))
    reader.__next__()  # metadata
    decoded = [np.frombuffer(chunk, np.uint8).reshape(HEIGHT, WIDTH, 3) for chunk in reader]
    assert len(decoded) == 63
    for index in (0, 30, 62):  # RGB order and frame order survive (yuv420p allows small errors)
        error = np.abs(decoded[index].astype(int) - gradient_frame(index).astype(int)).mean()
        assert error < 6.0, (index, error)
    pcm = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(out_path), "-f", "s16le", "-ac", "1", "pipe:1"],
        capture_output=True,
        check=True,
    ).stdout
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(samples)
    assert abs(peak_hz - TONE_HZ) < 2.0


def test_odd_size_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StageError, match="191x128 must be positive and even"):
        VideoEncoder(tmp_path / "odd.mp4", 191, 128)


def test_wrong_frame_shape_is_an_error_and_leaves_nothing(tmp_path: Path) -> None:
    out_path = tmp_path / "bad.mp4"
    encoder = VideoEncoder(out_path, WIDTH, HEIGHT, FPS, tone(0.5), SAMPLE_RATE)
    with pytest.raises(StageError, match=r"frames must be uint8 of shape \(N, 128, 192, 3\)"), encoder:
        encoder.write(np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_raises_with_stderr_and_keeps_old_file(tmp_path: Path) -> None:
    out_path = tmp_path / "video.mp4"
    out_path.write_bytes(b"previous video")
    encoder = VideoEncoder(out_path, WIDTH, HEIGHT, FPS, tone(0.5), SAMPLE_RATE, preset="no-such-preset")
    with pytest.raises(StageError) as caught, encoder:
        for index in range(12):
            encoder.write(gradient_frame(index))
    message = str(caught.value)
    assert message.startswith("encode stage failed")
    assert "preset" in message.lower() and "no-such-preset" in message  # ffmpeg's own words
    assert out_path.read_bytes() == b"previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.mp4"]


def test_ffmpeg_failure_leaves_no_file_at_out_path(tmp_path: Path) -> None:
    out_path = tmp_path / "video.mp4"
    with pytest.raises(StageError, match="bogus"):
        encode_video((gradient_frame(i) for i in range(5)), tone(0.2), SAMPLE_RATE, out_path, preset="bogus")
    assert not out_path.exists() and list(tmp_path.iterdir()) == []


def test_exception_in_the_block_cleans_up(tmp_path: Path) -> None:
    out_path = tmp_path / "video.mp4"
    encoder = VideoEncoder(out_path, WIDTH, HEIGHT, FPS, tone(0.5), SAMPLE_RATE)
    with pytest.raises(RuntimeError, match="renderer broke"), encoder:
        encoder.write(gradient_frame(0))
        raise RuntimeError("renderer broke")
    assert list(tmp_path.iterdir()) == []


def test_encode_video_from_a_generator_without_audio(tmp_path: Path) -> None:
    out_path = encode_video((gradient_frame(i) for i in range(10)), None, None, tmp_path / "silent.mp4")
    info = probe(out_path)
    assert info["num_frames"] == 10 and info["audio_codec"] is None and "AI-generated" in info["comment"]


def test_re_encoding_copies_the_aac_track_of_the_earlier_video(encoded, tmp_path: Path) -> None:
    earlier, num_frames, audio = encoded
    out_path = tmp_path / "again.mp4"
    silent = np.zeros_like(audio)  # would be heard if the track were encoded from these samples
    with VideoEncoder(out_path, WIDTH, HEIGHT, FPS, silent, SAMPLE_RATE, audio_copy_from=earlier) as encoder:
        for index in range(num_frames):
            encoder.write(gradient_frame(index))
    assert encoder._copy_audio
    info = probe(out_path)
    assert info["audio_codec"] == "aac" and info["num_frames"] == num_frames
    assert info["audio_duration_s"] == pytest.approx(len(audio) / SAMPLE_RATE, abs=0.002)

    def pcm(path: Path) -> bytes:
        command = [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "pipe:1"]
        return subprocess.run(command, capture_output=True, check=True).stdout

    assert pcm(out_path) == pcm(earlier)  # the very same samples, not a second encoding


@pytest.mark.parametrize("earlier", ["missing.mp4", "silent.mp4", "broken.mp4"])
def test_without_a_usable_earlier_track_the_audio_is_encoded(tmp_path: Path, earlier: str) -> None:
    source = tmp_path / earlier
    if earlier == "silent.mp4":
        encode_video((gradient_frame(i) for i in range(5)), None, None, source)
    elif earlier == "broken.mp4":
        source.write_bytes(b"not a video at all")
    out_path = tmp_path / "video.mp4"
    with VideoEncoder(out_path, WIDTH, HEIGHT, FPS, tone(0.4), SAMPLE_RATE, audio_copy_from=source) as encoder:
        for index in range(10):
            encoder.write(gradient_frame(index))
    assert not encoder._copy_audio
    info = probe(out_path)
    assert info["audio_codec"] == "aac" and info["audio_duration_s"] == pytest.approx(0.4, abs=0.002)


def test_colours_come_back_as_they_went_in(tmp_path: Path) -> None:
    """Frames are converted to BT.601 limited-range YUV before ffmpeg, as players assume for SD."""
    swatches = [(255, 255, 255), (0, 0, 0), (200, 40, 30), (30, 160, 60), (40, 60, 200), (230, 190, 150)]
    frame = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    width = WIDTH // len(swatches)
    for index, colour in enumerate(swatches):
        frame[:, index * width : (index + 1) * width] = colour
    out_path = encode_video([frame] * 3, None, None, tmp_path / "swatches.mp4")
    assert (
        "smpte170m"
        in subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-i", str(out_path)], capture_output=True, check=False
        ).stderr.decode()
    )
    reader = imageio_ffmpeg.read_frames(str(out_path))
    reader.__next__()
    decoded = np.frombuffer(next(reader), np.uint8).reshape(HEIGHT, WIDTH, 3).astype(int)
    for index, colour in enumerate(swatches):
        middle = decoded[HEIGHT // 2, index * width + width // 2]
        assert np.abs(middle - np.array(colour)).max() <= 4, (colour, middle)


# ---------------------------------------------------------------- captions


def spans_fixture() -> list[SegmentSpan]:
    return [
        SegmentSpan(0, "neutral", 0.0, "So,", 0.0, 0.3),
        SegmentSpan(1, "pause", 0.0, "", 0.3, 0.7),
        SegmentSpan(2, "neutral", 0.0, "this new", 0.7, 1.1),
        SegmentSpan(3, "emphasis", 0.8, "M4 Mac Mini", 1.1, 1.8),
        SegmentSpan(4, "neutral", 0.0, "is <really> fast & small.", 1.8, 3.0),
        SegmentSpan(5, "pause", 0.0, "", 3.0, 3.5),
        SegmentSpan(
            6,
            "neutral",
            0.0,
            "It handles four streams of eight K video while staying silent and cool on your desk all day long",
            3.5,
            12.0,
        ),
    ]


def test_webvtt_format_and_content(tmp_path: Path) -> None:
    path = write_webvtt(spans_fixture(), tmp_path / "captions.vtt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n")
    times = re.findall(r"^(\d{2}:\d{2}:\d{2}\.\d{3}) --> (\d{2}:\d{2}:\d{2}\.\d{3})$", text, flags=re.MULTILINE)
    assert times[0] == ("00:00:00.000", "00:00:03.000")
    assert "So, this new M4 Mac Mini is &lt;really&gt; fast &amp; small." in text
    assert times[-1][1] == "00:00:12.000"
    assert list(tmp_path.iterdir()) == [path]


def test_webvtt_cues_respect_limits_and_skip_pauses() -> None:
    cues = webvtt_cues(spans_fixture())
    assert len(cues) >= 3  # the long sentence is split
    for start_s, end_s, text in cues:
        assert len(text) <= 80 and end_s - start_s <= 7.0 + 1e-9 and text.strip() == text and text
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(cues))
    joined = " ".join(text for _, _, text in cues)
    assert joined.split() == " ".join(s.text for s in spans_fixture() if s.text).split()
    long_cues = [c for c in cues if c[0] >= 3.5]
    assert long_cues[0][0] == pytest.approx(3.5) and long_cues[-1][1] == pytest.approx(12.0)


def test_webvtt_long_silence_splits_cues() -> None:
    spans = [
        SegmentSpan(0, "neutral", 0.0, "First part", 0.0, 1.0),
        SegmentSpan(1, "pause", 0.0, "", 1.0, 2.5),
        SegmentSpan(2, "neutral", 0.0, "second part", 2.5, 3.5),
    ]
    assert [text for _, _, text in webvtt_cues(spans)] == ["First part", "second part"]
