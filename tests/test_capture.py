"""Frame sources: real clips from ../shared, stills, playlists, truncated files, bad input."""
from __future__ import annotations

import time

import av
import cv2
import numpy as np
import pytest

from app.io.capture import Source, SourceError, list_cameras, open_source
from tests.conftest import shared


def _cv2_frames(path, limit=None):
    cap = cv2.VideoCapture(str(path))
    out = []
    while limit is None or len(out) < limit:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


def test_video_file_delivers_every_frame_with_pts_timestamps():
    path = shared("media", "talking_head_720p.mp4")
    src = open_source(path)
    assert src.size == (1280, 720) and src.fps == pytest.approx(25.0) and not src.is_live
    with src:
        frames = list(src)
    # the header claims 158 frames; the file has 55
    assert len(frames) == 55 == src.frames_read
    assert [f.index for f in frames] == list(range(55))
    ts = np.array([f.timestamp for f in frames])
    np.testing.assert_allclose(ts, np.arange(55) * 0.04, atol=1e-6)
    assert src.error is None and src.frames_dropped == 0
    assert frames[0].image.shape == (720, 1280, 3) and frames[0].image.dtype == np.uint8
    # same pictures as OpenCV's decoder (colour conversion may differ by a few levels)
    ref = _cv2_frames(path, 3)
    for f, r in zip(frames, ref):
        assert np.abs(f.image.astype(int) - r.astype(int)).mean() < 3.0


def test_file_reader_blocks_instead_of_dropping():
    path = shared("media", "clips", "expressions_d0.mp4")
    src = open_source(path, queue_size=1)
    got = []
    with src:
        for f in src:
            if len(got) < 5:
                time.sleep(0.05)    # a slow consumer: the file reader must wait, not drop
            got.append(f.index)
    assert got == list(range(78))
    assert src.frames_dropped == 0 and src.error is None


def test_stop_midway_joins_the_thread():
    src = open_source(shared("media", "clips", "expressions_d3.mp4"), queue_size=2)
    with src:
        for i, f in enumerate(src):
            if i == 4:
                break
    assert src._thread is not None and not src._thread.is_alive()
    assert src.frames_read < 354
    assert src.read() is None   # a stopped source yields nothing more


def test_loop_restarts_with_increasing_timestamps():
    src = open_source(shared("media", "talking_head_720p.mp4"), loop=True)
    ts, idx = [], []
    with src:
        for f in src:
            ts.append(f.timestamp)
            idx.append(f.index)
            if len(ts) == 60:
                break
    assert idx == list(range(60))
    assert np.all(np.diff(ts) > 0)
    assert ts[55] == pytest.approx(2.20, abs=1e-6)   # 55 frames x 0.04 s, then frame 0 again


def test_image_is_a_one_frame_source():
    path = shared("media", "portrait_glasses.jpg")
    frames = list(open_source(str(path)))
    assert len(frames) == 1
    np.testing.assert_array_equal(frames[0].image, cv2.imread(str(path)))
    assert frames[0].timestamp == 0.0 and frames[0].index == 0


def test_still_image_repeated_as_a_clip():
    path = shared("media", "portrait_glasses.jpg")
    src = open_source(path, repeat_seconds=2.0, fps=10)
    frames = list(src)
    assert len(frames) == 20 and src.fps == 10.0
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(20) / 10.0)
    # consumers may draw in place: each frame owns its pixels
    frames[0].image[:] = 0
    np.testing.assert_array_equal(frames[1].image, cv2.imread(str(path)))


def test_playlist_segments_in_order():
    a = shared("media", "portrait_glasses.jpg")
    b = shared("media", "two_faces.jpg")
    src = open_source([(a, 0.5), (b, 1.0), (a, 0.5)], fps=10)
    frames = list(src)
    assert len(frames) == 20
    img_a = cv2.imread(str(a))
    h, w = img_a.shape[:2]
    assert src.size == (w, h)
    img_b = cv2.resize(cv2.imread(str(b)), (w, h), interpolation=cv2.INTER_AREA)
    for f in frames:
        expect = img_b if 5 <= f.index < 15 else img_a
        np.testing.assert_array_equal(f.image, expect)
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(20) / 10.0)


def _write_clip(path, frames, fps=25, options=None):
    c = av.open(str(path), "w", options=options or {})
    s = c.add_stream("libx264", rate=fps)
    h, w = frames[0].shape[:2]
    s.width, s.height, s.pix_fmt = w, h, "yuv420p"
    for img in frames:
        for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()


@pytest.fixture(scope="module")
def small_frames():
    src = open_source(shared("media", "talking_head_720p.mp4"))
    return [cv2.resize(f.image, (320, 180), interpolation=cv2.INTER_AREA) for f in src][:50]


@pytest.mark.parametrize("ext,options", [("mkv", {}), ("mp4", {"movflags": "faststart"})])
def test_truncated_file_stops_cleanly_with_error(tmp_path, small_frames, ext, options):
    full = tmp_path / f"clip.{ext}"
    _write_clip(full, small_frames, options=options)
    n_full = len(list(open_source(full)))
    assert n_full == 50
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    src = open_source(cut)
    frames = list(src)
    assert 0 < len(frames) < 50
    assert src.error is not None and "cut." in src.error and "truncated" in src.error
    # the frames delivered before the break are the real pictures
    for f in frames[:3]:
        assert np.abs(f.image.astype(int) - small_frames[f.index].astype(int)).mean() < 6.0


def test_truncated_plain_mp4_is_refused_at_open(tmp_path, small_frames):
    full = tmp_path / "plain.mp4"
    _write_clip(full, small_frames)   # moov atom at the end: a cut file has no index
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(SourceError, match="cut.mp4"):
        open_source(cut)


@pytest.mark.parametrize("make,match", [
    (lambda d: d / "missing.mp4", "not found"),
    (lambda d: d / "missing.jpg", "not found"),
    (lambda d: (d / "text.mp4").write_text("not a video") and d / "text.mp4", "cannot open video"),
    (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "cannot open video"),
    (lambda d: (d / "bad.jpg").write_bytes(b"\xff\xd8garbage") and d / "bad.jpg", "cannot read image"),
    (lambda d: d, "folder"),
])
def test_bad_input_raises_one_line_source_error(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(SourceError, match=match) as ei:
        open_source(path)
    msg = str(ei.value)
    assert "\n" not in msg and str(path.name) in msg


def test_bad_playlist_segments():
    with pytest.raises(SourceError, match="empty playlist"):
        open_source([])
    with pytest.raises(SourceError, match="seconds must be > 0"):
        open_source([(shared("media", "portrait_glasses.jpg"), 0)])


def test_camera_that_does_not_open(capfd):
    with pytest.raises(SourceError) as ei:
        open_source("9")
    msg = str(ei.value)
    assert msg.startswith("camera 9 does not open")
    assert ("no cameras found" in msg) or ("cameras that open:" in msg)
    cams = list_cameras(4)
    assert isinstance(cams, list) and 9 not in cams
    err = capfd.readouterr().err
    assert "WARN" not in err and "can't open camera" not in err   # OpenCV's noise suppressed


class _FastLiveReader:
    """A stand-in camera: frames as fast as possible, numbered in the pixels."""

    fps = 100.0
    size = (8, 8)
    name = "fake camera"

    def __init__(self, n):
        self.n = n

    def frames(self, state, stop):
        for i in range(self.n):
            if stop.is_set():
                return
            img = np.full((8, 8, 3), i % 256, np.uint8)
            yield img, time.monotonic() - state["t0"]
            time.sleep(0.001)

    def close(self):
        pass


def test_live_source_drops_oldest_and_never_lags():
    src = Source(_FastLiveReader(200), is_live=True, queue_size=2)
    got = []
    with src:
        for f in src:
            got.append((f.index, f.timestamp))
            time.sleep(0.02)            # a slow consumer
    idx = [i for i, _ in got]
    assert src.frames_read == 200
    assert src.frames_dropped > 100 and len(got) + src.frames_dropped == 200
    assert idx == sorted(idx) and idx[-1] == 199          # the newest frame is always delivered
    assert all(b > a for (_, a), (_, b) in zip(got, got[1:]))


def test_live_source_hands_over_the_newest_frame_with_the_default_queue():
    """Whatever the queue size, a slow consumer gets the frame captured last, not a queued older one."""
    src = Source(_FastLiveReader(300), is_live=True)          # default queue_size (4)
    lags = []
    with src:
        for f in src:
            lags.append(src.frames_read - 1 - f.index)   # frames captured after the one delivered
            time.sleep(0.02)
    assert len(lags) > 5 and len(lags) + src.frames_dropped == 300
    assert max(lags) <= 1, lags          # a frame may arrive between the hand-over and the check


def test_realtime_file_is_paced_and_drops_like_a_camera():
    img = shared("media", "portrait_glasses.jpg")
    src = open_source([(img, 1.0)], fps=20, realtime=True, queue_size=1)
    t0 = time.monotonic()
    n = len(list(src))
    elapsed = time.monotonic() - t0
    assert n == 20 and src.frames_dropped == 0
    assert 0.9 < elapsed < 3.0               # 20 frames at 20 fps take ~0.95 s, not a few ms
    slow = open_source([(img, 1.0)], fps=20, realtime=True, queue_size=1)
    got = []
    with slow:
        for f in slow:
            got.append(f.index)
            time.sleep(0.15)                  # slower than the clip: drop, do not fall behind
    assert slow.frames_dropped > 5 and len(got) + slow.frames_dropped == 20
    assert got[-1] == 19 and got == sorted(got)


def test_display_rotation_of_phone_clips_is_applied(tmp_path):
    """A clip whose mp4 track matrix says "rotate 90" (what phones write for portrait video):
    the stored 64x32 frame is shown turned clockwise, 32 wide and 64 high (ffmpeg's autorotate)."""
    import struct

    img = np.zeros((32, 64, 3), np.uint8)
    img[:, :8] = 255                 # left columns white
    img[:4, 8:] = (0, 0, 255)        # top rows red
    plain = tmp_path / "plain.mp4"
    _write_clip(plain, [img] * 3)
    data = bytearray(plain.read_bytes())
    m = data.find(b"tkhd") + 4 + 40          # version-0 tkhd: the 3x3 matrix starts 40 bytes in
    assert struct.unpack(">9i", data[m:m + 36]) == (1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
    data[m:m + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)
    rotated = tmp_path / "portrait.mp4"
    rotated.write_bytes(bytes(data))
    src = open_source(rotated)
    assert src.size == (32, 64)
    out = list(src)[0].image
    assert out.shape == (64, 32, 3)
    assert out[:6, :].min() > 200                       # white now along the top
    red = (out[..., 2] > 150) & (out[..., 1] < 100)
    assert red[10:, -3:].mean() > 0.9 and not red[:, :20].any()   # red now along the right side
    assert list(open_source(plain))[0].image.shape == (32, 64, 3)


class FlakyCamera:
    """Stand-in for the device behind cv2.VideoCapture(index): delivers ``first`` frames, then
    read() fails (what OpenCV does when a USB camera is pulled out); the next ``down`` attempts to
    reopen it fail (isOpened() False), then it opens again and delivers frames numbered on from
    where it stopped. ``install(monkeypatch)`` makes cv2.VideoCapture open it."""

    def __init__(self, first=12, down=3, size=(64, 48), noise=False, period=0.002):
        self.first, self.down, self.size = first, down, size
        self.noise, self.period = noise, period      # noise: frames that do not compress
        self.rng = np.random.default_rng(0)
        self.delivered = 0
        self.opens = 0
        self.failed_opens = 0
        self.unplugged = False
        self.caps = []

    def install(self, monkeypatch):
        import app.io.capture as cap_mod

        monkeypatch.setattr(cap_mod.cv2, "VideoCapture", self._open)
        monkeypatch.setattr(cap_mod, "RETRY_DELAYS_S", (0.01, 0.02, 0.05))
        return self

    def _open(self, index, *a):
        self.opens += 1
        ok = True
        if self.unplugged:
            if self.failed_opens < self.down:
                self.failed_opens += 1
                ok = False
            else:
                self.unplugged = False
        cap = _Cap(self, ok)
        self.caps.append(cap)
        return cap


class _Cap:
    def __init__(self, dev, ok):
        self.dev, self.ok, self.released = dev, ok, False

    def isOpened(self):
        return self.ok

    def set(self, *a):
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        d = self.dev
        if not self.ok or d.unplugged or self.released:
            return False, None
        if d.delivered == d.first and d.failed_opens == 0:
            d.unplugged = True                   # pulled out after `first` frames
            return False, None
        d.delivered += 1
        time.sleep(d.period)
        if d.noise:       # 8x8 blocks of random grey: no face in it, and it does not compress
            g = d.rng.integers(0, 255, (d.size[1] // 8, d.size[0] // 8, 1), dtype=np.uint8)
            return True, np.ascontiguousarray(np.repeat(np.repeat(g, 8, 0), 8, 1).repeat(3, 2))
        return True, np.full((d.size[1], d.size[0], 3), d.delivered % 256, np.uint8)

    def release(self):
        self.released = True


def test_camera_unplugged_midway_is_retried_and_resumes(monkeypatch):
    dev = FlakyCamera(first=12, down=3).install(monkeypatch)
    src = open_source(0, queue_size=64)
    assert src.is_live and src.size == (64, 48) and src.fps == 30.0
    got, events = [], []
    t_end = time.time() + 20
    while (not got or got[-1].image[0, 0, 0] < 40) and time.time() < t_end:
        f = src.read(timeout=0.1)
        events += src.pop_events()
        if f is not None:
            got.append(f)
    src.stop()
    events += src.pop_events()
    assert [e.kind for e in events] == ["lost", "back"]
    lost, back = events
    assert lost.message == "camera 0: stopped delivering frames (unplugged or in use?); retrying"
    assert back.message.startswith("camera 0: delivering frames again after") and back.lost_s > 0
    assert back.t - lost.t == pytest.approx(back.lost_s, abs=1e-6)
    assert dev.failed_opens == 3 and dev.opens == 5        # the first open, 3 failed retries, 1 good
    vals = [int(f.image[0, 0, 0]) for f in got]
    assert vals == sorted(set(vals)) and vals[-1] >= 40            # in order; frames 13.. after the gap
    assert all(f.timestamp <= lost.t for f, v in zip(got, vals) if v <= 12)
    assert all(f.timestamp >= back.t - 1e-6 for f, v in zip(got, vals) if v > 12)
    assert not src.lost and src.error is None
    assert all(c.released for c in dev.caps)


def test_camera_lost_for_good_keeps_retrying_until_stopped(monkeypatch):
    dev = FlakyCamera(first=3, down=10 ** 9).install(monkeypatch)
    src = open_source(0)
    t_end = time.time() + 5
    while dev.failed_opens < 5 and time.time() < t_end:
        src.read(timeout=0.05)
    assert [e.kind for e in src.pop_events()] == ["lost"] and src.lost
    assert dev.failed_opens >= 5 and not src.finished
    t = time.time()
    src.stop()                                   # stops between two retries, promptly
    assert time.time() - t < 1.0


def test_video_file_frames_are_pyav_bgr_pixels_exactly():
    """The source converts with one swscale context for the whole file and decodes with one
    thread up to 1080p: the same pixels as PyAV's own per-frame ``to_ndarray(format="bgr24")``
    with FFmpeg's default threads."""
    path = shared("media", "clips", "expressions_d13.mp4")
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        ref = [f.to_ndarray(format="bgr24") for _, f in zip(range(40), c.decode(video=0))]
    src = open_source(path)
    with src:
        got = [f.image for _, f in zip(range(40), src)]
    assert len(got) == 40
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
