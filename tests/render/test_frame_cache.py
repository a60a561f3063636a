"""The frame cache's bookkeeping (the renders through it are tested in test_pipeline.py)."""

import numpy as np
import pytest

from persona_video.render.frame_cache import BLOCK_FRAMES, CachedRender, FrameCache, frame_store

H, W = 16, 12  # frames of (24, 12) bytes in YUV 4:2:0


def rendered(key, coeffs, capacity=None):
    block = frame_store(capacity or len(coeffs), H, W)
    frames = block[: len(coeffs)]
    frames[:] = np.arange(len(coeffs), dtype=np.uint8)[:, None, None]
    return CachedRender(key, coeffs.copy(), frames)


def test_the_same_job_gets_its_frames_and_which_rows_still_hold():
    cache = FrameCache()
    coeffs = np.random.default_rng(0).random((30, 70)).astype(np.float32)
    cache.put(rendered(("job", "portrait"), coeffs))
    changed = coeffs.copy()
    changed[[3, 17]] += 0.25
    entry, same, store = cache.checkout(("job", "portrait"), changed, H, W)
    assert entry is not None and store is entry.frames
    assert np.flatnonzero(~same).tolist() == [3, 17]
    assert cache.checkout(("job", "portrait"), changed, H, W)[0] is None  # taken out while drawing


def test_another_job_draws_into_the_old_block_when_it_fits():
    cache = FrameCache()
    old = rendered(("old", "portrait"), np.zeros((40, 70), np.float32))
    base = old.frames.base
    assert base is not None and base.shape[0] == BLOCK_FRAMES  # room for a job of similar length
    cache.put(old)
    del old
    entry, same, store = cache.checkout(("new", "portrait"), np.zeros((120, 70), np.float32), H, W)
    assert entry is None and not same.any()
    assert store.shape == (120, H * 3 // 2, W) and np.shares_memory(store, base)


def test_a_longer_job_or_another_size_gets_a_new_block():
    longer = (np.zeros((BLOCK_FRAMES + 1, 70), np.float32), (H, W))
    other_size = (np.zeros((10, 70), np.float32), (32, 24))
    for coeffs, size in (longer, other_size):
        cache = FrameCache()
        old = rendered(("old", "portrait"), np.zeros((10, 70), np.float32))
        cache.put(old)
        _, _, store = cache.checkout(("new", "portrait"), coeffs, *size)
        assert store.shape == (len(coeffs), size[0] * 3 // 2, size[1])
        assert not np.shares_memory(store, old.frames)


def test_frames_beyond_the_budget_are_not_kept(monkeypatch):
    monkeypatch.setenv("PERSONA_VIDEO_FRAME_CACHE_MB", str(100 * H * 3 // 2 * W / 2**20))
    assert frame_store(100, H, W) is not None and frame_store(101, H, W) is None
    assert frame_store(100, H, W).base.shape[0] == 100  # no spare capacity beyond the budget
    cache = FrameCache()
    cache.put(rendered(("job", "portrait"), np.zeros((100, 70), np.float32)))
    monkeypatch.setenv("PERSONA_VIDEO_FRAME_CACHE_MB", "0")
    entry, same, store = cache.checkout(("job", "portrait"), np.zeros((100, 70), np.float32), H, W)
    assert entry is None and store is None and not same.any()


@pytest.mark.parametrize("rows", [0, 5])
def test_a_different_track_shape_reuses_nothing(rows):
    entry = rendered(("job", "portrait"), np.zeros((10, 70), np.float32))
    assert not entry.same_rows(np.zeros((rows, 70), np.float32)).any()
    assert not entry.same_rows(np.zeros((10, 73), np.float32)).any()


def test_kept_videos_are_found_by_their_coefficients_and_bounded(monkeypatch):
    from persona_video.render import frame_cache

    cache = FrameCache()
    rng = np.random.default_rng(1)
    tracks = [rng.random((20, 70)).astype(np.float32) for _ in range(frame_cache.KEPT_VIDEOS + 2)]
    for i, coeffs in enumerate(tracks):
        cache.keep_video(("job", "portrait"), coeffs, b"mp4 %d" % i, (i, i))
    assert cache.kept_video(("job", "portrait"), tracks[-1].copy()) == (b"mp4 %d" % (len(tracks) - 1), (9, 9))
    assert cache.kept_video(("job", "portrait"), tracks[0]) is None  # the oldest went first
    assert cache.kept_video(("other", "portrait"), tracks[-1]) is None
    nudged = tracks[-1].copy()
    nudged[5, 3] = np.nextafter(nudged[5, 3], np.float32(2))
    assert cache.kept_video(("job", "portrait"), nudged) is None  # bit-identical or nothing
    monkeypatch.setattr(frame_cache, "KEPT_VIDEO_BYTES", 10)
    cache.keep_video(("job", "portrait"), tracks[0], b"x" * 11, None)  # too big to keep
    assert cache.kept_video(("job", "portrait"), tracks[0]) is None
    cache.clear()
    assert cache.kept_video(("job", "portrait"), tracks[-1]) is None
    monkeypatch.setenv("PERSONA_VIDEO_FRAME_CACHE_MB", "0")  # the cache off keeps no videos either
    cache.keep_video(("job", "portrait"), tracks[1], b"mp4", None)
    assert cache.kept_video(("job", "portrait"), tracks[1]) is None
