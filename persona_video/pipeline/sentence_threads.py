"""The two helper threads of a streamed job (``streaming``): the writer's, which forwards the
script stage's events and hands each sentence on as soon as it is final, and the speech
thread's, which speaks each sentence as it comes. Both report on one queue, in order of
arrival; a failure travels to the caller's thread with the stage it happened in."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import Cancelled
from ..types import split_sentences

if TYPE_CHECKING:
    from ..types import StageEvent

END = object()  # no more sentences


def stop_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("the job was cancelled while it was being made")


class ThreadFailed(Exception):
    """A helper thread's failure, carried to the caller's thread with the stage it happened in."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(stage)
        self.stage, self.error = stage, error


class SentenceThreads:
    """The writer and speech threads and the queue they report on, in order of arrival."""

    def __init__(self) -> None:
        self.reports: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.sentences: queue.Queue[Any] = queue.Queue()
        self.stop = threading.Event()  # the caller gave up (cancelled, failed or closed)
        self.threads: list[threading.Thread] = []

    def start(self, name: str, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self) -> None:
        self.stop.set()
        self.sentences.put(END)
        for thread in self.threads:
            thread.join(timeout=30)

    def next_report(self, cancel: threading.Event | None) -> tuple[str, Any]:
        """The next thing the threads report; Cancelled once ``cancel`` is set."""
        while True:
            stop_if_cancelled(cancel)
            try:
                return self.reports.get(timeout=0.1)
            except queue.Empty:
                continue


def write_sentences(threads: SentenceThreads, script_events: Iterator[StageEvent]) -> None:
    """The writer's thread: forwards the script stage's events and hands each final sentence to
    the speech thread as soon as it is final (the finished script's own cut for the rest)."""
    handed = 0
    try:
        for event in script_events:
            if threads.stop.is_set():
                return
            threads.reports.put(("event", event))
            if event.stage == "script_draft":
                sentences = event.result.sentences
            elif event.stage == "script":
                sentences = split_sentences(event.result.intent)
            else:
                continue
            for sentence in sentences[handed:]:
                threads.sentences.put(sentence)
            handed = max(handed, len(sentences))
    except BaseException as e:  # the caller raises it, in the script stage
        threads.reports.put(("failed", ThreadFailed("script", e)))
    finally:
        threads.sentences.put(END)


def speak_sentences(threads: SentenceThreads, speech_stream: Any, cancel: threading.Event | None) -> None:
    """The speech thread: each sentence spoken as it comes; the speech so far after each."""
    try:
        while True:
            sentence = threads.sentences.get()
            if threads.stop.is_set() or (cancel is not None and cancel.is_set()):
                return
            started = time.perf_counter()
            if sentence is END:
                chunk = speech_stream.finish()
                threads.reports.put(("speech", (chunk, speech_stream.speech(), True, time.perf_counter() - started)))
                return
            chunk = speech_stream.add(sentence)
            threads.reports.put(("speech", (chunk, speech_stream.speech(), False, time.perf_counter() - started)))
    except BaseException as e:
        threads.reports.put(("failed", ThreadFailed("speech", e)))


__all__ = ["END", "SentenceThreads", "ThreadFailed", "speak_sentences", "stop_if_cancelled", "write_sentences"]
