"""Recording writer: read the files back with PyAV and OpenCV; fragmented MP4 (crash-safe), keyframe
spacing, kill -9, a full disk, bad paths."""
from __future__ import annotations

import logging
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from app.io import writer as writer_mod
from app.io.capture import open_source
from app.io.writer import OutputError, VideoWriter
from tests.conftest import decoded_frames, shared


@pytest.fixture(scope="module")
def real_frames():
    """30 real frames (talking head), 640x360, with their source timestamps."""
    src = open_source(shared("media", "talking_head_720p.mp4"))
    out = []
    for f in src:
        out.append((cv2.resize(f.image, (640, 360), interpolation=cv2.INTER_AREA), f.timestamp))
        if len(out) == 30:
            break
    src.stop()
    return out


def _pyav_read(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.to_ndarray(format="bgr24"), f.time) for f in c.decode(s)]
        return frames, s.codec_context.name, (s.width, s.height)


def _cv2_count(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return n, fps


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def _boxes(path) -> list[bytes]:
    """The top-level MP4 box types of a file, in order."""
    data, out, i = Path(path).read_bytes(), [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 8])
        if size < 8:
            break
        i += size
    return out


def _keyframe_times(path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [float(p.pts * s.time_base) for p in c.demux(s) if p.pts is not None and p.is_keyframe]


def test_h264_roundtrip_frames_size_timing_quality(tmp_path, real_frames):
    out = tmp_path / "rec.mp4"
    with VideoWriter(out, 25, (640, 360)) as w:
        assert w.backend == "pyav-libx264"
        for img, t in real_frames:
            w.write(img, t)
        assert out.exists()                  # written under its final name while recording
    assert w.frames_written == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.mp4"]
    boxes = _boxes(out)                      # fragmented: header first, then moof/mdat pairs
    assert boxes[:2] == [b"ftyp", b"moov"] and b"moof" in boxes and boxes[-1] == b"mfra"
    frames, codec, size = _pyav_read(out)
    assert codec == "h264" and size == (640, 360) and len(frames) == 30
    np.testing.assert_allclose([t for _, t in frames], [t for _, t in real_frames], atol=1e-3)
    assert min(_psnr(a, b) for (a, _), (b, _) in zip(frames, real_frames)) > 30.0
    n, fps = _cv2_count(out)
    assert n == 30 and fps == pytest.approx(25.0, abs=0.5)


def test_timestamps_drive_timing_and_stay_increasing(tmp_path, real_frames):
    out = tmp_path / "irregular.mp4"
    ts = [0.0, 0.1, 0.15, 0.4, 0.4, 0.3, 1.0]   # a repeat and a step back: forced to increase
    with VideoWriter(out, 25, (640, 360)) as w:
        for (img, _), t in zip(real_frames, ts):
            w.write(img, t + 5.0)                  # source clock need not start at 0
    got = [t for _, t in _pyav_read(out)[0]]
    assert len(got) == 7
    np.testing.assert_allclose(got[:4], [0.0, 0.1, 0.15, 0.4], atol=1e-3)
    assert np.all(np.diff(got) > 0)
    assert got[6] == pytest.approx(1.0, abs=1e-3)


def test_without_timestamps_frames_are_one_over_fps_apart(tmp_path, real_frames):
    out = tmp_path / "cfr.mp4"
    with VideoWriter(out, 10, (640, 360)) as w:
        for img, _ in real_frames[:5]:
            w.write(img)
    np.testing.assert_allclose([t for _, t in _pyav_read(out)[0]], np.arange(5) / 10.0, atol=1e-3)


def test_odd_size_is_padded_to_even(tmp_path, real_frames):
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, 25, (321, 181)) as w:
        for img, t in real_frames[:4]:
            w.write(np.ascontiguousarray(img[:181, :321]), t)
    frames, _, size = _pyav_read(out)
    assert size == (322, 182) and len(frames) == 4
    assert _psnr(frames[0][0][:181, :321], real_frames[0][0][:181, :321]) > 30.0


def test_record_scale_area_averages_to_the_smaller_size_and_pads_it_to_even(tmp_path, real_frames):
    """--record-scale: the frames are averaged down (cv2.INTER_AREA) before they are encoded; an odd
    scaled size is padded to even like any other."""
    out = tmp_path / "half.mp4"
    with VideoWriter(out, 25, (640, 360), scale=0.5) as w:
        for img, t in real_frames[:6]:
            w.write(img, t)
    frames, _, size = _pyav_read(out)
    assert size == (320, 180) and len(frames) == 6
    want = [cv2.resize(img, (320, 180), interpolation=cv2.INTER_AREA) for img, _ in real_frames[:6]]
    assert min(_psnr(a, b) for (a, _), b in zip(frames, want)) > 30.0
    # the full-size frame is not what was recorded (a crop or a nearest-pixel pick would be far off)
    assert _psnr(frames[0][0], real_frames[0][0][::2, ::2]) < _psnr(frames[0][0], want[0])
    odd = tmp_path / "scaled.mp4"
    with VideoWriter(odd, 25, (640, 360), scale=0.3) as w:       # 192 x 108
        w.write(real_frames[0][0], 0.0)
    assert _pyav_read(odd)[2] == (192, 108)
    with VideoWriter(tmp_path / "odd4.mp4", 25, (640, 360), scale=0.33) as w:   # 211 x 119 -> 212 x 120
        w.write(real_frames[0][0], 0.0)
    assert _pyav_read(tmp_path / "odd4.mp4")[2] == (212, 120)


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5])
def test_a_record_scale_outside_0_1_is_one_error_line_and_no_file(tmp_path, scale):
    out = tmp_path / "x.mp4"
    with pytest.raises(OutputError, match=r"--record-scale must be in \(0, 1\]"):
        VideoWriter(out, 25, (640, 360), scale=scale)
    assert not out.exists()


def test_a_keyframe_and_a_fragment_at_least_every_2_s_of_timestamps(tmp_path, real_frames):
    """30 fps for 3 s, then a stall to 5 fps (a slow camera): keyframes follow the timestamps."""
    out = tmp_path / "k.mp4"
    ts = [i / 30 for i in range(90)] + [3.0 + i / 5 for i in range(1, 26)]
    with VideoWriter(out, 30, (640, 360)) as w:
        for i, t in enumerate(ts):
            w.write(real_frames[i % 30][0], t)
    keys = _keyframe_times(out)
    assert keys[0] == 0.0
    gaps = np.diff(keys + [ts[-1]])
    assert gaps.max() <= 2.0 + 1e-6, keys
    assert _boxes(out).count(b"moof") >= len(keys)
    assert len(_pyav_read(out)[0]) == len(ts)


def test_the_kept_input_frame_gives_the_bytes_of_a_new_frame_per_write(tmp_path, real_frames, monkeypatch):
    """libx264 gets one kept frame, refilled on each write (VideoWriter._yuv_frame): the file is
    byte for byte the one written with a new frame per write, forced keyframes (a stall in the
    timestamps) and an odd size (padded) included; every frame is not a keyframe."""
    if not writer_mod._pyav_h264_available():
        pytest.skip("libx264 is not in PyAV's FFmpeg")
    ts = [i / 30 for i in range(75)] + [2.5 + i / 5 for i in range(1, 16)]
    frames = [real_frames[i % 30][0][:359, :639] for i in range(len(ts))]

    def write(path):
        with VideoWriter(path, 30, (639, 359)) as w:
            for f, t in zip(frames, ts):
                w.write(f, t)

    kept, fresh = tmp_path / "kept.mp4", tmp_path / "fresh.mp4"
    write(kept)
    monkeypatch.setattr(VideoWriter, "_yuv_frame", lambda self, img: av.VideoFrame.from_ndarray(
        cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), format="yuv420p"))
    write(fresh)
    assert kept.read_bytes() == fresh.read_bytes()
    keys = _keyframe_times(kept)
    assert 3 <= len(keys) < len(ts) // 4
    got = _pyav_read(kept)[0]
    assert len(got) == len(ts) and got[0][0].shape == (360, 640, 3)


def test_writer_closed_after_an_exception_still_plays(tmp_path, real_frames):
    out = tmp_path / "crash.mp4"
    with pytest.raises(ZeroDivisionError):
        with VideoWriter(out, 25, (640, 360)) as w:
            for i, (img, t) in enumerate(real_frames):
                w.write(img, t)
                if i == 9:
                    1 / 0
    w.close()   # idempotent (e.g. again in a finally / atexit)
    assert _cv2_count(out)[0] == 10
    assert len(_pyav_read(out)[0]) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash.mp4"]
    with pytest.raises(RuntimeError, match="closed"):
        w.write(real_frames[0][0])


def test_no_frames_leaves_no_file(tmp_path):
    out = tmp_path / "nothing.mp4"
    w = VideoWriter(out, 25, (64, 48))
    assert w.close() is None
    assert list(tmp_path.iterdir()) == []


def test_abort_discards(tmp_path, real_frames):
    out = tmp_path / "aborted.mp4"
    w = VideoWriter(out, 25, (640, 360))
    w.write(real_frames[0][0], 0.0)
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_untouched_until_the_first_frame(tmp_path):
    out = tmp_path / "old.mp4"
    out.write_bytes(b"an older recording")
    w = VideoWriter(out, 25, (64, 48))      # the path is probed without truncating it
    assert out.read_bytes() == b"an older recording"
    assert w.close() is None and out.read_bytes() == b"an older recording"


@pytest.mark.parametrize("make,match", [
    (lambda d: d / "no_such_dir" / "out.mp4", "does not exist"),
    (lambda d: (d / "afile").write_text("x") and d / "afile" / "out.mp4", "does not exist"),
    (lambda d: d, "is a folder"),
    (lambda d: d / "bad\0name.mp4", "cannot record"),
])
def test_unwritable_path_fails_at_construction(tmp_path, make, match):
    before = sorted(p.name for p in tmp_path.iterdir())
    path = make(tmp_path)
    with pytest.raises(OutputError) as ei:
        VideoWriter(path, 25, (64, 48))
    assert match in str(ei.value) and "\n" not in str(ei.value)
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after == before or after == sorted(before + ["afile"])


def test_bad_arguments(tmp_path):
    with pytest.raises(OutputError, match="frame rate"):
        VideoWriter(tmp_path / "a.mp4", 0, (64, 48))
    with pytest.raises(OutputError, match="unknown codec"):
        VideoWriter(tmp_path / "a.mp4", 25, (64, 48), codec="vp9")
    assert list(tmp_path.iterdir()) == []
    w = VideoWriter(tmp_path / "a.mp4", 25, (64, 48))
    with pytest.raises(ValueError, match="differs"):
        w.write(np.zeros((50, 64, 3), np.uint8))
    w.abort()


def test_mp4v_fallback_is_announced_and_fragmented_too(tmp_path, real_frames, monkeypatch, caplog):
    monkeypatch.setattr(writer_mod, "_pyav_h264_available", lambda: False)
    out = tmp_path / "fallback.mp4"
    with caplog.at_level(logging.WARNING, logger="app.io.writer"):
        w = VideoWriter(out, 25, (640, 360))
    assert w.backend == "pyav-mpeg4"
    assert any("libx264" in r.getMessage() and "mp4v" in r.getMessage() for r in caplog.records)
    for img, t in real_frames[:8]:
        w.write(img, t)
    w.close()
    n, fps = _cv2_count(out)
    assert n == 8 and fps == pytest.approx(25.0, abs=0.5)
    frames, codec, _ = _pyav_read(out)
    assert codec == "mpeg4" and len(frames) == 8
    assert min(_psnr(a, b) for (a, _), (b, _) in zip(frames, real_frames)) > 28.0
    assert b"moof" in _boxes(out)


def test_ctrl_c_without_close_still_leaves_a_playable_file(tmp_path):
    """Ctrl-C (an uncaught KeyboardInterrupt) in a script that never calls close(): the atexit
    hook finalises the recording, which then plays to the last written frame."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    out = tmp_path / "interrupted.mp4"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from app.io.writer import VideoWriter
        w = VideoWriter({str(out)!r}, 25, (96, 64))
        for i in range(100):
            w.write(np.full((64, 96, 3), (i * 7) % 256, np.uint8), i / 25)
            if i == 11:
                os.kill(os.getpid(), signal.SIGINT)
    """)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "KeyboardInterrupt" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interrupted.mp4"]
    frames, _, size = _pyav_read(out)
    assert len(frames) == 12 and size == (96, 64)
    assert _cv2_count(out)[0] == 12


def test_kill_9_keeps_every_fragment_but_the_last(tmp_path):
    """A child writing 10 fps frames is killed with SIGKILL (no atexit, no close): the file plays
    up to its last complete fragment, so at most 2 s (20 frames) + the encoder's delay are lost."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    out = tmp_path / "killed.mp4"
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from app.io.writer import VideoWriter
        w = VideoWriter({str(out)!r}, 10, (160, 96))
        rng = np.random.default_rng(0)
        for i in range(100000):
            img = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
            w.write(img, i / 10)
            print(i, flush=True)
            time.sleep(0.01)
    """)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True)
    last = -1
    t_end = time.time() + 60
    for line in proc.stdout:
        last = int(line)
        if last >= 75 or time.time() > t_end:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    written = last + 1                    # at least this many frames went into write()
    assert written >= 76
    played = decoded_frames(out)          # up to the torn last fragment
    assert written - 20 - 8 <= played <= written + 8, (played, written)
    assert played >= 40


def test_full_disk_keeps_what_was_written_and_says_where(small_disk, real_frames):
    """Noise frames (large) into a 2 MB tmpfs: the write that hits ENOSPC raises one line naming
    the disk and the file; close() keeps the file, which plays its complete fragments."""
    disk = small_disk("2m")
    out = disk / "r.mp4"
    rng = np.random.default_rng(1)
    w = VideoWriter(out, 10, (320, 180), keyframe_s=0.5)
    with pytest.raises(OutputError) as ei:
        for i in range(2000):
            w.write(rng.integers(0, 255, (180, 320, 3), dtype=np.uint8), i / 10)
    e = ei.value
    msg = str(e)
    assert e.disk_full and "\n" not in msg
    assert msg.startswith("disk full") and str(out) in msg and str(disk) in msg
    written = w.frames_written
    assert written >= 10
    with pytest.raises(OutputError):      # the writer stopped: the same error again
        w.write(real_frames[0][0][:180, :320].copy(), 999.0)
    assert w.close() == out               # no second error; the file stays
    decoded = decoded_frames(out)
    # up to the last complete fragment: at most 0.5 s (5 frames) + the encoder's delay are lost
    assert written - 5 - 8 <= decoded <= written, (decoded, written)


# ---------------------------------------------------------------- encoder settings by overlay kind
def _grid_lines(img: np.ndarray, step: int, phase: int) -> np.ndarray:
    """A dense 1-px line grid over the middle of the frame, moving with ``phase`` (like a wireframe)."""
    out = img.copy()
    h, w = out.shape[:2]
    for x in range(w // 4 + phase % step, 3 * w // 4, step):
        cv2.line(out, (x, h // 4), (x + 7, 3 * h // 4), (255, 255, 255), 1, cv2.LINE_AA)
    for y in range(h // 4 + phase % step, 3 * h // 4, step):
        cv2.line(out, (w // 4, y), (3 * w // 4, y + 5), (255, 255, 255), 1, cv2.LINE_AA)
    return out


def test_each_quality_has_the_measured_settings_per_overlay_kind(tmp_path):
    from app.settings import RECORD_QUALITIES

    surf = VideoWriter(tmp_path / "s.mp4", 25, (64, 48))      # medium, surface: the defaults
    lines = VideoWriter(tmp_path / "l.mp4", 25, (64, 48), overlay="lines")
    assert {k: surf.options[k] for k in ("preset", "crf", "tune")} == {"preset": "ultrafast", "crf": "23", "tune": "zerolatency"}
    assert {k: lines.options[k] for k in ("preset", "crf", "tune")} == {"preset": "veryfast", "crf": "26", "tune": "zerolatency"}
    # a higher quality is a lower crf for both kinds
    for kind in ("surface", "lines"):
        crfs = [RECORD_QUALITIES[q][kind]["crf"] for q in ("small", "medium", "high")]
        assert crfs == sorted(crfs, reverse=True)
    with pytest.raises(ValueError, match="overlay"):
        VideoWriter(tmp_path / "x.mp4", 25, (64, 48), overlay="dots")
    assert list(tmp_path.iterdir()) == []


def test_line_overlays_get_the_encoder_that_keeps_them_small(tmp_path, real_frames):
    """The "lines" settings exist because dense thin lines cost ultrafast many bits: on real frames
    with a moving 1-px grid they make a clearly smaller file than the "surface" settings (at 720p
    with the wireframe overlay: 5.7 vs 16.2 Mbit/s, docs/benchmarks.md section 8)."""
    sizes = {}
    for kind in ("surface", "lines"):
        p = tmp_path / f"{kind}.mp4"
        w = VideoWriter(p, 25, (640, 360), overlay=kind)
        for i, (img, ts) in enumerate(real_frames):
            w.write(_grid_lines(img, 6, i), ts)
        w.close()
        sizes[kind] = p.stat().st_size
    assert sizes["lines"] < 0.6 * sizes["surface"], sizes


# ---------------------------------------------------------------- BackgroundWriter
def test_background_writer_draws_on_its_own_thread(tmp_path, real_frames):
    import threading

    from app.io.writer import BackgroundWriter

    threads = []

    def drawing(img):
        def draw():
            threads.append(threading.current_thread().name)
            out = img.copy()
            cv2.rectangle(out, (10, 10), (200, 120), (0, 0, 255), -1)
            return out
        return draw

    bw = BackgroundWriter(VideoWriter(tmp_path / "bg.mp4", 25, (640, 360)))
    for img, ts in real_frames[:10]:
        bw.write(drawing(img), ts)
    bw.close()
    assert threads == ["encoder"] * 10 and bw.render_ms > 0.0
    frames, _, _ = _pyav_read(tmp_path / "bg.mp4")
    assert len(frames) == 10
    # what was drawn is in the file: the red box
    b, g, r = (float(c) for c in frames[5][0][30:100, 30:180].reshape(-1, 3).mean(0))
    assert r > 200 and g < 60 and b < 60


def test_a_drawing_error_is_raised_by_the_next_write_and_the_file_kept(tmp_path, real_frames):
    from app.io.writer import BackgroundWriter

    def broken():
        raise RuntimeError("overlay bug")

    bw = BackgroundWriter(VideoWriter(tmp_path / "e.mp4", 25, (640, 360)))
    for img, ts in real_frames[:4]:
        bw.write(img, ts)
    bw.write(broken, real_frames[4][1])
    with pytest.raises(RuntimeError, match="overlay bug"):
        for img, ts in real_frames[5:]:
            bw.write(img, ts)
    bw.close()
    frames, _, _ = _pyav_read(tmp_path / "e.mp4")
    assert len(frames) == 4
