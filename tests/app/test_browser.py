"""The page in a real browser: `python app.py` on a loopback port, Debian's
chromium driven through Playwright. Pick a persona, type a prompt, Generate,
wait for a playable video, move a governor slider, Re-render, see a new video.
Screenshots go to test-artifacts/ (gitignored) for a human to look at."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("PERSONA_VIDEO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",  # the live player starts with its sound on, as after a click
]
VIDEO_READY = """(old) => {
    const video = document.querySelector('#video video');
    return !!video && video.readyState >= 1 && !!video.currentSrc && video.currentSrc !== old;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The outputs folder of each app a test serves, by its URL.
OUTPUTS_OF: dict[str, Path] = {}
#: The log of each app served, by URL.
LOG_OF: dict[str, Path] = {}


def wait_for_log(url: str, text: str, timeout_s: float = 60.0) -> None:
    """Until the served app's log has ``text`` (the server's background warm-up says when it is done)."""
    deadline = time.monotonic() + timeout_s
    while text not in LOG_OF[url].read_text(errors="replace"):
        if time.monotonic() > deadline:
            pytest.fail(f"the app never logged {text!r}:\n{LOG_OF[url].read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def serve_app(tmp_path_factory: pytest.TempPathFactory, **extra_env: str) -> Iterator[str]:
    """`python app.py` as a user runs it, on 127.0.0.1 and a free port; yields its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("app") / "app.log"
    outputs = tmp_path_factory.mktemp("outputs")
    OUTPUTS_OF[f"http://127.0.0.1:{port}/"] = outputs
    LOG_OF[f"http://127.0.0.1:{port}/"] = log_path
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "PERSONA_VIDEO_OUTPUTS": str(outputs),
        "PERSONA_VIDEO_FETCH": "0",  # never download the script model from a test
        **extra_env,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"app.py did not serve {url}:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_app(tmp_path_factory)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_generate_then_rerender_in_the_browser(app_url: str, browser) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_url)
    page.locator("#generate").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "01-start.png"), full_page=True)

    # Clicking a portrait picks the persona and loads its governor defaults into the sliders.
    smoothing = page.locator("#gov-pose_smoothing_s input[type=number]")
    assert float(smoothing.input_value()) == pytest.approx(0.24)
    page.locator(
        "#persona-gallery button[aria-label^='Thumbnail']", has=page.locator("img[alt='iJustine style']")
    ).click()
    expect(page.get_by_label("iJustine style")).to_be_checked()
    page.wait_for_function("() => document.querySelector('#gov-pose_smoothing_s input[type=number]').value == '0.12'")

    page.locator("#prompt textarea").fill("Explain the M4 Mac Mini")
    page.locator("#generate").click()
    page.wait_for_function(VIDEO_READY, arg="", timeout=120_000)
    first_src = page.evaluate("() => document.querySelector('#video video').currentSrc")
    page.locator("#status").get_by_text("Done").wait_for(timeout=30_000)
    assert "M4" in page.locator("#script textarea").input_value()
    assert page.locator("#stages table").count() == 1
    assert page.locator("#audio audio, #audio [data-testid='waveform-Speech'], #audio .waveform-container").count()
    assert page.locator("#plot img, #plot canvas, #plot svg").count() >= 1
    response = page.request.get(first_src)
    assert response.status == 200 and response.headers["content-type"].startswith("video/mp4")
    page.screenshot(path=str(ARTIFACTS / "02-generated.png"), full_page=True)

    # Move the emphasis slider with the keyboard, as a user would, then re-render.
    emphasis = page.locator("#gov-emphasis_gain input[type=range]")
    emphasis.focus()
    for _ in range(8):
        emphasis.press("ArrowRight")
    assert float(page.locator("#gov-emphasis_gain input[type=number]").input_value()) == pytest.approx(1.2)
    page.locator("#rerender").click()
    page.wait_for_function(VIDEO_READY, arg=first_src, timeout=60_000)
    second_src = page.evaluate("() => document.querySelector('#video video').currentSrc")
    assert second_src != first_src
    response = page.request.get(second_src)
    assert response.status == 200 and response.headers["content-type"].startswith("video/mp4")
    page.locator("#status").get_by_text("Re-rendered").wait_for(timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "03-rerendered.png"), full_page=True)

    # "Generate another" clears the result without reloading the page.
    page.locator("#another").click()
    page.wait_for_function("() => !document.querySelector('#video video')")
    assert page.locator("#prompt textarea").input_value() == ""
    page.screenshot(path=str(ARTIFACTS / "04-another.png"), full_page=True)
    page.close()


def test_gradio_client_drives_the_same_events(app_url: str) -> None:
    """The README's client example: generate, then re-render the same job in the same session."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(app_url, verbose=False)
    card, temperature, max_tokens, enabled, *gains = client.predict("mkbhd", api_name="/persona_defaults")
    assert "MKBHD style" in card and gains[-1] == pytest.approx(0.24)
    status, script, audio, _plot, video, files, stages, _auto, *_live = client.predict(
        "mkbhd", "Explain the M4 Mac Mini", None, None, temperature, max_tokens, 0, "auto",
        "auto", "auto", "auto", "auto", "crop", False, enabled, *gains,
        api_name="/generate",
    )  # fmt: skip
    assert status.startswith("**Done**") and "M4" in script and "| video |" in stages
    assert Path(audio).stat().st_size > 10_000 and Path(video).read_bytes()[4:8] == b"ftyp"
    assert sorted(Path(f).name for f in files) == ["captions.vtt", "video.mp4"]
    job_id = re.search(r"job `([0-9a-f]{32})`", status).group(1)
    rerendered, _script, _audio, _plot, new_video, *_ = client.predict(
        True, 0.0, 0.5, 1.5, 3.0, 0.24, api_name="/rerender"
    )
    assert rerendered.startswith("**Re-rendered**") and f"job `{job_id}`" in rerendered
    assert Path(new_video).read_bytes() != Path(video).read_bytes()
    with pytest.raises(AppError, match="maximum"):  # the sliders' ranges hold for API calls too
        client.predict(True, 9.0, 0.5, 1.5, 3.0, 0.24, api_name="/rerender")


#: Records every value the script box shows, with the time, until the status says Done.
RECORD_SCRIPT = """() => {
    window.__scripts = [];
    const box = document.querySelector('#script textarea');
    window.__recorder = setInterval(() => {
        const last = window.__scripts[window.__scripts.length - 1];
        if (!last || last.value !== box.value) window.__scripts.push({value: box.value, t: performance.now()});
    }, 20);
}"""


@pytest.fixture(scope="module")
def writing_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight model big enough (8 layers, 512 wide, 100 MB) that writing a script takes
    about two seconds here: the tests' tiny model can write all of it within one draft interval
    (80 ms) when the cores are idle, and the page then has only the finished script to show."""
    from persona_video.script.random_gguf import ModelShape, write_model

    shape = ModelShape(embedding=512, layers=8, heads=4, kv_heads=2, feed_forward=1536)
    return write_model(tmp_path_factory.mktemp("llm") / "writing-random.gguf", shape, seed=0)


def test_the_local_model_streams_the_script_into_the_page(tmp_path_factory, writing_gguf, browser) -> None:
    """A GGUF given by path: the script box grows as the model writes, the stage table says local."""
    for url in serve_app(tmp_path_factory, PERSONA_VIDEO_LLM_GGUF=str(writing_gguf)):
        wait_for_log(url, "warm-up: script model")  # the server's warm-up done: the writer has the cores
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("#generate").wait_for(timeout=30_000)
        page.locator("#prompt textarea").fill("How does a heat pump keep a house warm in winter?")
        page.evaluate(RECORD_SCRIPT)
        page.locator("#generate").click()
        page.locator("#status").get_by_text("Done").wait_for(timeout=120_000)
        values = [v["value"] for v in page.evaluate("() => window.__scripts") if v["value"]]
        final = page.locator("#script textarea").input_value()
        # the box showed the script growing: several partial texts, each extending the one before
        partial = values[:-1]
        assert len(partial) >= 2, values
        assert any(b.startswith(a) and len(b) > len(a) for a, b in zip(partial, partial[1:]))
        assert final and page.locator("#stages").get_by_text(f"local ({writing_gguf.name})").count() == 1
        page.screenshot(path=str(ARTIFACTS / "05-local-model.png"), full_page=True)
        page.close()


#: Every 50 ms: the live player's time and whether it plays, the finished player's, and the status.
RECORD_PLAYBACK = """() => {
    window.__playback = [];
    window.__recorder = setInterval(() => {
        const live = document.querySelector('#live video');
        const done = document.querySelector('#video video');
        window.__playback.push({
            t: performance.now(),
            live: live ? live.currentTime : null,
            livePlaying: !!live && !live.paused,
            done: done && done.currentSrc ? done.currentTime : null,
            donePlaying: !!done && !done.paused,
            status: document.querySelector('#status').innerText,
        });
    }, 50);
}"""


def test_the_video_plays_while_it_is_made(app_url: str, browser, tmp_path: Path) -> None:
    """Generate: the presenter speaks in the live player while the job still runs; the finished
    MP4 takes over where the live one got to, and its sound and head motion are seamless at the
    segment joins (measured on the file the page serves)."""
    import subprocess

    import numpy as np

    from persona_video.bench import BENCH_SCRIPT
    from persona_video.encode.probe import ffmpeg_exe

    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_url)
    page.locator("#generate").wait_for(timeout=30_000)
    page.locator("#script textarea").fill(" ".join([BENCH_SCRIPT] * 2))  # about 50 s of speech
    page.evaluate(RECORD_PLAYBACK)
    page.locator("#speak").click()
    page.locator("#status").get_by_text("Done").wait_for(timeout=180_000)
    status_text = page.locator("#status").inner_text()
    page.wait_for_timeout(1500)  # the finished video takes over
    records = page.evaluate("() => window.__playback")
    playing = [r for r in records if r["livePlaying"] and r["live"] and r["live"] > 0.2]
    assert playing, "the live player never played"
    assert "Done" not in playing[0]["status"], "the first chunk only played after the job had ended"
    assert any("Playing" in r["status"] for r in records)
    handed = [r for r in records if r["donePlaying"] and r["done"]]
    assert handed, "the finished video did not take over"
    # it went on from where the live player was, not from the start
    last_live = max(r["live"] for r in records if r["live"] is not None)
    assert handed[0]["done"] >= min(last_live, 1.0) - 0.5
    page.screenshot(path=str(ARTIFACTS / "06-streamed.png"), full_page=True)

    video_src = page.evaluate("() => document.querySelector('#video video').currentSrc")
    audio_src = page.evaluate("() => document.querySelector(\"#audio a[download='audio.wav']\")?.href || ''")
    assert audio_src, "the speech player has no audio"
    video, wav = tmp_path / "video.mp4", tmp_path / "audio.wav"
    video.write_bytes(page.request.get(video_src).body())
    wav.write_bytes(page.request.get(audio_src).body())
    page.close()

    from persona_video.speech import read_wav

    spoken, rate = read_wav(wav)
    command = [ffmpeg_exe(), "-v", "error", "-i", str(video), "-f", "s16le", "-ac", "1", "-ar", str(rate), "pipe:1"]
    heard = np.frombuffer(subprocess.run(command, capture_output=True, check=True).stdout, "<i2") / 32767.0
    loud = np.sqrt(np.mean(spoken**2))
    # sound: at every segment join (one a second) the file's audio is the speech, sample for sample
    # within AAC's error: a gap or a click would be of the speech's own size
    for join_s in range(1, int(len(spoken) / rate)):
        window = slice(join_s * rate - rate // 50, join_s * rate + rate // 50)
        difference = np.sqrt(np.mean((heard[window] - spoken[window]) ** 2))
        assert difference < 0.1 * loud + 2e-3, (join_s, difference, loud)
    # picture: every frame at a join is the frame the job's motion makes (within the codec's error,
    # as elsewhere), and the head path steps across a join no more than it does anywhere else
    job_id = re.search(r"job `?([0-9a-f]{32})", status_text).group(1)
    governed = np.load(OUTPUTS_OF[app_url] / f"persona_{job_id}" / "motion_governed.npy")
    from persona_video.personas import load_persona
    from persona_video.render.stage import load_portrait_for

    animator = load_portrait_for(load_persona("mkbhd"), None, "crop").animator
    decoded = [np.frombuffer(f, np.uint8).reshape(animator.height, animator.width, 3) for f in frames_of(video)]
    assert len(decoded) == len(governed)
    joins = [f for k in range(25, len(governed), 25) for f in (k - 1, k)]
    probes = sorted({*joins, *range(12, len(governed), 25)})  # the joins and the middle of every segment

    def error(index: int) -> float:
        return float(np.abs(decoded[index].astype(int) - animator.render_frame(governed[index]).astype(int)).mean())

    errors = {index: error(index) for index in probes}
    middle = np.median([errors[i] for i in probes if i not in joins])
    assert max(errors[i] for i in joins) <= 1.5 * middle + 1.0, (middle, {i: errors[i] for i in joins})
    steps = np.abs(np.diff(governed[:, 64:70], axis=0)).max(axis=1)
    at_joins = [steps[k - 1] for k in range(25, len(governed), 25)]
    elsewhere = np.delete(steps, [k - 1 for k in range(25, len(governed), 25)])
    assert max(at_joins) <= elsewhere.max()


def frames_of(video: Path) -> list[bytes]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(video))
    reader.__next__()
    return list(reader)
