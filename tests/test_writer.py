"""Recording writer: read the files back with PyAV and OpenCV; atomic output; bad paths."""
from __future__ import annotations

import logging

import av
import cv2
import numpy as np
import pytest

from app.io import writer as writer_mod
from app.io.capture import open_source
from app.io.writer import OutputError, VideoWriter
from tests.conftest import shared


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


def test_h264_roundtrip_frames_size_timing_quality(tmp_path, real_frames):
    out = tmp_path / "rec.mp4"
    with VideoWriter(out, 25, (640, 360)) as w:
        assert w.backend == "pyav-libx264"
        for img, t in real_frames:
            w.write(img, t)
            assert not out.exists()          # never a half-written file at the final path
    assert w.frames_written == 30
    assert out.exists() and not list(tmp_path.glob(".*partial*"))
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
    assert not list(tmp_path.glob(".*partial*"))
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


def test_opencv_mp4v_fallback_is_announced(tmp_path, real_frames, monkeypatch, caplog):
    monkeypatch.setattr(writer_mod, "_pyav_h264_available", lambda: False)
    out = tmp_path / "fallback.mp4"
    with caplog.at_level(logging.WARNING, logger="app.io.writer"):
        w = VideoWriter(out, 25, (640, 360))
    assert w.backend == "opencv-mp4v"
    assert any("libx264" in r.getMessage() and "mp4v" in r.getMessage() for r in caplog.records)
    for img, t in real_frames[:8]:
        w.write(img, t)
    w.close()
    n, fps = _cv2_count(out)
    assert n == 8 and fps == pytest.approx(25.0, abs=0.5)
    frames, codec, _ = _pyav_read(out)
    assert codec == "mpeg4" and len(frames) == 8


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
    assert out.exists() and not list(tmp_path.glob(".*partial*"))
    frames, _, size = _pyav_read(out)
    assert len(frames) == 12 and size == (96, 64)
    assert _cv2_count(out)[0] == 12
