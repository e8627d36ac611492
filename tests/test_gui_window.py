"""The desktop window end to end, offscreen (QT_QPA_PLATFORM=offscreen from conftest): the real
pipeline on a shared clip, overlays on screen, plots, status bar, alerts + sound, recording,
switching model and source while running, bad input."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared

pytest.importorskip("PyQt6")
pytestmark = pytest.mark.slow   # each test runs the pipeline on real video for a few seconds

CLIP = ("media", "talking_head_720p.mp4")
WAIT_MS = 60_000   # generous upper bounds: 2 slow shared cores


def _settings(*flags: str):
    """Settings exactly as main.py builds them from command-line flags (monitor included)."""
    pytest.importorskip("app.pipeline")
    from app import cli

    return cli.settings_from_args(cli.build_parser().parse_args(list(flags)))


def _bgr(qimage):
    from PyQt6.QtGui import QImage

    img = qimage.convertToFormat(QImage.Format.Format_RGB888)
    w, h, bpl = img.width(), img.height(), img.bytesPerLine()
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(h, bpl)[:, : w * 3].reshape(h, w, 3)[:, :, ::-1].copy()


class _Sound:
    def __init__(self):
        self.calls = 0

    def play(self):
        self.calls += 1


@pytest.fixture
def make_window(qtbot, tmp_path):
    from PyQt6.QtCore import QSettings

    from app.gui.window import MainWindow
    from app.gui.worker import ProcessingWorker

    made = []

    def make(settings=None, source=None, *, realtime=True):
        settings = settings if settings is not None else _settings()
        qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
        worker = ProcessingWorker(settings, realtime=realtime)
        win = MainWindow(settings, source=source, qsettings=qs, worker=worker,
                         list_cameras_at_start=False, sound=_Sound())
        win.record_dir = str(tmp_path / "recordings")
        win.snapshot_dir = str(tmp_path / "snapshots")
        qtbot.addWidget(win)
        win.resize(1280, 760)
        win.show()
        qtbot.waitExposed(win)
        made.append(win)
        return win

    yield make
    for w in made:
        w.close()
        assert not w.worker.isRunning()


def test_clip_runs_with_overlays_plots_and_status(make_window, qtbot):
    # PERCLOS needs known eye time: ask for little of it so the short clip fills that plot too
    win = make_window(_settings("--eye-baseline-min-seconds", "0.5", "--perclos-min-seconds", "0.5",
                                "--perclos-window", "5"), source=str(shared(*CLIP)))
    N = 20
    qtbot.waitUntil(lambda: win.results_shown >= N and bool(win.latest.observations), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: np.isfinite(win.plots.values("perclos")).any(), timeout=WAIT_MS)
    # pause: the last result stays the latest; everything below is what the window's own timers
    # (video redraw, plot redraw, panel refresh) put on screen -- nothing is redrawn by the test
    win.set_paused(True)
    qtbot.wait(600)                                   # a frame in flight may still arrive
    r = win.latest
    assert r.observations
    face = max(r.observations, key=lambda o: o.area)
    qtbot.waitUntil(lambda: win.view.image is r.image and not win._latest_new, timeout=10_000)
    assert win.view.frames_painted > 0        # painted by the redraw timer (the test grabs below)
    # yaw / pitch / roll numbers of the shown face (panel timer)
    want = {k: f"{getattr(face, k):+.1f}°" for k in ("yaw", "pitch", "roll")}
    assert all(np.isfinite(getattr(face, k)) for k in want)
    qtbot.waitUntil(lambda: all(win.lbl_angles[k].text() == v for k, v in want.items()), timeout=10_000)
    # the status bar names the model and the provider that really runs, the capture rate of the
    # source (the clip is paced at its 25 fps) and the number of faces of the shown frame
    assert r.stats.provider and r.stats.provider in win.status_text()
    assert "CPU" in win.provider or "CUDA" in win.provider
    assert win.model_name and win.model_name in win.status_text()
    assert "processing" in win.status_text() and "latency" in win.status_text()
    qtbot.waitUntil(lambda: win.st["faces"].text() == f"faces {len(r.observations)}", timeout=10_000)
    cap = win.st["capture"].text()
    assert cap.startswith("capture") and cap.endswith("fps"), cap
    assert float(cap.split()[1]) == pytest.approx(r.stats.capture_fps, abs=0.051)
    assert 10.0 < r.stats.capture_fps < 40.0
    # the plots hold one point per processed frame (all of them within the 30 s window), and the
    # plot timer pushed every series that has numbers to its curve
    assert len(win.plots) == win.results_received >= N
    qtbot.waitUntil(lambda: win.plots.curve_points("yaw") == len(win.plots), timeout=10_000)
    assert np.isfinite(win.plots.values("yaw")).sum() >= N // 2
    for k in ("eye_left", "eye_right", "mouth"):
        v = win.plots.values(k)
        assert np.isfinite(v).sum() >= N // 2, k
        assert np.all((v[np.isfinite(v)] >= 0) & (v[np.isfinite(v)] < 1.5)), k
        assert win.plots.curve_points(k) == len(win.plots), k
    for k in ("gaze_yaw", "gaze_pitch"):     # the eye gaze (head + eyes), degrees
        v = win.plots.values(k)
        assert np.isfinite(v).sum() >= N // 2 and np.all(np.abs(v[np.isfinite(v)]) < 90), k
        assert win.plots.curve_points(k) == len(win.plots), k
    pc = win.plots.values("perclos")
    assert np.isfinite(pc).any() and np.all((pc[np.isfinite(pc)] >= 0) & (pc[np.isfinite(pc)] <= 1))
    assert win.plots.curve_points("perclos") == len(win.plots)
    # the view on screen shows the annotated frame the redraw timer painted: where a landmark is
    # drawn the pixels differ from the raw frame, far from the face they match it
    shot = _bgr(win.view.grab().toImage())
    rect = win.view.target_rect()
    import cv2

    raw = r.full.frame.image
    raw_scaled = cv2.resize(raw, (int(rect.width()), int(rect.height())), interpolation=cv2.INTER_AREA)
    x0, y0 = int(rect.x()), int(rect.y())
    on_screen = shot[y0:y0 + raw_scaled.shape[0], x0:x0 + raw_scaled.shape[1]].astype(int)
    diff = np.abs(on_screen - raw_scaled.astype(int)).sum(axis=2)
    sx = raw_scaled.shape[1] / raw.shape[1]
    lm = face.landmarks[:, :2] * sx
    near = [diff[max(0, int(y) - 2):int(y) + 3, max(0, int(x) - 2):int(x) + 3].max() for x, y in lm]
    assert np.mean(np.array(near) > 60) > 0.8, "landmark overlay not visible in the view"
    far = diff[-40:, raw_scaled.shape[1] // 2 - 40: raw_scaled.shape[1] // 2 + 40]   # bottom centre
    assert np.median(far) < 25


def test_scripted_yaw_raises_banner_and_sound(make_window, qtbot):
    """Synthetic head turns through the real DriverMonitor, fed through the window's result slot."""
    monitor_mod = pytest.importorskip("app.monitor")
    if not hasattr(monitor_mod, "DriverMonitor"):
        pytest.skip("app.monitor.DriverMonitor not available")
    from app.core.types import FaceObservation, Frame
    from app.gui.worker import Result, Stats

    win = make_window(source=None)
    mon = monitor_mod.DriverMonitor(monitor_mod.MonitorSettings())
    img = np.full((240, 320, 3), 90, np.uint8)
    fps = 30.0
    banner_seen, levels = False, []
    for i in range(int(12 * fps)):
        t = i / fps
        yaw = 0.0 if t < 5.0 else 45.0     # calibrate straight ahead, then look away for 7 s
        face = FaceObservation(box=np.array([100, 60, 220, 200], float), landmarks=np.zeros((68, 3), np.float32),
                               model="synthetic", yaw=yaw, pitch=0.0, roll=0.0, eye_open=(0.3, 0.3), mouth_open=0.05)
        st = mon.update(t, i, face)
        win._on_result(Result(image=img, observations=[face], driver=face, state=st,
                              frame=Frame(image=None, timestamp=t, index=i), wall_t=time.perf_counter(),
                              stats=Stats()))
        win.refresh_now()
        if win.banner_level is not None:
            banner_seen = True
            levels.append(win.banner_level)
        else:
            assert st.top_alert is None and win.banner.text().startswith("no alerts")
    assert banner_seen
    assert "warning" in levels and "critical" in levels
    assert "LOOKING" in win.banner.text()
    assert "#e00000" in win.banner.styleSheet()        # critical = red
    assert win.sound.calls >= 1
    assert win.lbl_calib.text().startswith("● calibrated")
    assert len(win.plots) == int(12 * fps)


def test_record_toggle_writes_playable_mp4_of_shown_frames(make_window, qtbot, tmp_path, monkeypatch):
    import av

    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_shown >= 3, timeout=WAIT_MS)
    out = tmp_path / "rec" / "take1.mp4"
    (tmp_path / "rec").mkdir()
    win.start_recording(str(out))
    qtbot.waitUntil(lambda: win.recording_path is not None, timeout=10_000)
    qtbot.waitUntil(lambda: win.latest.stats.recording_frames >= 15, timeout=WAIT_MS)
    assert "REC" in win.status_text()
    # while it records, the frames are drawn at their own size (the recording takes that drawing)
    assert win.latest.image.shape == win.latest.full.frame.image.shape
    win.stop_recording()
    qtbot.waitUntil(lambda: win.recording_path is None, timeout=10_000)
    assert sorted(x.name for x in out.parent.iterdir()) == ["take1.events.jsonl", "take1.mp4"]
    n_written = [m for m in win.messages if m.startswith("recorded ")][-1]
    n = int(n_written.split()[1])
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == n >= 15
    assert frames[0].shape == win.latest.full.frame.image.shape
    # the monitor's events go beside the video; the last line is the run summary
    from app.monitor.events import read_events

    ev = read_events(out.with_name("take1.events.jsonl"))
    assert ev and ev[-1]["event"] == "summary"
    # R toggles a recording to the default place: recordings/DATE-TIME.mp4 + .events.jsonl; two
    # recordings within the same second (the clock is frozen here) get two files
    import app.gui.worker as worker_mod

    monkeypatch.setattr(worker_mod, "_stamp", lambda: "20300101-120000")
    for take in range(2):
        qtbot.keyClick(win, "r")
        qtbot.waitUntil(lambda: win.recording_path is not None, timeout=10_000)
        # a result of this take (on a loaded machine the latest one may still be of the previous take)
        qtbot.waitUntil(lambda: win.latest.stats.recording == win.recording_path
                        and win.latest.stats.recording_frames >= 5, timeout=WAIT_MS)
        qtbot.keyClick(win, "r")
        qtbot.waitUntil(lambda: win.recording_path is None, timeout=10_000)
    rec = sorted(Path(win.record_dir).glob("*.mp4"))
    assert [p.name for p in rec] == ["20300101-120000-2.mp4", "20300101-120000.mp4"]
    for p in rec:
        assert p.with_name(p.stem + ".events.jsonl").exists()
        with av.open(str(p)) as c:
            assert sum(1 for _ in c.decode(video=0)) >= 5
    recorded = [m.split(" to ")[-1] for m in win.messages if m.startswith("recorded ")]
    assert recorded[-2:] == [str(rec[1]), str(rec[0])]       # in order: the first kept its name


def test_closing_while_recording_finalizes_the_file(make_window, qtbot, tmp_path):
    import av

    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_shown >= 2, timeout=WAIT_MS)
    out = tmp_path / "closing.mp4"
    win.start_recording(str(out))
    qtbot.waitUntil(lambda: win.latest.stats.recording_frames >= 5, timeout=WAIT_MS)
    win.close()
    assert not win.worker.isRunning()
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) >= 5


def test_unwritable_recording_path_shows_error_and_keeps_running(make_window, qtbot, tmp_path):
    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_shown >= 2, timeout=WAIT_MS)
    win.start_recording(str(tmp_path / "no" / "such" / "dir" / "x.mp4"))
    qtbot.waitUntil(lambda: any(e.startswith("recording:") for e in win.errors), timeout=10_000)
    assert "x.mp4" in win.message.text()
    qtbot.waitUntil(lambda: not win.btn_record.isChecked(), timeout=10_000)   # the next signal
    assert win.recording_path is None
    n = win.results_received
    qtbot.waitUntil(lambda: win.results_received > n + 5, timeout=WAIT_MS)


def test_unreadable_file_shows_error_then_switch_source_and_model(make_window, qtbot, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    win = make_window(source=str(bad))
    qtbot.waitUntil(lambda: len(win.errors) >= 1, timeout=WAIT_MS)
    assert "broken.mp4" in win.errors[-1]
    assert str(bad.name) in win.message.text()
    assert win.worker.isRunning() and win.results_received == 0
    # no camera on this machine (or a camera index that does not open): the same, one line
    from app.io.capture import list_cameras

    missing = max(list_cameras(), default=-1) + 1
    win.open_source(missing)
    qtbot.waitUntil(lambda: any(f"camera {missing}" in e for e in win.errors), timeout=WAIT_MS)
    # the app lives: a good source starts processing
    win.open_source(str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_received >= 5, timeout=WAIT_MS)
    # a bad file while a good one runs: error, the running source goes on and stays selected
    n_err = len(win.errors)
    win.open_source(str(bad))
    qtbot.waitUntil(lambda: len(win.errors) > n_err, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.source_combo.currentData() == str(shared(*CLIP)), timeout=10_000)
    n = win.results_received
    qtbot.waitUntil(lambda: win.results_received > n + 3, timeout=WAIT_MS)
    # a model that fails to load: an error, the previous model keeps running
    from app.gui import binding

    before = win.model_name
    running = win.model_combo.currentData()        # the default entry (or the mesh's, models/ empty)
    assert running in (binding.get_model(win.worker.settings), binding.MESH_MODEL)
    notonnx = tmp_path / "bad.onnx"
    notonnx.write_bytes(b"garbage")
    failed = []
    win.worker.model_failed.connect(failed.append)
    win.set_model(str(notonnx))
    assert win.model_combo.currentData() == str(notonnx)     # the choice shows at once ...
    qtbot.waitUntil(lambda: any("model failed to load" in e for e in win.errors), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(failed) == 1, timeout=10_000)
    assert failed[0].startswith("model failed to load") and win.errors[-1] == failed[0]
    # ... and after the failure the combo shows the model that really runs again
    qtbot.waitUntil(lambda: win.model_combo.currentData() == running, timeout=10_000)
    assert win.model_combo.currentText() != "bad.onnx"
    n = win.results_received
    qtbot.waitUntil(lambda: win.results_received > n + 5, timeout=WAIT_MS)
    assert win.model_name == before
    # switch source while running: another clip, its frames arrive
    win.open_source(str(shared("media", "clips", "expressions_d18.mp4")))
    qtbot.waitUntil(lambda: win.source_name == "expressions_d18.mp4", timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.latest.image.shape[:2] != (720, 1280), timeout=WAIT_MS)


def test_switch_to_onnx_model_and_back_while_running(make_window, qtbot, tddfa_onnx):
    """Model combo path: the real 3DDFA-V2 x0.5 ONNX export replaces the running model mid-run
    (dense mesh observations arrive, the status bar names the ONNX provider), then back to the
    default (the built-in face mesh, or the first models/*.onnx when a checkout has one; choosing
    the mesh explicitly is test_built_in_mesh_chosen_while_models_holds_an_onnx)."""
    from app.gui import binding

    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_received >= 3, timeout=WAIT_MS)
    first = win.model_name
    assert binding.get_model(win.settings) is None
    win.set_model(str(tddfa_onnx))
    qtbot.waitUntil(lambda: binding.get_model(win.settings) == str(tddfa_onnx), timeout=WAIT_MS)
    assert win.model_name == "3ddfa_v2_mb05" and win.provider in ("CPU", "CUDA")
    assert win.model_combo.currentData() == str(tddfa_onnx)
    qtbot.waitUntil(lambda: bool(win.latest.observations) and win.latest.observations[0].vertices is not None
                    and win.latest.stats.model == win.model_name, timeout=WAIT_MS)
    win.refresh_now()
    assert f"provider: {win.provider}" in win.status_text()
    assert win.latest.observations[0].vertices.shape[1] == 3
    win.set_model(None)
    qtbot.waitUntil(lambda: binding.get_model(win.settings) is None, timeout=WAIT_MS)
    assert win.model_name == first and win.model_combo.currentIndex() == 0


def test_recalibrate_key_thresholds_and_settings_persist(make_window, qtbot, tmp_path):
    """C (keyboard) restarts the calibration of the running monitor; threshold and layer changes
    reach the running pipeline without a reload and are saved for the next start."""
    # a still portrait looped at 25 fps: a perfectly steady face, calibrated after 3 s
    win = make_window(source=str(shared("media", "portrait_glasses.jpg")))
    qtbot.waitUntil(lambda: win.latest is not None and win.latest.state is not None, timeout=WAIT_MS)
    pipe = win.worker.pipeline
    qtbot.waitUntil(lambda: win.latest.state.calibrated, timeout=WAIT_MS)   # 3 s of a steady face
    qtbot.keyClick(win, "c")
    qtbot.waitUntil(lambda: win.latest.state.calibrating, timeout=10_000)
    assert any("recalibrating" in m for m in win.messages)
    win.spin["alert_yaw"].setValue(42)
    win.spin["alert_yaw"].editingFinished.emit()
    qtbot.keyClick(win, "m")                      # mesh layer off
    assert not win.chk_layer["mesh"].isChecked()
    qtbot.waitUntil(lambda: pipe.monitor.settings.alert_yaw == 42.0 and not pipe.layers.mesh, timeout=10_000)
    assert win.worker.pipeline is pipe             # swapped in place: calibration kept, no reload
    win.close()
    from PyQt6.QtCore import QSettings

    qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    assert float(qs.value("thresholds/alert_yaw")) == 42.0
    assert str(qs.value("layers/mesh")).lower() == "false"
    win2 = make_window(source=None)
    assert win2.spin["alert_yaw"].value() == 42 and not win2.chk_layer["mesh"].isChecked()
    assert win2.settings.monitor.alert_yaw == 42.0 and not win2.settings.layers.mesh
    qtbot.waitUntil(lambda: win2.worker.pipeline is not None, timeout=WAIT_MS)
    assert win2.worker.pipeline.monitor.settings.alert_yaw == 42.0   # the running pipeline uses them


def test_source_breaking_off_midway_reports_and_app_lives(make_window, qtbot, tmp_path):
    """Like a camera unplugged mid-run: a clip cut in half delivers its first frames, then the
    window says what happened, and a new source can be opened."""
    import av

    full = tmp_path / "full.mkv"      # mkv: a cut file still opens (an mp4 keeps its index at the end)
    with av.open(str(shared("media", "clips", "expressions_d18.mp4"))) as src, av.open(str(full), "w") as out:
        st = out.add_stream("libx264", rate=25)
        st.pix_fmt = "yuv420p"
        st.options = {"preset": "ultrafast"}
        for i, f in enumerate(src.decode(video=0)):
            if i == 0:
                st.width, st.height = f.width, f.height
            if i >= 75:
                break
            for pkt in st.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"), format="bgr24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    win = make_window(source=str(cut))
    # the error line and the ended source arrive as two signals: wait for both (a loaded machine)
    qtbot.waitUntil(lambda: len(win.errors) >= 1 and win.source_name == "", timeout=WAIT_MS)
    assert win.results_received > 0                 # frames before the break were shown
    assert "cut.mkv" in win.errors[-1] and win.source_name == ""
    assert "cut.mkv" in win.message.text()
    win.open_source(str(shared(*CLIP)))
    n = win.results_received
    qtbot.waitUntil(lambda: win.results_received > n + 5, timeout=WAIT_MS)


def test_frames_are_drawn_at_the_size_the_view_shows_them(make_window, qtbot):
    """A view smaller than the frame gets the frame drawn at the view's size in device pixels:
    the same drawing as draw_result(size=) and painted without scaling; a larger view gets the
    frame's own size."""
    from app.render import draw_result

    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_shown >= 5, timeout=WAIT_MS)
    win.set_paused(True)
    qtbot.wait(600)                                   # a frame in flight may still arrive
    r = win.latest
    fh, fw = r.full.frame.image.shape[:2]
    want = win.view.device_size(fw, fh)
    assert want[0] < fw and want[1] < fh
    assert (r.image.shape[1], r.image.shape[0]) == want
    np.testing.assert_array_equal(r.image, draw_result(r.full, win.settings.layers, size=want))
    qtbot.waitUntil(lambda: win.view.image is r.image, timeout=10_000)
    win.view.repaint()
    assert win.view.drawn[:2] == want                                   # painted as it is,
    assert win.view._scaled is None or win.view._scaled[0] is not r.image    # not scaled
    # the faces are where they are in the frame: the view maps frame pixels to the widget
    box = r.driver.box
    p = win.view.image_to_widget(box[0], box[1])
    rect = win.view.target_rect()
    assert p.x() == pytest.approx(rect.x() + box[0] * rect.width() / fw)
    # a view larger than the frame: the frame's own size (the view scales it up)
    win.worker.view_size = (fw * 2, fh * 2)
    runner = win.worker.runner
    assert win.worker.draw_size(runner, (fw, fh)) is None
    win.worker.view_size = want
    assert win.worker.draw_size(runner, (fw, fh)) == want
    assert win.worker.draw_size(runner, (want[0], fh)) is None      # a frame not larger than the view
    # a result the worker did not draw (the window would not have shown it): the view keeps the
    # last drawn frame, the panel takes the new result, a snapshot draws it at the frame's size
    import dataclasses

    import cv2

    undrawn = dataclasses.replace(r, image=None)
    win._on_result(undrawn)
    assert win.latest is undrawn and win.latest_drawn is r
    win._redraw()
    assert win.view.image is r.image
    path = win.snapshot()
    assert path is not None
    np.testing.assert_array_equal(cv2.imread(str(path)), draw_result(r.full, win.settings.layers))
    win.set_paused(False)


def test_keys_pause_layers_fullscreen_quit_and_snapshot(make_window, qtbot):
    import cv2

    from app.render import draw_result

    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_received >= 3, timeout=WAIT_MS)
    qtbot.keyClick(win, " ")
    assert win.btn_pause.isChecked() and win.btn_pause.text() == "Start"
    qtbot.wait(500)                                  # a frame in flight may still arrive
    n = win.results_received
    qtbot.wait(1000)
    assert win.results_received == n                # paused: nothing processed
    path = win.snapshot()
    assert path is not None and path.suffix == ".png"
    # the view (837 x 471 device pixels here) shows the frame drawn at its own size, which the
    # snapshot draws again at the frame's 1280 x 720
    r = win.latest
    full = r.full.frame.image
    assert r.image.shape[:2] != full.shape[:2]
    assert (r.image.shape[1], r.image.shape[0]) == win.view.device_size(full.shape[1], full.shape[0])
    np.testing.assert_array_equal(cv2.imread(str(path)), draw_result(r.full, win.settings.layers))
    qtbot.keyClick(win, " ")
    assert not win.btn_pause.isChecked()
    qtbot.waitUntil(lambda: win.results_received > n + 3, timeout=WAIT_MS)
    # L toggles the landmark layer, F full screen, Q quits (the worker thread ends)
    qtbot.keyClick(win, "l")
    assert not win.chk_layer["landmarks"].isChecked() and not win.settings.layers.landmarks
    qtbot.keyClick(win, "f")
    qtbot.waitUntil(lambda: win.isFullScreen(), timeout=5_000)
    qtbot.keyClick(win, "f")
    qtbot.waitUntil(lambda: not win.isFullScreen(), timeout=5_000)
    qtbot.keyClick(win, "q")
    qtbot.waitUntil(lambda: not win.isVisible() and not win.worker.isRunning(), timeout=15_000)


def test_blocked_ui_does_not_pile_up_results(make_window, qtbot):
    """While the UI thread is busy (here: blocked 2 s), the worker keeps processing but at most
    MAX_PENDING results wait in the event queue; the UI then continues with fresh frames."""
    from PyQt6.QtWidgets import QApplication

    from app.gui.worker import MAX_PENDING

    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_received >= 3, timeout=WAIT_MS)
    n, skipped = win.results_received, win.worker.results_skipped
    time.sleep(2.0)                      # the UI thread does nothing for 2 s (clip paced at 25 fps)
    QApplication.processEvents()
    assert win.results_received - n <= MAX_PENDING + 1
    assert win.worker.results_skipped - skipped >= 20
    qtbot.waitUntil(lambda: win.results_received > n + MAX_PENDING + 5, timeout=WAIT_MS)


def test_inconsistent_threshold_is_refused_with_the_flag_named(make_window, qtbot):
    win = make_window(source=None)
    win.spin["alert_seconds"].setValue(10.0)          # longer than --critical-seconds (3 s)
    win.spin["alert_seconds"].editingFinished.emit()
    assert win.errors and "--critical-seconds" in win.errors[-1]
    assert win.spin["alert_seconds"].value() == 2.0   # back to the value in force
    assert win.settings.monitor.alert_seconds == 2.0


def test_playlist_head_turn_raises_the_banner_and_the_sound_end_to_end(make_window, qtbot):
    """The real pipeline + monitor on a playlist source: a frontal AFLW2000 face (yaw 4.7 deg) for
    4 s (calibration), a face turned by -54.7 deg for 4 s, frontal again: the window shows the
    looking-around alert escalating to critical (red) and plays the sound."""
    a = str(shared("media", "aflw2000", "image00430.jpg"))
    b = str(shared("media", "aflw2000", "image00251.jpg"))
    win = make_window(source=None)
    win.open_source([(a, 4.0), (b, 4.0), (a, 2.0)])
    def critical_shown():
        win.refresh_now()
        return win.banner.text() == "LOOKING AROUND — critical"

    qtbot.waitUntil(critical_shown, timeout=WAIT_MS)
    assert "#e00000" in win.banner.styleSheet()
    assert win.sound.calls >= 1
    assert win.lbl_calib.text().startswith("● calibrated")
    yaw = win.plots.values("yaw")
    assert np.nanmin(yaw) < -30 and np.nanmax(yaw) > -10   # the turn is in the plot


def test_built_in_mesh_chosen_while_models_holds_an_onnx(make_window, qtbot, tmp_path, monkeypatch, tddfa_onnx):
    """models/ (pointed at tmp_path) holds the real 3DDFA-V2 export, so the default runs it; the
    combo still lists "Face mesh (built-in)" and choosing it runs the mediapipe face mesh."""
    from app import pipeline
    from app.gui import binding
    from app.gui.window import MESH_MODEL_LABEL
    from app.pipeline import MESH_MODEL_NAME
    from app.settings import MESH_MODEL

    models = tmp_path / "models"
    models.mkdir()
    (models / "3ddfa_v2_mb05.onnx").symlink_to(tddfa_onnx)
    monkeypatch.setattr(pipeline, "MODELS_DIR", models)
    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.latest is not None and win.latest.stats.model == "3ddfa_v2_mb05", timeout=WAIT_MS)
    assert win.model_combo.currentText() == "Default (3ddfa_v2_mb05.onnx)"
    i = win.model_combo.findData(MESH_MODEL)
    assert i >= 0 and win.model_combo.itemText(i) == MESH_MODEL_LABEL
    win.model_combo.setCurrentIndex(i)
    win.model_combo.activated.emit(i)               # what a click on the entry does
    qtbot.waitUntil(lambda: win.model_name == MESH_MODEL_NAME, timeout=WAIT_MS)
    assert binding.get_model(win.settings) == MESH_MODEL == win.worker.settings.model
    assert win.model_combo.currentData() == MESH_MODEL and "mediapipe" in win.provider
    qtbot.waitUntil(lambda: win.latest.stats.model == MESH_MODEL_NAME and bool(win.latest.observations),
                    timeout=WAIT_MS)
    face = win.latest.observations[0]
    assert face.vertices is None and face.mesh_points is not None and face.model == MESH_MODEL_NAME
    qtbot.waitUntil(lambda: f"model: {MESH_MODEL_NAME}" in win.status_text(), timeout=10_000)


def test_two_faces_panel_plots_and_alerts_follow_the_monitors_driver(make_window, qtbot, tmp_path):
    """Two people in view, the driver the smaller face: the driver is alone in view for 2 s (the
    other face painted over), then both are. The side panel, the plots and the monitor's signals
    (what its alerts judge) are all about the driver, not about the larger passenger."""
    import cv2

    img = cv2.imread(str(shared("media", "two_faces.jpg")))
    h, w = img.shape[:2]
    # the right person shrunk to 0.7 x about the centre of its half: the driver is the smaller face
    half = np.full((h, w - w // 2, 3), 128, np.uint8)
    small = cv2.resize(img[:, w // 2:], None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    y0, x0 = (h - small.shape[0]) // 2, (half.shape[1] - small.shape[1]) // 2
    half[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    img[:, w // 2:] = half
    alone = img.copy()
    alone[:, : w // 2] = 128                       # the left face (the larger one) painted over
    cv2.imwrite(str(tmp_path / "alone.png"), alone)
    cv2.imwrite(str(tmp_path / "both.png"), img)
    win = make_window(_settings("--model", "mesh", "--device", "cpu"),
                      source=[(str(tmp_path / "alone.png"), 2.0), (str(tmp_path / "both.png"), 30.0)])
    qtbot.waitUntil(lambda: win.latest is not None and len(win.latest.observations) == 2, timeout=WAIT_MS)
    checked = 0
    while checked < 5:
        qtbot.wait(200)
        r = win.latest
        if len(r.observations) != 2:
            continue
        win.refresh_now()
        d = r.driver
        largest = max(r.observations, key=lambda o: o.area)
        assert d is not largest and d.box[0] > img.shape[1] / 2      # the right face, the one seen first
        for k, v in (("yaw", d.yaw), ("pitch", d.pitch), ("roll", d.roll)):
            assert win.lbl_angles[k].text() == f"{v:+.1f}°"
        assert win.lbl_angles["yaw"].text() != f"{largest.yaw:+.1f}°"
        assert win.plots.values("yaw")[-1] == d.yaw and win.plots.values("mouth")[-1] == d.mouth_open
        assert win.plots.values("eye_left")[-1] == d.eye_open[0]
        # the monitor judged the same face (its alerts come from these signals)
        assert r.state.signals["mouth_open"] == d.mouth_open != largest.mouth_open
        assert r.state.signals["eye_open_left"] == d.eye_open[0]
        checked += 1


def test_camera_lost_says_so_then_resumes(make_window, qtbot, monkeypatch):
    """A camera that stops delivering: the banner says monitoring is unavailable and the sound
    plays; the camera is reopened and processing resumes."""
    from tests.test_capture import FlakyCamera

    dev = FlakyCamera(first=30, down=5, size=(320, 240), period=0.02).install(monkeypatch)
    win = make_window(source=0)
    qtbot.waitUntil(lambda: win.camera_lost is not None, timeout=WAIT_MS)
    assert win.banner.text() == "CAMERA LOST — monitoring unavailable" and win.banner_level == "critical"
    assert any(e.startswith("camera lost: camera 0: stopped delivering frames") for e in win.errors)
    assert win.sound.calls >= 1
    qtbot.waitUntil(lambda: win.camera_lost is None, timeout=WAIT_MS)
    assert dev.failed_opens == 5
    n = win.results_received
    qtbot.waitUntil(lambda: win.results_received > n + 5, timeout=WAIT_MS)
    assert "CAMERA LOST" not in win.banner.text()


def test_full_disk_while_recording_shows_the_error_and_monitoring_goes_on(make_window, qtbot, small_disk):
    disk = small_disk("1m")
    win = make_window(source=str(shared(*CLIP)))
    qtbot.waitUntil(lambda: win.results_shown >= 2, timeout=WAIT_MS)
    out = disk / "r.mp4"
    win.start_recording(str(out))
    qtbot.waitUntil(lambda: any("disk full" in e for e in win.errors), timeout=WAIT_MS)
    msg = [e for e in win.errors if "disk full" in e][0]
    assert msg.startswith("error: disk full: cannot write the recording") and str(out) in msg
    assert msg.endswith("monitoring goes on without it")
    qtbot.waitUntil(lambda: win.recording_path is None, timeout=10_000)
    shown = win.message.text()           # the window keeps showing why the recording stopped
    assert shown.startswith("recording stopped: disk full") and str(out) in shown
    n = win.results_received
    qtbot.waitUntil(lambda: win.results_received > n + 5, timeout=WAIT_MS)   # the monitor goes on
    assert out.exists()
