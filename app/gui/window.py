"""The main window: video with overlays, live plots, alert banner, controls and status bar.

All capture / inference / recording runs in ``ProcessingWorker`` (app/gui/worker.py: the app's
``Runner`` with hooks for the window, off the UI thread). The window
receives every ``Result`` through a queued signal (``_on_result`` only stores it and appends the
plot numbers) and repaints at a fixed rate from a QTimer (``REDRAW_HZ``), showing only the latest
result.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import statistics
import time
import wave
from collections import deque
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PyQt6.QtCore import QObject, QRect, QSettings, QSize, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QGuiApplication, QKeySequence, QShortcut
from PyQt6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFrame,
                             QGridLayout, QGroupBox, QHBoxLayout, QLabel, QMainWindow,
                             QPushButton, QScrollArea, QSizePolicy, QSplitter, QStatusBar,
                             QToolBar, QVBoxLayout, QWidget)

from app.core.errors import one_line
from app.gui import binding
from app.gui.plots import SignalPlots
from app.gui.video import VideoView
from app.gui.worker import ProcessingWorker, Result, default_recording_path
from app.render import banner_text, draw_result
from app.settings import Layers

log = logging.getLogger(__name__)

REDRAW_HZ = 30          # video redraw rate cap (and never above the source's frame rate)
PLOT_HZ = 20            # plot redraw rate (smooth curves need >= 15 Hz)
PANEL_HZ = 8            # numbers, calibration indicator, status bar refresh rate
ROOT = Path(__file__).resolve().parents[2]
ALERT_WAV = ROOT / "assets" / "alert.wav"
EMERGENCY_WAV = ROOT / "assets" / "emergency.wav"   # the unresponsive driver: louder, repeated
MESH_MODEL_LABEL = "Face mesh (built-in)"
SHIPPED_MODEL_LABEL = "3DDFA-V2 x0.5 (shipped)"
MESH_MODEL = binding.MESH_MODEL          # Settings.model of the built-in face mesh ("mesh")
NO_SOURCE_MESSAGE = ("No camera found and no source open: open a video file (Open video…), or plug in "
                     "a camera and choose \"Refresh cameras\" in the source list.")
# First window size where the screen has room for it; on a smaller screen the window takes the
# screen's available area (less FRAME_MARGIN) and the side column scrolls.
PREFERRED_SIZE = (1600, 960)
# left + right, top + bottom kept free for the window manager's frame and title bar
FRAME_MARGIN = (16, 40)
PLOTS_MIN_HEIGHT = 300      # 4 plots of ~75 px: the side column fits 1280x720 without scrolling
SIDE_MIN_WIDTH = 380        # yaw / pitch / roll numbers and the 2-column settings grid
LEVEL_STYLE = {
    "none": "background:#2a2a2a; color:#9a9a9a; font-size:16pt; padding:6px;",
    "warning": "background:#ffb000; color:#000; font-weight:bold; font-size:16pt; padding:6px;",
    "critical": "background:#e00000; color:#fff; font-weight:bold; font-size:16pt; padding:6px;",
}


def _models_dir() -> Path:
    """The folder app.pipeline takes the default model from (app.pipeline.MODELS_DIR)."""
    from app import pipeline

    return Path(pipeline.MODELS_DIR)


def model_choices(extra_dirs=()) -> list[str]:
    """models/*.onnx (the pipeline's models folder and the working directory's), sorted, without
    duplicates."""
    seen, out = set(), []
    for d in (_models_dir(), Path.cwd() / "models", *map(Path, extra_dirs)):
        for p in sorted(glob.glob(str(d / "*.onnx"))):
            rp = os.path.realpath(p)
            if rp not in seen:
                seen.add(rp)
                out.append(p)
    return out


def write_png_atomic(path: str | os.PathLike, image_bgr: np.ndarray) -> Path:
    """PNG written to a temp file in the same folder, then renamed (never a half-written file)."""
    path = Path(path)
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise OSError(f"cannot encode PNG for {path}")
    tmp = path.with_name("." + path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


class _CameraLister(QObject):
    """list_cameras() off the UI thread (probing indices can take a while)."""
    found = pyqtSignal(list)

    def start(self):
        import threading

        def run():
            from app.io.capture import list_cameras

            try:
                cams = list_cameras()
            except cv2.error as e:      # a camera driver failing while probed: say so, list none
                log.warning("camera listing failed: %s", one_line(e))
                cams = []
            self.found.emit(cams)

        threading.Thread(target=run, name="list-cameras", daemon=True).start()


class MainWindow(QMainWindow):
    # setting names given on the command line (app.cli.explicit_flags): they win over the saved ones
    cli_explicit: frozenset = frozenset()

    def __init__(self, settings, *, source=None, qsettings: Optional[QSettings] = None,
                 worker: Optional[ProcessingWorker] = None, restore: bool = True,
                 list_cameras_at_start: bool = True, sound=None):
        super().__init__()
        self.setWindowTitle("face3d-monitor")
        self._pending_source = None     # the source last asked for (open_source)
        self._running_spec = None       # the source that runs (its open succeeded)
        self._thr_key = None            # the thresholds / neutral pose the plots' lines show
        self.qs = qsettings if qsettings is not None else QSettings("face3d-monitor", "gui")
        if restore:
            settings = self._restore_settings(settings)
        self.settings = settings
        self.worker = worker if worker is not None else ProcessingWorker(settings)
        if not self.worker.isRunning():
            self.worker.settings = settings    # restored settings: the pipeline is built from these
        self.sound = sound if sound is not None else self._make_sound(ALERT_WAV)
        # the unresponsive driver's sound, repeated once a second until the driver responds (an
        # injected sound plays for both)
        self.emergency_sound = sound if sound is not None else self._make_sound(EMERGENCY_WAV, 1.0)
        self.latest: Optional[Result] = None
        self.latest_drawn: Optional[Result] = None   # the newest result with a drawn image (the view's)
        self._latest_new = False
        self.results_received = 0
        self.results_shown = 0
        self.latencies_ms: deque = deque(maxlen=120)
        self.messages: list[str] = []          # every info/error line shown (tests + log)
        self.errors: list[str] = []
        self._active_alerts: set = set()
        self.sounds_played = 0
        self.recording_path: Optional[str] = None
        self._rec_started = 0.0
        self.model_name, self.provider = "", ""
        self.source_name = ""
        self._sources_requested = self._sources_settled = 0   # open_source calls / their outcomes
        self.record_dir = self.qs.value("record_dir", str(Path.cwd() / "recordings"))
        self.record_path_override: Optional[str] = None
        self.snapshot_dir = self.qs.value("snapshot_dir", str(Path.cwd() / "recordings"))

        self._build_ui()
        self._connect_worker()
        self._build_shortcuts()
        geo = self.qs.value("geometry")
        self.fit_to_screen(restored=bool(restore and geo is not None and self.restoreGeometry(geo)))

        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._redraw)
        self.timer.start(int(1000 / REDRAW_HZ))
        self.worker.redraw_period = self.timer.interval() / 1000.0    # frames it would not show are not drawn
        self.plot_timer = QTimer(self)
        self.plot_timer.timeout.connect(self.plots.redraw)
        self.plot_timer.start(int(1000 / PLOT_HZ))
        self.status_timer = QTimer(self)
        self.status_timer.timeout.connect(self._update_panel)
        self.status_timer.start(int(1000 / PANEL_HZ))

        self.worker.start()
        if source is None and restore:
            last = self.qs.value("source")
            if last and not str(last).isdigit() and Path(str(last)).is_file():
                source = str(last)
        if source is not None:
            self.open_source(source)
        if list_cameras_at_start:
            self._lister = _CameraLister()
            self._lister.found.connect(self._on_cameras)
            self._lister.start()

    # ------------------------------------------------------------------ construction
    def _make_sound(self, path, min_interval: float = 2.0):
        from app.io.sound import AlertSound

        try:
            return AlertSound(str(path), min_interval=min_interval)
        except (OSError, ValueError, EOFError, wave.Error) as e:  # assets/alert.wav missing or broken
            log.warning("alert sound unavailable (alerts are shown, not heard): %s", one_line(e))
            return None

    def _build_ui(self) -> None:
        """The window: a toolbar, the video column and the side column side by side, a status bar."""
        self._build_toolbar()
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_video_column())
        split.addWidget(self._build_side_column())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setChildrenCollapsible(False)
        self.setCentralWidget(split)
        self._build_status_bar()

    def _build_toolbar(self) -> None:
        """Source, model, start/pause, record, snapshot."""
        tb = QToolBar("controls", self)
        tb.setMovable(False)
        self.addToolBar(tb)
        tb.addWidget(QLabel(" Source "))
        self.source_combo = QComboBox()
        self.source_combo.setMinimumWidth(220)
        self.source_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.source_combo.activated.connect(self._on_source_combo)
        tb.addWidget(self.source_combo)
        self.btn_open = QPushButton("Open video…")
        self.btn_open.clicked.connect(self._choose_file)
        tb.addWidget(self.btn_open)
        tb.addSeparator()
        tb.addWidget(QLabel(" Model "))
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(200)
        self.model_combo.activated.connect(self._on_model_combo)
        tb.addWidget(self.model_combo)
        tb.addSeparator()
        self.btn_pause = QPushButton("Pause")
        self.btn_pause.setCheckable(True)
        self.btn_pause.toggled.connect(self.set_paused)
        tb.addWidget(self.btn_pause)
        self.btn_record = QPushButton("● Record")
        self.btn_record.setCheckable(True)
        self.btn_record.toggled.connect(self._on_record_toggled)
        tb.addWidget(self.btn_record)
        self.btn_record_path = QPushButton("Record to…")
        self.btn_record_path.clicked.connect(self._choose_record_path)
        tb.addWidget(self.btn_record_path)
        self.btn_snapshot = QPushButton("Snapshot")
        self.btn_snapshot.clicked.connect(lambda: self.snapshot())
        tb.addWidget(self.btn_snapshot)
        for b in (self.btn_open, self.btn_pause, self.btn_record, self.btn_record_path, self.btn_snapshot):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self._fill_model_combo()
        self._fill_source_combo([])

    def _build_video_column(self) -> QWidget:
        """The alert banner over the video, the message line under it."""
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.setSpacing(2)
        self.banner = QLabel("no alerts")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setStyleSheet(LEVEL_STYLE["none"])
        self.banner_level = None
        self.camera_lost: Optional[str] = None    # the lost-camera message while it lasts
        lv.addWidget(self.banner)
        self.view = VideoView()
        lv.addWidget(self.view, 1)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("padding:3px;")
        lv.addWidget(self.message)
        return left

    def _build_side_column(self) -> QScrollArea:
        """Numbers, calibration, plots and the settings, in a column that scrolls when the screen
        is too short."""
        right = QWidget()
        right.setMinimumWidth(SIDE_MIN_WIDTH)
        rv = QVBoxLayout(right)
        rv.setContentsMargins(4, 0, 4, 0)
        rv.addLayout(self._build_angle_numbers())
        rv.addLayout(self._build_calibration_row())
        self.plots = SignalPlots()
        self.plots.setMinimumHeight(PLOTS_MIN_HEIGHT)
        rv.addWidget(self.plots, 1)
        rv.addWidget(self._build_settings_box())
        self.side = QScrollArea()
        self.side.setWidget(right)
        self.side.setWidgetResizable(True)       # the plots take the height the screen has
        self.side.setFrameShape(QFrame.Shape.NoFrame)
        self.side.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.side.setMinimumWidth(right.minimumSizeHint().width()
                                  + self.side.verticalScrollBar().sizeHint().width())
        return self.side

    def _build_angle_numbers(self) -> QGridLayout:
        """Yaw, pitch and roll of the driver in large digits."""
        nums = QGridLayout()
        self.lbl_angles = {}
        for i, k in enumerate(("yaw", "pitch", "roll")):
            cap = QLabel(k)
            cap.setAlignment(Qt.AlignmentFlag.AlignCenter)
            val = QLabel("–")
            val.setAlignment(Qt.AlignmentFlag.AlignCenter)
            val.setStyleSheet("font-size:20pt; font-weight:bold;")
            val.setMinimumWidth(120)        # "+123.4°" fits: text changes never re-layout
            nums.addWidget(cap, 0, i)
            nums.addWidget(val, 1, i)
            self.lbl_angles[k] = val
        return nums

    def _build_calibration_row(self) -> QHBoxLayout:
        """The calibration indicator and the Recalibrate button."""
        cal = QHBoxLayout()
        self.lbl_calib = QLabel("calibration: –")
        cal.addWidget(self.lbl_calib, 1)
        self.btn_recal = QPushButton("Recalibrate")
        self.btn_recal.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.btn_recal.clicked.connect(self.recalibrate)
        cal.addWidget(self.btn_recal)
        return cal

    def _build_settings_box(self) -> QGroupBox:
        """Thresholds, smoothing, layers and mesh style, each bound to its settings field."""
        box = QGroupBox("Settings")
        form = QGridLayout(box)
        form.setVerticalSpacing(2)
        self.spin = {}
        for n, (key, (label, lo, hi, step)) in enumerate(binding.THRESHOLDS.items()):
            sp = QDoubleSpinBox()
            sp.setRange(lo, hi)
            sp.setSingleStep(step)
            sp.setDecimals(2 if step < 1 else 0)
            v = binding.get_threshold(self.settings, key)
            if v is None:
                sp.setSpecialValueText("n/a")
                sp.setValue(lo)
                sp.setEnabled(False)
                sp.setToolTip("the driver monitor is off or not installed")
            else:
                sp.setValue(v)
            sp.editingFinished.connect(lambda k=key, s=sp: self.set_threshold(k, s.value()))
            form.addWidget(QLabel(label), n // 2, (n % 2) * 2)
            form.addWidget(sp, n // 2, (n % 2) * 2 + 1)
            self.spin[key] = sp
        row = (len(binding.THRESHOLDS) + 1) // 2
        self.chk_smooth = QCheckBox("Temporal smoothing (One Euro)")
        self.chk_smooth.setChecked(binding.get_smoothing(self.settings))
        self.chk_smooth.toggled.connect(self.set_smoothing)
        form.addWidget(self.chk_smooth, row, 0, 1, 4)
        self.chk_layer = {}
        for i, name in enumerate(Layers.NAMES):
            c = QCheckBox(name)
            c.setFocusPolicy(Qt.FocusPolicy.NoFocus)
            c.setChecked(binding.get_layer(self.settings, name))
            c.toggled.connect(lambda on, n=name: self.set_layer(n, on))
            form.addWidget(c, row + 1 + i // 4, i % 4)
            self.chk_layer[name] = c
        row += 1 + (len(Layers.NAMES) + 3) // 4
        form.addWidget(QLabel("Mesh style"), row, 0)
        self.mesh_style_combo = QComboBox()
        self.mesh_style_combo.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        for style in binding.MESH_STYLES:
            self.mesh_style_combo.addItem(style, style)
        self.mesh_style_combo.setCurrentIndex(
            max(0, self.mesh_style_combo.findData(binding.get_mesh_style(self.settings))))
        self.mesh_style_combo.setToolTip("shaded: lit 3D surface; wire: decimated wireframe; points: every "
                                         "vertex (the built-in face mesh is always a wireframe)")
        self.mesh_style_combo.activated.connect(
            lambda i: self.set_mesh_style(self.mesh_style_combo.itemData(i)))
        form.addWidget(self.mesh_style_combo, row, 1)
        return box

    def _build_status_bar(self) -> None:
        """Model, provider, capture / processing rates, latency, faces, recording."""
        sb = QStatusBar()
        self.setStatusBar(sb)
        self.st = {}
        for k, w in (("model", 220), ("provider", 175), ("capture", 120), ("process", 150),
                     ("latency", 120), ("faces", 70), ("record", 200)):
            lbl = _StatusLabel(w)
            sb.addPermanentWidget(lbl)
            self.st[k] = lbl
        self._update_status_labels()

    def _build_shortcuts(self) -> None:
        keys = {
            "Space": lambda: self.btn_pause.toggle(),
            "R": lambda: self.btn_record.toggle(),
            "C": self.recalibrate,
            "M": lambda: self.chk_layer["mesh"].toggle(),
            "L": lambda: self.chk_layer["landmarks"].toggle(),
            "F": self.toggle_fullscreen,
            "Q": self.close,
        }
        self.shortcuts = {}
        for k, fn in keys.items():
            sc = QShortcut(QKeySequence(k), self)
            sc.setContext(Qt.ShortcutContext.ApplicationShortcut)
            sc.activated.connect(fn)
            self.shortcuts[k] = sc

    def _connect_worker(self) -> None:
        w = self.worker
        w.result.connect(self._on_result)
        w.error.connect(self._on_error)
        w.info.connect(self._on_info)
        w.model_changed.connect(self._on_model_changed)
        w.source_changed.connect(self._on_source_changed)
        w.source_ended.connect(self._on_source_ended)
        w.source_failed.connect(self._on_source_failed)
        w.model_failed.connect(self._on_model_failed)
        w.recording_changed.connect(self._on_recording_changed)
        w.source_status.connect(self._on_source_status)

    # ------------------------------------------------------------------ combos
    def _fill_model_combo(self, current: Optional[str] = "__settings__") -> None:
        """Default (first models/*.onnx, else the shipped 3DDFA-V2), the built-in face mesh (always),
        the shipped 3DDFA-V2, every models/*.onnx, Browse…; ``current`` (default: the model of
        self.settings) selected."""
        if current == "__settings__":
            current = binding.get_model(self.settings)
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        default = _default_model_label()
        if default is not None:
            self.model_combo.addItem(default, None)
        self.model_combo.addItem(MESH_MODEL_LABEL, MESH_MODEL)
        from app import pipeline

        paths = model_choices()
        shipped = str(pipeline.SHIPPED_MODEL) if Path(pipeline.SHIPPED_MODEL).is_file() else None
        if shipped and os.path.realpath(shipped) not in {os.path.realpath(p) for p in paths}:
            paths.insert(0, shipped)
        if current and current != MESH_MODEL and os.path.realpath(current) not in {os.path.realpath(p) for p in paths}:
            paths.append(current)
        for p in paths:
            shown = SHIPPED_MODEL_LABEL if shipped and os.path.realpath(p) == os.path.realpath(shipped) else Path(p).name
            self.model_combo.addItem(shown, p)
        self.model_combo.addItem("Browse…", "__browse__")
        if current is None:       # the default: its entry, or the mesh when models/ is empty
            idx = 0
        elif current == MESH_MODEL:
            idx = self.model_combo.findData(MESH_MODEL)
        else:
            idx = 0
            for i in range(self.model_combo.count()):
                d = self.model_combo.itemData(i)
                if d not in (None, MESH_MODEL, "__browse__") and os.path.realpath(d) == os.path.realpath(current):
                    idx = i
        self.model_combo.setCurrentIndex(idx)
        self.model_combo.blockSignals(False)

    def _fill_source_combo(self, cameras: list[int]) -> None:
        cur = self.source_combo.currentData()
        files = [self.source_combo.itemData(i) for i in range(self.source_combo.count())
                 if isinstance(self.source_combo.itemData(i), str)
                 and not str(self.source_combo.itemData(i)).startswith("__")]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItem("(no source)", "__none__")
        for c in cameras:
            self.source_combo.addItem(f"Camera {c}", int(c))
        if not cameras:
            self.source_combo.addItem("no cameras found (refresh)", "__refresh__")
        else:
            self.source_combo.addItem("Refresh cameras", "__refresh__")
        for f in files:
            self.source_combo.addItem(Path(f).name, f)
        i = self.source_combo.findData(cur)
        self.source_combo.setCurrentIndex(max(0, i))
        self.source_combo.blockSignals(False)

    def _on_cameras(self, cams: list) -> None:
        self.cameras = list(cams)
        self._fill_source_combo(self.cameras)
        hint = self._no_source_hint()
        if hint is not None:         # after the line shown (an error about the source stays readable)
            log.info(hint)
            self.messages.append(hint)
            self._append_hint()
        elif NO_SOURCE_MESSAGE in self.message.text():   # a camera turned up: drop the hint
            self.message.setText(self.message.text().replace(NO_SOURCE_MESSAGE, "").rstrip(" —"))
        self.view.placeholder = hint or VideoView.PLACEHOLDER
        self.view.update()

    def _no_source_hint(self) -> Optional[str]:
        """NO_SOURCE_MESSAGE while no camera was found and no source runs or is opening."""
        if getattr(self, "cameras", None) != [] or self.source_name:
            return None
        opening = self._sources_requested > self._sources_settled
        return None if opening else NO_SOURCE_MESSAGE

    def _on_source_combo(self, idx: int) -> None:
        d = self.source_combo.itemData(idx)
        if d == "__refresh__":
            self.cameras = None                  # unknown until the listing answers
            self._lister = _CameraLister()
            self._lister.found.connect(self._on_cameras)
            self._lister.start()
            self._on_info("looking for cameras…")
        elif d == "__none__":
            self.worker.stop_source()
        elif d is not None:
            self.open_source(d)

    def _on_model_combo(self, idx: int) -> None:
        d = self.model_combo.itemData(idx)
        if d == "__browse__":
            path, _ = QFileDialog.getOpenFileName(self, "Choose an ONNX model", str(ROOT / "models"),
                                                  "ONNX models (*.onnx)")
            if not path:
                self._fill_model_combo()
                return
            d = path
        self.set_model(d)

    def _choose_file(self) -> None:
        start = str(Path(str(self.qs.value("last_dir", str(Path.cwd())))))
        path, _ = QFileDialog.getOpenFileName(
            self, "Open a video or image", start,
            "Video or image (*.mp4 *.mov *.avi *.mkv *.webm *.jpg *.jpeg *.png *.bmp);;All files (*)")
        if path:
            self.qs.setValue("last_dir", str(Path(path).parent))
            self.open_source(path)

    def _choose_record_path(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Record to",
                                              str(default_recording_path(self.record_dir, reserve=False)),
                                              "MP4 video (*.mp4)")
        if path:
            if not path.lower().endswith(".mp4"):
                path += ".mp4"
            self.record_path_override = path
            self.record_dir = str(Path(path).parent)
            self._on_info(f"next recording: {path}")

    # ------------------------------------------------------------------ actions (public API)
    def open_source(self, spec) -> None:
        if isinstance(spec, str) and spec.strip().isdigit():
            spec = int(spec)
        if isinstance(spec, str):
            i = self.source_combo.findData(spec)
            if i < 0:
                self.source_combo.addItem(Path(spec).name, spec)
                i = self.source_combo.count() - 1
            self.source_combo.setCurrentIndex(i)
        elif isinstance(spec, int):
            i = self.source_combo.findData(spec)
            if i < 0:
                self.source_combo.addItem(f"Camera {spec}", spec)
                i = self.source_combo.count() - 1
            self.source_combo.setCurrentIndex(i)
        self._pending_source = spec
        self._sources_requested += 1
        self.worker.set_source(spec)

    def set_model(self, model_path: Optional[str]) -> None:
        """A .onnx path, MESH_MODEL (the built-in face mesh) or None (the default). The combo shows
        the choice at once; if it fails to load, model_failed puts the running model back."""
        self._fill_model_combo(model_path)
        self.worker.set_model(model_path)

    def set_paused(self, paused: bool) -> None:
        if self.btn_pause.isChecked() != paused:
            self.btn_pause.setChecked(paused)   # re-enters through toggled
            return
        self.btn_pause.setText("Start" if paused else "Pause")
        self.worker.set_paused(paused)

    def recalibrate(self) -> None:
        self.worker.recalibrate()

    def toggle_fullscreen(self) -> None:
        self.showNormal() if self.isFullScreen() else self.showFullScreen()

    def start_recording(self, path: Optional[str] = None) -> None:
        if path is not None:
            self.record_path_override = str(path)
        if not self.btn_record.isChecked():
            self.btn_record.setChecked(True)

    def stop_recording(self) -> None:
        if self.btn_record.isChecked():
            self.btn_record.setChecked(False)

    def _on_record_toggled(self, on: bool) -> None:
        if on:
            path = self.record_path_override or str(default_recording_path(self.record_dir))
            self.record_path_override = None
            self.btn_record.setText("■ Stop")
            self.worker.start_recording(path)
        else:
            self.btn_record.setText("● Record")
            if self.recording_path is not None:
                self.worker.stop_recording()

    def snapshot(self, path: Optional[str] = None) -> Optional[Path]:
        """The shown frame with its overlays as PNG (atomic write), at the frame's own size (a frame
        shown smaller was drawn at the view's size: it is drawn again); returns the path or None."""
        if self.latest is None:
            self._on_error("snapshot: no frame shown yet")
            return None
        if path is None:
            d = Path(self.snapshot_dir)
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                self._on_error(f"snapshot: cannot create {d}: {e.strerror}")
                return None
            path = d / ("snapshot-" + time.strftime("%Y%m%d-%H%M%S") + f"-{self.latest.frame.index:06d}.png")
        r = self.latest
        image = r.image
        if r.full is not None and (image is None or r.full.frame.image.shape[:2] != image.shape[:2]):
            image = draw_result(r.full, self.settings.layers)
        try:
            out = write_png_atomic(path, image)
        except OSError as e:
            self._on_error(f"snapshot: cannot write {path}: {e.strerror or e}")
            return None
        self._on_info(f"snapshot saved: {out}")
        return out

    def set_threshold(self, key: str, value: float) -> None:
        try:
            new = binding.with_threshold(self.settings, key, value)
        except ValueError as e:
            self._on_error(f"threshold not applied: {e}")
            old = binding.get_threshold(self.settings, key)
            if old is not None:
                self.spin[key].setValue(old)
            return
        if new is not self.settings:
            self._apply(new)

    def set_smoothing(self, on: bool) -> None:
        self._apply(binding.with_smoothing(self.settings, on))

    def set_layer(self, name: str, on: bool) -> None:
        if self.chk_layer[name].isChecked() != on:
            self.chk_layer[name].setChecked(on)
            return
        self._apply(binding.with_layer(self.settings, name, on))

    def set_mesh_style(self, style: str) -> None:
        i = self.mesh_style_combo.findData(style)
        if i >= 0 and self.mesh_style_combo.currentIndex() != i:
            self.mesh_style_combo.setCurrentIndex(i)
        self._apply(binding.with_mesh_style(self.settings, style))

    def fit_to_screen(self, restored: bool = False) -> None:
        """The first size from the available area of the screen the window opens on (never
        larger), or the restored geometry moved and shrunk onto that area (saved on a larger
        screen)."""
        scr = (QGuiApplication.screenAt(self.geometry().center()) if restored else None) or self.screen() \
            or QGuiApplication.primaryScreen()
        if scr is None:
            return
        a = scr.availableGeometry()
        avail = (a.x(), a.y(), a.width(), a.height())
        if restored and self.windowState() & (Qt.WindowState.WindowMaximized | Qt.WindowState.WindowFullScreen):
            return
        g = self.geometry()
        rect = (fit_geometry((g.x(), g.y(), g.width(), g.height()), avail) if restored
                else initial_geometry(avail))
        if rect != (g.x(), g.y(), g.width(), g.height()):
            self.setGeometry(QRect(*rect))

    def _apply(self, new_settings) -> None:
        self.settings = new_settings
        self.worker.update_settings(new_settings)
        self._save_settings()

    # ------------------------------------------------------------------ worker signals
    def _on_result(self, r: Result) -> None:
        self.worker.result_taken()
        self.results_received += 1
        self.latest = r
        if r.image is not None:
            self.latest_drawn = r
            self._latest_new = True
        if r.full is not None:
            # the next frames are drawn at the size the view shows them (ProcessingWorker.draw_size)
            fh, fw = r.full.frame.image.shape[:2]
            self.worker.view_size = self.view.device_size(fw, fh)
        face = r.driver      # the face the monitor judges: panel, plots and alerts agree
        st = r.state
        perclos = float("nan")
        if st is not None:
            perclos = _num(st.signals.get("perclos", st.counters.get("perclos")))
        if face is not None:
            eyes = tuple(face.eye_open) if face.eye_open is not None else (math.nan, math.nan)
            g = face.gaze
            self.plots.append(r.frame.timestamp, yaw=face.yaw, pitch=face.pitch, roll=face.roll,
                              gaze_yaw=g.yaw if g is not None else None,
                              gaze_pitch=g.pitch if g is not None else None,
                              eye_left=eyes[0], eye_right=eyes[1], perclos=perclos,
                              mouth=face.mouth_open)
        else:
            self.plots.append(r.frame.timestamp, perclos=perclos)
        self._check_alerts(st)

    def _check_alerts(self, st) -> None:
        now = set()
        if st is not None:
            now = {(a.kind, a.level, round(float(a.since), 3)) for a in st.alerts + [st.emergency] if a is not None}
            now |= {("unavailable", k, 0.0) for k in st.unavailable}   # sounds like a lost camera
        started = now - self._active_alerts
        self._active_alerts = now
        sound = self.emergency_sound if (st is not None and st.emergency is not None) else (
            self.sound if started else None)
        if sound is not None:
            sound.play()                # AlertSound.play never raises (no audio output: a log line)
            self.sounds_played += 1

    def _on_error(self, msg: str) -> None:
        log.error(msg)
        self.errors.append(msg)
        self.messages.append(msg)
        self.message.setStyleSheet("padding:3px; color:#fff; background:#a00000;")
        self.message.setText(msg)
        self.statusBar().showMessage(msg, 15000)

    def _on_info(self, msg: str) -> None:
        log.info(msg)
        self.messages.append(msg)
        self.message.setStyleSheet("padding:3px;")
        hint = self._no_source_hint()     # stays in view under later status lines ("model: ...")
        self.message.setText(msg if hint is None or hint == msg else f"{msg} — {hint}")
        self.view.placeholder = hint or VideoView.PLACEHOLDER

    def _on_model_changed(self, name: str, provider: str, path: str) -> None:
        self.model_name, self.provider = name, provider
        # the model that really runs (a failed switch leaves the previous one)
        self.settings = binding.with_model(self.settings, path or None)
        self._fill_model_combo()
        self._update_status_labels()

    def _on_model_failed(self, msg: str) -> None:
        """Show the model that really runs in the combo again (self.settings follows model_changed)."""
        self._fill_model_combo()

    def _on_source_changed(self, name: str, fps: float = 0.0) -> None:
        self.source_name = name
        if name:
            self._sources_settled += 1      # an open_source request succeeded
        # never redraw the video faster than the source delivers frames (nor above REDRAW_HZ)
        hz = min(REDRAW_HZ, fps) if fps and fps > 1 else REDRAW_HZ
        self.timer.setInterval(max(1, int(round(1000.0 / hz))))
        self.worker.redraw_period = self.timer.interval() / 1000.0
        self.plots.clear()
        self._active_alerts = set()
        self.camera_lost = None
        if not name:
            self.view.set_image(None)
        spec = self._pending_source
        if spec is not None and name:
            self._running_spec = spec
            self.qs.setValue("source", str(spec))

    def _on_source_failed(self, msg: str) -> None:
        """Show the source that really runs in the combo again (or none)."""
        self._sources_settled += 1
        self._append_hint()
        spec = self._running_spec
        i = self.source_combo.findData(spec) if spec is not None and self.source_name else -1
        self.source_combo.setCurrentIndex(i if i >= 0 else 0)

    def _append_hint(self) -> None:
        """After the line of a source that failed or ended: the no-camera hint when it applies."""
        hint = self._no_source_hint()
        if hint is not None and hint not in self.message.text():
            self.message.setText(f"{self.message.text()} — {hint}" if self.message.text() else hint)
        self.view.placeholder = hint or VideoView.PLACEHOLDER

    def _on_source_ended(self, msg: str) -> None:
        self.source_name = ""
        self._append_hint()
        self.source_combo.setCurrentIndex(0)
        if self.btn_record.isChecked():
            self.btn_record.blockSignals(True)
            self.btn_record.setChecked(False)
            self.btn_record.setText("● Record")
            self.btn_record.blockSignals(False)

    def _on_source_status(self, kind: str, msg: str) -> None:
        """A live camera lost (the banner says monitoring is unavailable, the sound plays) or back."""
        self.camera_lost = msg if kind == "lost" else None
        self._show_banner(self.latest.state if self.latest is not None else None)
        if kind == "lost" and self.sound is not None:
            self.sound.play()
            self.sounds_played += 1

    def _on_recording_changed(self, path: str) -> None:
        if path:
            self.recording_path = path
            self._rec_started = time.monotonic()
        else:
            self.recording_path = None
            if self.btn_record.isChecked():
                self.btn_record.blockSignals(True)
                self.btn_record.setChecked(False)
                self.btn_record.setText("● Record")
                self.btn_record.blockSignals(False)
        self._update_status_labels()

    # ------------------------------------------------------------------ redraw (QTimer)
    def _redraw(self) -> None:
        r = self.latest_drawn
        if r is not None and self._latest_new:
            self._latest_new = False
            self.view.set_image(r.image, None if r.full is None else
                                (r.full.frame.image.shape[1], r.full.frame.image.shape[0]))
            self.view.repaint()                 # paint now: latency = capture -> on screen
            self.worker.image_shown()
            self.latencies_ms.append((time.perf_counter() - r.wall_t) * 1000.0)
            self.results_shown += 1
            self._show_banner(self.latest.state)

    def _update_panel(self) -> None:
        """Numbers, calibration indicator and status bar (PANEL_HZ: readable, and text changes
        re-layout their parents, so they are not redone for every video frame)."""
        r = self.latest
        if r is not None:
            face = r.driver
            angles = (face.yaw, face.pitch, face.roll) if face is not None else (math.nan,) * 3
            for k, v in zip(("yaw", "pitch", "roll"), angles):
                _set(self.lbl_angles[k], "–" if not math.isfinite(v) else f"{v:+.1f}°")
            self._show_state(r.state)
        self._update_status_labels()

    def refresh_now(self) -> None:
        """Everything the timers redraw, at once (tests, screenshots)."""
        self._redraw()
        if self.latest is not None:
            self._show_state(self.latest.state)
        self.plots.redraw()
        self._update_panel()

    def _show_banner(self, st) -> None:
        top = st.top_alert if st is not None else None
        # the banner keeps its place (no layout jump when an alert starts or ends)
        if self.camera_lost is not None:
            _set(self.banner, "CAMERA LOST — monitoring unavailable", LEVEL_STYLE["critical"])
            self.banner_level = "critical"
        elif st is not None and (st.emergency is not None or (top is None and st.unavailable)):
            text, level = banner_text(st)      # the unresponsive driver / MONITORING LIMITED (app.render)
            _set(self.banner, text, LEVEL_STYLE.get(level, LEVEL_STYLE["critical"]))
            self.banner_level = level
        elif top is not None:
            _set(self.banner, f"{top.kind.replace('_', ' ').upper()} — {top.level}",
                 LEVEL_STYLE.get(top.level, LEVEL_STYLE["warning"]))
            self.banner_level = top.level
        else:
            text = ("driver monitor off" if st is None else
                    "no alerts (calibrating: look straight ahead)" if st.calibrating else "no alerts")
            _set(self.banner, text, LEVEL_STYLE["none"])
            self.banner_level = None

    def _show_state(self, st) -> None:
        if st is None:
            _set(self.lbl_calib, "calibration: monitor off")
            for line in self.plots.lines.values():
                if line.isVisible():
                    line.setVisible(False)
            return
        for line in self.plots.lines.values():
            if not line.isVisible():
                line.setVisible(True)
        if st.calibrating:
            _set(self.lbl_calib, "● calibrating: look straight ahead", "color:#ffb000;")
        elif st.calibrated:
            _set(self.lbl_calib, f"● calibrated (neutral yaw {st.neutral_yaw:+.0f}°, "
                                 f"pitch {st.neutral_pitch:+.0f}°)", "color:#40c040;")
        else:
            _set(self.lbl_calib, "● not calibrated", "color:#c0c0c0;")
        mon = self.settings.monitor
        if mon is not None:
            key = (mon.alert_yaw, mon.alert_pitch, mon.perclos_threshold, _r(st.neutral_yaw), _r(st.neutral_pitch))
            if key != self._thr_key:
                self._thr_key = key
                self.plots.set_thresholds(mon.alert_yaw, mon.alert_pitch, mon.perclos_threshold,
                                          st.neutral_yaw, st.neutral_pitch,
                                          binding.pitch_down_sign(self.settings))

    def _update_status_labels(self) -> None:
        r = self.latest
        s = r.stats if r is not None else None
        self.st["model"].setText(f"model: {self.model_name or '–'}")
        self.st["provider"].setText(f"provider: {self.provider or '–'}")
        self.st["capture"].setText(f"capture {s.capture_fps:5.1f} fps" if s else "capture –")
        self.st["process"].setText(f"processing {s.process_fps:5.1f} fps" if s else "processing –")
        lat = statistics.median(self.latencies_ms) if self.latencies_ms else None
        self.st["latency"].setText(f"latency {lat:5.0f} ms" if lat is not None else "latency –")
        self.st["faces"].setText(f"faces {len(r.observations)}" if r is not None else "faces –")
        if self.recording_path:
            el = int(time.monotonic() - self._rec_started)
            n = s.recording_frames if s else 0
            _set(self.st["record"], f"● REC {el // 60:02d}:{el % 60:02d} ({n} fr)",
                 "color:#ff4040; font-weight:bold;")
        else:
            _set(self.st["record"], "not recording", "")

    def status_text(self) -> str:
        return " | ".join(l.text() for l in self.st.values())

    # ------------------------------------------------------------------ persistence
    def _restore_settings(self, settings):
        """Thresholds, smoothing and layers from the last run (explicit CLI flags win: the caller
        passes them in ``cli_explicit``)."""
        explicit = set(self.cli_explicit)
        qs = self.qs
        for key in binding.THRESHOLDS:
            v = qs.value(f"thresholds/{key}")
            # exactly the flag of this threshold (--perclos-threshold), not one that contains its
            # name (--perclos-window)
            if v is not None and key not in explicit:
                try:
                    settings = binding.with_threshold(settings, key, float(v))
                except (ValueError, TypeError):
                    pass
        v = qs.value("smoothing")
        if v is not None and "smoothing" not in explicit:
            settings = binding.with_smoothing(settings, str(v).lower() in ("1", "true"))
        for name in Layers.NAMES:
            v = qs.value(f"layers/{name}")
            if v is not None and "layers" not in explicit:
                settings = binding.with_layer(settings, name, str(v).lower() in ("1", "true"))
        v = qs.value("layers/mesh_style")
        if v is not None and "layers" not in explicit and str(v) in binding.MESH_STYLES:
            settings = binding.with_mesh_style(settings, str(v))
        m = qs.value("model")
        if m is not None and "model" not in explicit:
            m = str(m) or None
            if m is None or m == MESH_MODEL or Path(m).is_file():
                settings = binding.with_model(settings, m)
        return settings

    def _save_settings(self) -> None:
        qs, s = self.qs, self.settings
        for key in binding.THRESHOLDS:
            v = binding.get_threshold(s, key)
            if v is not None:
                qs.setValue(f"thresholds/{key}", v)
        qs.setValue("smoothing", binding.get_smoothing(s))
        for name in Layers.NAMES:
            qs.setValue(f"layers/{name}", binding.get_layer(s, name))
        qs.setValue("layers/mesh_style", binding.get_mesh_style(s))
        qs.setValue("record_dir", self.record_dir)
        qs.setValue("snapshot_dir", self.snapshot_dir)

    def closeEvent(self, ev) -> None:  # noqa: N802
        self.timer.stop()
        self.plot_timer.stop()
        self.status_timer.stop()
        try:
            self._save_settings()
            self.qs.setValue("model", binding.get_model(self.worker.settings) or "")
            self.qs.setValue("geometry", self.saveGeometry())
            self.qs.sync()
        finally:
            ok = self.worker.shutdown()     # finalizes a recording
            if not ok:
                log.error("processing thread did not stop within 10 s")
        super().closeEvent(ev)


# ---------------------------------------------------------------------- helpers
def _inner(avail, margin=FRAME_MARGIN) -> tuple[int, int, int, int]:
    """The part of the screen's available area (x, y, w, h) a window's client area may use:
    room left for the frame on each side and the title bar above."""
    ax, ay, aw, ah = avail
    mx, my = margin
    return ax + mx // 2, ay + my - mx // 2, max(1, aw - mx), max(1, ah - my)


def initial_geometry(avail, preferred=PREFERRED_SIZE, margin=FRAME_MARGIN) -> tuple[int, int, int, int]:
    """First client rect (x, y, w, h) on a screen whose available area is ``avail``: the
    preferred size, shrunk to fit the area, centred in it."""
    ix, iy, iw, ih = _inner(avail, margin)
    w, h = min(preferred[0], iw), min(preferred[1], ih)
    return ix + (iw - w) // 2, iy + (ih - h) // 2, w, h


def fit_geometry(rect, avail, margin=FRAME_MARGIN) -> tuple[int, int, int, int]:
    """A saved client rect (x, y, w, h) shrunk to the screen's available area and moved into it
    (unchanged when it fits)."""
    ix, iy, iw, ih = _inner(avail, margin)
    x, y, w, h = rect
    w, h = min(w, iw), min(h, ih)
    x = min(max(x, ix), ix + iw - w)
    y = min(max(y, iy), iy + ih - h)
    return x, y, w, h


class _StatusLabel(QLabel):
    """A status bar field: always asks for the same width (text changes never re-layout the
    bar), and may shrink below it when the window is narrower than all fields together."""

    def __init__(self, width: int):
        super().__init__("")
        self._w = int(width)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(self._w, super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(min(self._w, 60), super().minimumSizeHint().height())


def _default_model_label() -> Optional[str]:
    """The combo label of Settings.model = None: "Default (X.onnx)" for the first models/*.onnx or
    the shipped 3DDFA-V2; None when neither exists (then None runs the face mesh, its own entry)."""
    from app.pipeline import default_model_path

    d = default_model_path()
    return None if d is None else f"Default ({Path(d).name})"


def _set(label, text: str, style: Optional[str] = None) -> None:
    """setText / setStyleSheet only on change (a style sheet change re-polishes the widget)."""
    if label.text() != text:
        label.setText(text)
    if style is not None and label.styleSheet() != style:
        label.setStyleSheet(style)


def _r(v) -> float:
    return round(float(v), 1) if v is not None and math.isfinite(v) else 0.0


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")
