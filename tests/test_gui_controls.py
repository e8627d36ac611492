"""The window's controls and their plumbing, fast: a stand-in pipeline (no model, no video) behind the
real ProcessingWorker and MainWindow (offscreen), to check what the controls send and show: the
model combo (built-in face mesh always listed, restored after a failed load), UI changes that must
not undo a model switch, saved settings vs command-line flags, the no-camera message, the
headless-only flags warning."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("app.pipeline")

WAIT_MS = 20_000


def _settings(*flags: str):
    from app import cli

    return cli.settings_from_args(cli.build_parser().parse_args(list(flags)))


class _Sound:
    def play(self):
        pass


class _FakeMonitor:
    def __init__(self, settings):
        self.settings = settings

    def update_settings(self, settings):
        self.settings = settings

    def summary(self):
        return {"event": "summary", "alerts": 0}


class _FakePipeline:
    """What the worker and the window use of app.pipeline.Pipeline, without a model."""

    def __init__(self, settings):
        from app.gui import binding

        self.settings = settings
        self.layers = settings.layers
        m = binding.get_model(settings)
        self.model_name = "default" if m is None else ("mesh" if m == binding.MESH_MODEL else Path(m).stem)
        self.provider = "CPU"
        self.monitor = _FakeMonitor(settings.monitor) if settings.monitor is not None else None
        self.backend = SimpleNamespace(triangles=None)
        self.closed = False

    def prepare(self, vertices):
        pass

    def process(self, frame, vertices=True, blendshapes=True):
        from app.core.types import FrameResult

        return FrameResult(frame=frame, observations=[], model=self.model_name, provider=self.provider)

    def close(self):
        self.closed = True


@pytest.fixture
def window(qtbot, tmp_path):
    from PyQt6.QtCore import QSettings

    from app.gui.window import MainWindow
    from app.gui.worker import ProcessingWorker

    made = []

    def make(settings=None, *, factory=_FakePipeline, restore=False, list_cameras=False, source=None, argv=None):
        settings = settings if settings is not None else _settings()
        qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
        worker = ProcessingWorker(settings, pipeline_factory=factory)

        class W(MainWindow):
            pass

        if argv is not None:
            from app.gui import explicit_flags

            W.cli_explicit = explicit_flags(argv)
        win = W(settings, source=source, qsettings=qs, worker=worker, restore=restore,
                list_cameras_at_start=list_cameras, sound=_Sound())
        qtbot.addWidget(win)
        made.append(win)
        return win

    yield make
    for w in made:
        w.close()
        assert not w.worker.isRunning()


def _combo(win):
    c = win.model_combo
    return [(c.itemText(i), c.itemData(i)) for i in range(c.count())]


# ---------------------------------------------------------------------------------------- model
def test_model_combo_always_offers_the_built_in_mesh_and_chooses_it_with_an_onnx_in_models(
        window, qtbot, tmp_path, monkeypatch):
    """models/ holds an ONNX file (the folder is pointed at tmp_path): None = that file
    ("Default (a.onnx)"); "Face mesh (built-in)" is listed too and picking it sends MESH_MODEL."""
    from app import pipeline
    from app.gui import binding
    from app.gui.window import MESH_MODEL_LABEL
    from app.settings import MESH_MODEL

    models = tmp_path / "models"
    models.mkdir()
    (models / "a.onnx").write_bytes(b"stand-in")
    monkeypatch.setattr(pipeline, "MODELS_DIR", models)
    sent = []
    win = window(factory=lambda s: (sent.append(binding.get_model(s)), _FakePipeline(s))[1])
    qtbot.waitUntil(lambda: win.model_name == "default", timeout=WAIT_MS)
    items = _combo(win)
    assert items[0] == ("Default (a.onnx)", None) and win.model_combo.currentIndex() == 0
    assert items[1] == (MESH_MODEL_LABEL, MESH_MODEL)
    assert ("a.onnx", str(models / "a.onnx")) in items and items[-1][1] == "__browse__"
    i = win.model_combo.findData(MESH_MODEL)
    win.model_combo.setCurrentIndex(i)
    win.model_combo.activated.emit(i)                  # what a click on the entry does
    qtbot.waitUntil(lambda: win.model_name == "mesh", timeout=WAIT_MS)
    assert sent == [None, MESH_MODEL]
    assert binding.get_model(win.settings) == MESH_MODEL == win.worker.settings.model
    assert win.model_combo.currentData() == MESH_MODEL and win.model_combo.currentText() == MESH_MODEL_LABEL
    # saved: the next start restores the mesh choice although models/ still holds a.onnx
    win.close()
    win2 = window(restore=True)
    qtbot.waitUntil(lambda: win2.model_name == "mesh", timeout=WAIT_MS)
    assert win2.model_combo.currentData() == MESH_MODEL


def test_model_combo_without_user_models_defaults_to_the_shipped_3dmm(window, qtbot, tmp_path, monkeypatch):
    """No models/*.onnx: the default is the shipped 3DDFA-V2; the mesh and the shipped model are
    listed once each."""
    from app import pipeline
    from app.gui.window import MESH_MODEL_LABEL, SHIPPED_MODEL_LABEL
    from app.settings import MESH_MODEL

    monkeypatch.setattr(pipeline, "MODELS_DIR", tmp_path / "empty")
    monkeypatch.chdir(tmp_path)                        # no ./models either
    win = window()
    items = _combo(win)
    shipped = str(pipeline.SHIPPED_MODEL)
    assert items == [(f"Default ({pipeline.SHIPPED_MODEL.name})", None), (MESH_MODEL_LABEL, MESH_MODEL),
                     (SHIPPED_MODEL_LABEL, shipped), ("Browse…", "__browse__")]
    assert win.model_combo.currentIndex() == 0


def test_model_combo_without_any_3dmm_lists_the_mesh_once_and_selects_it(window, qtbot, tmp_path, monkeypatch):
    from app import pipeline
    from app.gui.window import MESH_MODEL_LABEL

    monkeypatch.setattr(pipeline, "MODELS_DIR", tmp_path / "empty")
    monkeypatch.setattr(pipeline, "SHIPPED_MODEL", tmp_path / "none.onnx")
    monkeypatch.chdir(tmp_path)                        # no ./models either
    win = window()
    items = _combo(win)
    assert [t for t, _ in items] == [MESH_MODEL_LABEL, "Browse…"]
    assert win.model_combo.currentText() == MESH_MODEL_LABEL   # None runs the mesh here


def test_failed_model_load_puts_the_running_model_back_in_the_combo(window, qtbot, tmp_path):
    good = tmp_path / "good.onnx"
    bad = tmp_path / "bad.onnx"
    for p in (good, bad):
        p.write_bytes(b"stand-in")

    def factory(s):
        if s.model == str(bad):
            raise RuntimeError("[ONNXRuntimeError] INVALID_PROTOBUF: bad.onnx")
        return _FakePipeline(s)

    win = window(factory=factory)
    qtbot.waitUntil(lambda: win.model_name == "default", timeout=WAIT_MS)
    win.set_model(str(good))
    qtbot.waitUntil(lambda: win.model_name == "good", timeout=WAIT_MS)
    assert win.model_combo.currentData() == str(good)
    failed = []
    win.worker.model_failed.connect(failed.append)
    win.set_model(str(bad))
    assert win.model_combo.currentData() == str(bad)   # the choice shows at once
    qtbot.waitUntil(lambda: len(failed) == 1, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.model_combo.currentData() == str(good), timeout=WAIT_MS)
    assert failed[0].startswith("model failed to load") and "INVALID_PROTOBUF" in failed[0]
    assert win.message.text() == failed[0] and win.model_name == "good"
    assert win.worker.settings.model == str(good)


def test_threshold_layer_smoothing_changes_while_a_model_loads_keep_the_new_model(window, qtbot, tmp_path):
    """The window sends its whole Settings (still naming the old model) when a threshold changes;
    the worker takes only thresholds / layers / smoothing from it: the switch is not undone, no
    extra pipeline is built, and every change reaches the new pipeline."""
    from app.gui import binding

    slow = str(tmp_path / "slow.onnx")
    gate = threading.Event()
    built = []

    def factory(s):
        built.append(binding.get_model(s))
        if s.model == slow:
            assert gate.wait(30)
        return _FakePipeline(s)

    win = window(factory=factory)
    qtbot.waitUntil(lambda: win.model_name == "default", timeout=WAIT_MS)
    win.set_model(slow)
    qtbot.waitUntil(lambda: len(built) == 2, timeout=WAIT_MS)   # the worker is loading slow.onnx
    win.spin["alert_yaw"].setValue(42)
    win.spin["alert_yaw"].editingFinished.emit()
    win.chk_layer["mesh"].setChecked(False)
    win.chk_smooth.setChecked(False)
    assert binding.get_model(win.settings) is None            # what the window sent names the old model
    gate.set()
    qtbot.waitUntil(lambda: win.model_name == "slow", timeout=WAIT_MS)

    def applied():
        p = win.worker.pipeline
        return (p.monitor.settings.alert_yaw == 42.0 and not p.layers.mesh and p.settings.smoothing is False)

    qtbot.waitUntil(applied, timeout=WAIT_MS)
    qtbot.wait(300)                                            # nothing else may follow
    assert built == [None, slow]
    assert win.worker.settings.model == slow and win.worker.pipeline.model_name == "slow"
    assert binding.get_model(win.settings) == slow and win.model_combo.currentData() == slow
    assert win.settings.monitor.alert_yaw == 42.0 and not win.settings.layers.mesh


def test_ui_settings_update_takes_only_ui_fields():
    from app.gui import binding

    base = _settings("--model", "mesh", "--detect-every", "3")
    ui = binding.with_threshold(_settings("--detect-every", "9"), "alert_yaw", 33.0)
    ui = binding.with_layer(binding.with_smoothing(ui, False), "box", False)
    out = binding.with_ui_fields(base, ui)
    assert out.model == "mesh" and out.detect_every == 3          # not UI fields: from base
    assert out.monitor.alert_yaw == 33.0 and out.smoothing is False and out.layers.box is False


# ---------------------------------------------------------------------------------------- restore
@pytest.mark.parametrize("argv, want_threshold, want_window", [
    (["--perclos-window", "30"], 0.3, 30.0),          # another flag containing "perclos": saved value stays
    (["--perclos-threshold", "0.25"], 0.25, 60.0),    # the flag itself wins
    (["--perclos-thr", "0.25"], 0.25, 60.0),          # an argparse abbreviation of it
    (["--perclos-min-seconds", "20"], 0.3, 60.0),
])
def test_saved_thresholds_are_overridden_only_by_their_own_flag(qtbot, tmp_path, argv, want_threshold, want_window):
    from PyQt6.QtCore import QSettings

    from app.gui import explicit_flags
    from app.gui.window import MainWindow

    qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    qs.setValue("thresholds/perclos_threshold", 0.3)
    qs.setValue("thresholds/alert_yaw", 40.0)
    qs.setValue("layers/monitor", False)
    settings = _settings(*argv, "--no-eyes")

    class W(MainWindow):
        cli_explicit = explicit_flags(argv + ["--no-eyes"])

    win = W.__new__(W)
    win.qs = qs
    restored = W._restore_settings(win, settings)
    assert restored.monitor.perclos_threshold == want_threshold
    assert restored.monitor.perclos_window == want_window
    assert restored.monitor.alert_yaw == 40.0
    assert restored.layers.monitor is False             # --no-eyes is not a layer flag


def test_no_monitor_flag_does_not_block_the_saved_monitor_layer(tmp_path):
    """--no-monitor turns the driver monitor off; it is not the "monitor" overlay layer's flag."""
    from PyQt6.QtCore import QSettings

    from app.gui import explicit_flags
    from app.gui.window import MainWindow

    qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    qs.setValue("layers/monitor", False)
    qs.setValue("layers/box", False)

    class W(MainWindow):
        cli_explicit = explicit_flags(["--no-monitor"])

    win = W.__new__(W)
    win.qs = qs
    restored = W._restore_settings(win, _settings("--no-monitor"))
    assert restored.layers.monitor is False and restored.layers.box is False


def test_explicit_flags_resolve_to_setting_names():
    from app.gui import explicit_flags

    got = explicit_flags(["--video", "x.mp4", "--perclos-window=30", "--no-smoothing", "--layers", "all",
                          "--alert-y", "20", "--model", "mesh", "--screenshot-after", "3", "x.png"])
    assert {"perclos_window", "smoothing", "layers", "alert_yaw", "model", "video"} <= got
    assert "perclos_threshold" not in got and "perclos" not in got


# ---------------------------------------------------------------------------------------- sources
def test_no_camera_and_no_source_shows_a_message(window, qtbot, monkeypatch):
    import app.io.capture as capture

    monkeypatch.setattr(capture, "list_cameras", lambda *a, **k: [])
    from app.gui.window import NO_SOURCE_MESSAGE

    win = window(list_cameras=True)
    # the camera listing and the model's status line arrive in either order: the hint stays
    qtbot.waitUntil(lambda: hasattr(win, "cameras") and win.model_name == "default", timeout=WAIT_MS)
    assert NO_SOURCE_MESSAGE in win.messages
    assert "No camera found" in win.message.text() and "Open video" in win.message.text()
    assert win.view.placeholder == NO_SOURCE_MESSAGE
    assert win.source_combo.currentText() == "(no source)"
    # "Refresh cameras" with a camera plugged in now: no such message this time
    monkeypatch.setattr(capture, "list_cameras", lambda *a, **k: [0])
    win.message.setText("")
    i = win.source_combo.findData("__refresh__")
    win.source_combo.activated.emit(i)
    qtbot.waitUntil(lambda: win.source_combo.findData(0) >= 0, timeout=WAIT_MS)
    assert "No camera found" not in win.message.text() and win.message.text() == "looking for cameras…"
    assert win.view.placeholder != NO_SOURCE_MESSAGE


def test_no_camera_but_a_source_given_shows_no_no_source_message(window, qtbot, monkeypatch):
    from tests.conftest import shared

    import app.io.capture as capture

    monkeypatch.setattr(capture, "list_cameras", lambda *a, **k: [])
    clip = str(shared("media", "talking_head_720p.mp4"))
    win = window(list_cameras=True, source=clip)
    qtbot.waitUntil(lambda: hasattr(win, "cameras") and win.results_received > 0, timeout=WAIT_MS)
    assert not any("No camera found" in m for m in win.messages)
    assert "No camera found" not in win.message.text()


def test_no_camera_and_a_source_that_does_not_open_shows_the_hint_after_the_error(window, qtbot, monkeypatch,
                                                                                  tmp_path):
    import app.io.capture as capture

    monkeypatch.setattr(capture, "list_cameras", lambda *a, **k: [])
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video" * 50)
    win = window(list_cameras=True, source=str(bad))
    qtbot.waitUntil(lambda: hasattr(win, "cameras") and bool(win.errors), timeout=WAIT_MS)
    assert "broken.mp4" in win.errors[-1]
    # the error first, then the hint (listing and failure arrive in either order)
    qtbot.waitUntil(lambda: "No camera found" in win.message.text(), timeout=WAIT_MS)
    text = win.message.text()
    assert "broken.mp4" in text and text.index("broken.mp4") < text.index("No camera found")


# ---------------------------------------------------------------------------------------- flags
def test_headless_only_flags_log_one_warning(caplog):
    from app import cli
    from app.gui import warn_headless_only

    args = cli.build_parser().parse_args(["--video", "x.mp4", "--events", "e.jsonl", "--dump", "d.jsonl",
                                          "--max-frames", "10", "--quiet"])
    with caplog.at_level(logging.WARNING, logger="app.gui"):
        msg = warn_headless_only(cli.run_options_from_args(args))
    recs = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(recs) == 1 and recs[0].getMessage() == msg
    for flag in ("--events", "--dump", "--max-frames", "--quiet"):
        assert flag in msg
    assert "headless" in msg and "beside each recording" in msg and ".events.jsonl" in msg
    caplog.clear()
    args = cli.build_parser().parse_args(["--video", "x.mp4", "--record", "r.mp4", "--sound"])
    with caplog.at_level(logging.WARNING, logger="app.gui"):
        assert warn_headless_only(cli.run_options_from_args(args)) is None
    assert not caplog.records


# ------------------------------------------------------------------------------------ recording
def test_recording_asked_with_the_source_starts_with_its_run_and_a_new_source_ends_it(window, qtbot, tmp_path):
    """What ``--record`` at start does: the source and the recording asked for at once, before the
    source's run (the worker's Runner) begins; the recording starts with the run and records the
    drawn frames; opening another source ends it (the file and its events, summary last) while the
    new source runs on."""
    from app.monitor.events import read_events
    from tests.conftest import decoded_frames, shared

    out = tmp_path / "take.mp4"
    win = window(source=str(shared("media", "talking_head_720p.mp4")))
    win.start_recording(str(out))                 # queued right behind the source, as --record does
    qtbot.waitUntil(lambda: win.recording_path == str(out), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.latest is not None and win.latest.stats.recording_frames >= 10, timeout=WAIT_MS)
    assert win.latest.stats.recording == str(out) and win.latest.stats.source == "talking_head_720p.mp4"
    win.open_source(str(shared("media", "clips", "expressions_d18.mp4")))
    qtbot.waitUntil(lambda: win.recording_path is None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: win.latest.stats.source == "expressions_d18.mp4", timeout=WAIT_MS)
    assert win.latest.stats.recording is None
    done = [m for m in win.messages if m.startswith("recorded ")]
    assert len(done) == 1 and done[0].endswith(f"frames to {out}")
    assert decoded_frames(out) == int(done[0].split()[1]) >= 10
    assert read_events(out.with_name("take.events.jsonl"))[-1]["event"] == "summary"
