"""GUI plumbing without the full window: the Runner in the window's mode (hooks, drawing, a pipeline
swapped mid-run, newest frame wins on a real clip, a paused file), the video view's pixels, the plot
buffers, atomic PNG snapshots."""
from __future__ import annotations

import math
import time

import cv2
import numpy as np
import pytest

from tests.conftest import shared

pytest.importorskip("PyQt6")


def _qimage_to_bgr(img):
    from PyQt6.QtGui import QImage

    img = img.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    a = np.frombuffer(ptr, np.uint8).reshape(h, bpl)[:, : w * 3].reshape(h, w, 3)
    return a[:, :, ::-1].copy()


class _StubPipeline:
    """What the Runner uses of a Pipeline, without a model: no faces, a name, nothing drawn."""

    def __init__(self, name="stub", delay_s=0.0, fail_on=()):
        from app.settings import Layers

        self.model_name, self.provider, self.monitor = name, "CPU", None
        self.layers = Layers(mesh=False, landmarks=False, axes=False, box=False, text=False)
        self.delay_s, self.fail_on, self.closed = delay_s, set(fail_on), False

    def prepare(self, vertices):
        pass

    def process(self, frame, vertices=True, blendshapes=True):
        from app.core.types import FrameResult

        if frame.index in self.fail_on:
            raise ValueError(f"bad frame {frame.index}")
        time.sleep(self.delay_s)
        return FrameResult(frame=frame, observations=[], model=self.model_name, provider="CPU")

    def close(self):
        self.closed = True


def _run_with_hooks(hooks, source, pipe, **kw):
    from app.runner import Outputs, Runner
    from app.settings import RunOptions

    out = Outputs(RunOptions(), fps=source.fps, size=source.size, live=True)
    return Runner(source, pipe, out, quiet=True, say=lambda m: None, hooks=hooks, **kw).run()


def test_frames_the_window_would_not_show_are_not_drawn_but_a_recording_gets_every_one(tmp_path):
    """RunHooks.wants_drawing False: the Runner hands the result over without a drawn image; with
    a recording every frame is drawn anyway (the recording takes the drawing)."""
    import av

    from app.io.capture import open_source
    from app.runner import Outputs, RunHooks, Runner
    from app.settings import RunOptions

    class Hooks(RunHooks):
        def __init__(self):
            self.images, self.n = [], 0

        def between_frames(self, runner):
            return self.n < 12

        def wants_drawing(self, runner):
            return self.n % 3 == 0           # every third frame

        def on_result(self, runner, result, annotated, stage_ms):
            self.images.append(annotated)
            self.n += 1

    src = open_source(shared("media", "talking_head_720p.mp4"))
    h = Hooks()
    Runner(src, _StubPipeline(), Outputs(RunOptions(), fps=src.fps, size=src.size, live=True),
           quiet=True, say=lambda m: None, hooks=h, draw=True).run()
    assert [a is not None for a in h.images] == [i % 3 == 0 for i in range(12)]
    # recording: every frame drawn and recorded
    src = open_source(shared("media", "talking_head_720p.mp4"))
    rec = tmp_path / "r.mp4"
    h = Hooks()
    # (a file's recording: no frame dropped when the encoder falls behind, as a live one may)
    out = Outputs(RunOptions(record=str(rec)), fps=src.fps, size=src.size, live=False)
    Runner(src, _StubPipeline(), out, quiet=True, say=lambda m: None, hooks=h, draw=True).run()
    assert len(h.images) == 12 and all(a is not None for a in h.images)
    with av.open(str(rec)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 12


def test_worker_draws_only_what_the_window_can_show():
    """ProcessingWorker.wants_drawing: without a window (no redraw period) every frame; with one,
    a frame is skipped only while the last drawn one is unpainted and less than half a redraw
    period old."""
    from app.gui.worker import ProcessingWorker
    from app.settings import Settings

    w = ProcessingWorker(Settings())
    assert all(w.wants_drawing(None) for _ in range(5))
    w.redraw_period = 1 / 30
    assert w.wants_drawing(None)            # drawn: not painted yet
    assert not w.wants_drawing(None)        # right after: skipped
    w.image_shown()
    assert w.wants_drawing(None)            # painted: the next one is drawn
    w._drawn_t -= 0.5 / 30                  # unpainted, but half a period old: drawn
    assert w.wants_drawing(None)
    assert not w.wants_drawing(None)


def test_runner_hooks_see_every_frame_drawn_swap_the_pipeline_and_skip_a_bad_frame():
    """The window's mode of Runner on the real clip, not paced (the benchmark mode): every frame in
    order to on_result with its drawn image; a pipeline swapped in between frames runs from the next
    frame on and is left open with close_pipeline=False; a frame that fails is skipped when the
    hooks say so; between_frames returning False ends the run."""
    from app.io.capture import open_source
    from app.runner import RunHooks

    first, second = _StubPipeline("first", fail_on={7}), _StubPipeline("second")

    class Hooks(RunHooks):
        def __init__(self):
            self.seen, self.errors, self.calls = [], [], 0

        def between_frames(self, runner):
            self.calls += 1
            if len(self.seen) == 20 and runner.pipe is first:
                assert runner.replace_pipeline(second) is first
            return len(self.seen) < 40

        def on_result(self, runner, result, annotated, stage_ms):
            assert annotated.shape == result.frame.image.shape and annotated is not result.frame.image
            assert stage_ms["total"] >= stage_ms["decode"] >= 0.0 and "overlay" in stage_ms
            self.seen.append((result.frame.index, result.model))

        def on_frame_error(self, runner, frame, error):
            self.errors.append((frame.index, str(error)))
            return True

    h = Hooks()
    rep = _run_with_hooks(h, open_source(shared("media", "talking_head_720p.mp4")), first,
                          draw=True, close_pipeline=False)
    assert [i for i, _ in h.seen] == [i for i in range(41) if i != 7]      # 40 results, frame 7 skipped
    assert {m for i, m in h.seen if i <= 20} == {"first"} and {m for i, m in h.seen if i > 21} == {"second"}
    assert h.errors == [(7, "bad frame 7")]
    assert rep.frames == 40 and rep.error is None and rep.rc == 0
    assert not first.closed and not second.closed
    # without hooks that skip it, a failing frame ends the run with the error (headless behaviour)
    rep = _run_with_hooks(None, open_source(shared("media", "talking_head_720p.mp4")), _StubPipeline(fail_on={3}))
    assert rep.frames == 3 and rep.error.startswith("processing stopped at frame 3") and rep.rc == 1


def test_realtime_source_hands_a_slow_runner_the_newest_frame():
    """The clip paced at its 25 fps (Source(realtime=True), what the window runs) through a Runner
    whose pipeline needs 100 ms per frame: each frame processed is the newest, older ones are
    dropped (counted), never queued, and the latency from the source to the result stays about
    one processing period."""
    from app.io.capture import open_source
    from app.runner import RunHooks

    class Hooks(RunHooks):
        got, lags = [], []

        def on_result(self, runner, result, annotated, stage_ms):
            self.got.append(result.frame.index)
            self.lags.append(time.perf_counter() - result.frame.captured)

    src = open_source(shared("media", "talking_head_720p.mp4"), realtime=True)
    h = Hooks()
    rep = _run_with_hooks(h, src, _StubPipeline(delay_s=0.1))
    got = h.got
    # 55 frames at 25 fps = 2.2 s; a 10 fps consumer sees about a quarter to a half of them
    assert 10 <= len(got) <= 35, got
    assert got == sorted(got) and len(set(got)) == len(got) and rep.frames == len(got)
    assert src.frames_dropped == 55 - len(got)
    assert max(np.diff(got)) >= 2            # frames were skipped, not queued
    assert got[-1] >= 50                     # the end of the clip is reached in real time
    assert np.median(h.lags) < 0.25          # a frame waits about one consumer period


def test_paused_file_keeps_its_position():
    """A paused real-time file stops reading where it is: after 1.5 s of pause (37 frames of the
    clip at 25 fps) the next frame handed over is at most the few already queued further."""
    from app.io.capture import open_source

    src = open_source(shared("media", "talking_head_720p.mp4"), realtime=True, queue_size=2)
    last = None
    while last is None or last.index < 5:
        last = src.read(timeout=1.0) or last
    src.set_paused(True)
    time.sleep(1.5)
    src.set_paused(False)
    nxt = src.read(timeout=1.0)
    src.stop()
    assert nxt is not None and last.index < nxt.index <= last.index + 4


def test_video_view_shows_the_frame_scaled_with_aspect(qtbot):
    from app.gui.video import VideoView

    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = (255, 0, 0)     # left half blue (BGR)
    img[:, 100:] = (0, 0, 255)     # right half red
    v = VideoView()
    qtbot.addWidget(v)
    v.resize(400, 400)
    v.set_image(img)
    v.show()
    qtbot.waitExposed(v)
    shot = _qimage_to_bgr(v.grab().toImage())
    r = v.target_rect()
    # 200x100 into 400x400 -> 400x200, centred vertically (letterbox above and below)
    assert (r.x(), r.y(), r.width(), r.height()) == (0, 100, 400, 200)
    assert tuple(shot[200, 50]) == pytest.approx((255, 0, 0), abs=2)
    assert tuple(shot[200, 350]) == pytest.approx((0, 0, 255), abs=2)
    assert shot[50, 200].max() < 40 and shot[350, 200].max() < 40   # letterbox is dark
    p = v.image_to_widget(150, 50)
    assert (p.x(), p.y()) == (300, 200)


def test_plot_buffers_keep_last_30_seconds(qtbot):
    from app.gui.plots import SignalPlots

    p = SignalPlots(window_s=30.0)
    qtbot.addWidget(p)
    for i in range(40 * 10):     # 40 s at 10 Hz
        t = i / 10.0
        p.append(t, yaw=math.sin(t), pitch=0.0, roll=float("nan"), eye_left=0.3, eye_right=0.25,
                 perclos=0.1, mouth=0.2)
    assert p.redraw() is True and p.redraw() is False
    assert len(p) == 301                      # t in [9.9, 39.9]
    assert p.curve_points("yaw") == 301
    assert p.values("yaw")[-1] == pytest.approx(math.sin(39.9))
    assert p.curve_points("roll") == 0        # all-NaN series draws nothing
    p.set_thresholds(30, 20, 0.15, neutral_yaw=5.0, neutral_pitch=-2.0)
    assert p.lines["yaw_hi"].value() == 35 and p.lines["yaw_lo"].value() == -25
    assert p.lines["pitch_lo"].value() == -22 and p.lines["perclos"].value() == 0.15


def test_png_snapshot_is_atomic(tmp_path):
    import cv2

    from app.gui.window import write_png_atomic

    img = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)
    out = write_png_atomic(tmp_path / "snap.png", img)
    assert np.array_equal(cv2.imread(str(out)), img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap.png"]   # no temp file left
    with pytest.raises(OSError):
        write_png_atomic(tmp_path / "missing_dir" / "snap.png", img)
    assert not (tmp_path / "missing_dir").exists()


def test_command_line_flags_win_over_saved_gui_settings(qtbot, tmp_path):
    """Saved thresholds/layers/smoothing are restored unless the command line sets them."""
    pytest.importorskip("app.pipeline")
    from PyQt6.QtCore import QSettings

    from app import cli
    from app.gui import explicit_flags
    from app.gui.window import MainWindow

    qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    qs.setValue("thresholds/alert_yaw", 40.0)
    qs.setValue("thresholds/alert_pitch", 25.0)
    qs.setValue("smoothing", False)
    qs.setValue("layers/mesh", False)
    argv = ["--alert-yaw", "20", "--layers", "all"]
    settings = cli.settings_from_args(cli.build_parser().parse_args(argv))

    class W(MainWindow):
        cli_explicit = explicit_flags(argv)

    win = W.__new__(W)        # only the restore step: no window, no worker
    win.qs = qs
    restored = W._restore_settings(win, settings)
    assert restored.monitor.alert_yaw == 20.0       # flag given: the command line wins
    assert restored.monitor.alert_pitch == 25.0     # not given: the saved value
    assert restored.smoothing is False
    assert restored.layers.mesh is True             # --layers given


def test_video_view_scales_to_device_pixels_on_hidpi(qtbot, monkeypatch):
    """The frame is scaled to logical size x devicePixelRatio (forced here) and the QImage carries
    that ratio, so Qt draws it at the logical size with one image pixel per screen pixel."""
    from app.gui.video import VideoView

    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :100] = (255, 0, 0)
    img[:, 100:] = (0, 0, 255)
    v = VideoView()
    qtbot.addWidget(v)
    v.resize(400, 400)
    v.set_image(img)
    v.show()
    qtbot.waitExposed(v)
    v.grab()
    assert v.drawn == (400, 200, 1.0)                  # a normal screen: logical = device pixels
    for dpr in (2.0, 1.5):
        monkeypatch.setattr(v, "devicePixelRatioF", lambda d=dpr: d)
        shot = _qimage_to_bgr(v.grab().toImage())
        r = v.target_rect()
        assert (r.width(), r.height()) == (400, 200)        # layout stays in logical pixels
        assert v.drawn == (round(400 * dpr), round(200 * dpr), dpr)
        # drawn at the logical place and size: the halves and the letterbox are where they were
        assert tuple(shot[200, 50]) == pytest.approx((255, 0, 0), abs=2)
        assert tuple(shot[200, 350]) == pytest.approx((0, 0, 255), abs=2)
        assert shot[50, 200].max() < 40 and shot[350, 200].max() < 40


_CRISP_SCRIPT = r"""
import sys
import cv2
import numpy as np
from PyQt6.QtGui import QImage
from PyQt6.QtWidgets import QApplication
app = QApplication([])
from app.gui.video import VideoView
img = np.zeros((400, 800, 3), np.uint8)
img[:, ::2] = 255                        # 1-pixel black / white columns
v = VideoView()
v.resize(400, 200)                       # logical; 800 x 400 device pixels at 200 %
v.set_image(img)
v.show()
app.processEvents()
pm = v.grab()
q = pm.toImage().convertToFormat(QImage.Format.Format_RGB888)
w, h, bpl = q.width(), q.height(), q.bytesPerLine()
ptr = q.constBits()
ptr.setsize(q.sizeInBytes())
a = np.frombuffer(ptr, np.uint8).reshape(h, bpl)[:, : w * 3].reshape(h, w, 3)
print(v.devicePixelRatioF(), pm.devicePixelRatio(), w, h, v.drawn)
sys.exit(0 if (w, h) == (800, 400) and np.array_equal(a[:, :, 0], img[:, :, 0]) else 3)
"""


def test_video_view_is_pixel_exact_at_200_percent_scaling(tmp_path):
    """A real 200 % screen (QT_SCALE_FACTOR=2, offscreen): 1-pixel stripes in an 800 x 400 frame shown
    in a 400 x 200 (logical) view reach the screen unchanged -- not halved and blown up again."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QT_SCALE_FACTOR="2", XDG_CONFIG_HOME=str(tmp_path))
    p = subprocess.run([sys.executable, "-c", _CRISP_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert p.stdout.split()[:4] == ["2.0", "2.0", "800", "400"]


def test_default_recording_names_are_unique_within_one_second(tmp_path, monkeypatch):
    import app.gui.worker as w

    monkeypatch.setattr(w, "_stamp", lambda: "20300101-120000")
    a = w.default_recording_path(tmp_path)
    b = w.default_recording_path(tmp_path)
    assert (a.name, b.name) == ("20300101-120000.mp4", "20300101-120000-2.mp4")
    # a proposal (a path dialog's default) reserves nothing
    c = w.default_recording_path(tmp_path, reserve=False)
    assert c.name == "20300101-120000-3.mp4" == w.default_recording_path(tmp_path, reserve=False).name
    # names taken on disk by another process: a recording (finished or being written), its events
    other = tmp_path / "other"
    other.mkdir()
    (other / "20300101-120000.mp4").write_bytes(b"x")
    (other / "20300101-120000-2.events.jsonl").write_text("{}\n")
    assert w.default_recording_path(other).name == "20300101-120000-3.mp4"
    # another second: the plain name again
    monkeypatch.setattr(w, "_stamp", lambda: "20300101-120001")
    assert w.default_recording_path(tmp_path).name == "20300101-120001.mp4"


def test_scale_for_view_is_area_averaging_in_two_fast_steps():
    """Below half size the view averages pixel areas by a whole factor, then scales bilinearly:
    the picture of a real frame within a few grey levels of OpenCV's one-step area averaging;
    from half size up it is plain bilinear scaling."""
    import av

    from app.gui.video import scale_for_view

    with av.open(str(shared("media", "clips", "expressions_d13.mp4"))) as c:
        img = next(c.decode(video=0)).to_ndarray(format="bgr24")
    for w, h in ((285, 506), (200, 356), (150, 267)):
        got = scale_for_view(img, w, h)
        ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        assert got.shape == (h, w, 3)
        assert np.abs(got.astype(int) - ref).mean() < 2.5, (w, h)
    big = scale_for_view(img, 500, 889)
    np.testing.assert_array_equal(big, cv2.resize(img, (500, 889), interpolation=cv2.INTER_LINEAR))
