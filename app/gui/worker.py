"""The window's processing thread: the same ``Runner`` (app/runner.py) as headless, the bench and
the soak, with ``RunHooks`` for the UI. Nothing here runs on the UI thread.

- ``ProcessingWorker`` (a ``QThread``) loads the Pipeline, then runs one ``Runner`` per source the
  UI opens (``Runner(draw=True, close_pipeline=False)``: each frame the view can show is drawn for it, the
  pipeline outlives the source). The source is an ``app.io.capture.Source``: cameras always hand
  over the newest frame; files play at their own frame rate and hand over the newest frame too
  (``realtime``), so a file behaves like a camera. Stale frames are dropped (counted), never
  queued. ``realtime=False, drop=False`` hands over every frame as fast as it is processed (the
  benchmark mode). Each frame carries the wall clock when it left the source (``Frame.captured``):
  the UI measures latency from it to the moment the result is painted.
- The UI talks to the worker only through a thread-safe command queue (``set_source``,
  ``set_model``, ``pause``, ``start_recording`` ...), drained by ``between_frames`` (RunHooks)
  before each frame: a new model is swapped into the running Runner, a recording is a second
  ``Outputs`` swapped in and out, pausing blocks there (a paused file keeps its position).
  Each result goes out through the ``result`` signal (``on_result``), at most ``MAX_PENDING``
  waiting for the UI.

Errors (a source that does not open or breaks off, a model that fails to load, an unwritable
recording path, a frame that fails) are emitted as one-line messages on the ``error`` signal; the
worker keeps running and accepts a new source or model. A recording that cannot be written stops
with its error; monitoring goes on.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PyQt6.QtCore import QThread, pyqtSignal

from app.core.errors import one_line
from app.core.types import FaceObservation, Frame, FrameResult, MonitorState, SourceEvent
from app.io.files import OutputError
from app.io.writer import DEFAULT_QUALITY
from app.render import overlay_kind
from app.runner import Outputs, RunHooks, Runner
from app.settings import RunOptions
from app.gui import binding

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data sent to the UI
@dataclass
class Stats:
    capture_fps: float = 0.0        # frames/s leaving the source (before dropping)
    process_fps: float = 0.0        # results/s produced by the worker
    frames_captured: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0         # dropped by the source (processing slower than the source)
    process_ms: float = 0.0         # Pipeline.process + drawing time of this frame
    stage_ms: dict = field(default_factory=dict)
    model: str = ""
    provider: str = ""
    source: str = ""
    recording: Optional[str] = None  # path being recorded, None when not recording
    recording_frames: int = 0


@dataclass
class Result:
    # the annotated BGR frame, at the view's size when that is smaller (owned by the UI from now
    # on); None for a frame the window would not have shown (ProcessingWorker.wants_drawing)
    image: Optional[np.ndarray]
    observations: list                  # list[FaceObservation]
    driver: Optional[FaceObservation]   # the face the monitor judges (one of observations), None = no face
    state: Optional[MonitorState]
    frame: Frame                        # without its image (that is in ``full``)
    wall_t: float                       # perf_counter() when the frame left the source
    stats: Stats
    events: list = field(default_factory=list)  # monitor events (start/end dicts) of this frame
    # the whole result, its frame's image included: a frame shown smaller than its own size is
    # drawn again at that size for a snapshot (MainWindow.snapshot)
    full: Optional[FrameResult] = None


# --------------------------------------------------------------------------- recording
_issued_lock = threading.Lock()
_issued: set = set()     # default names handed out by this process (a recording may not exist yet)


def _name_taken(path: Path) -> bool:
    return path.exists() or events_path_for(path).exists()


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def default_recording_path(folder: str | os.PathLike = "recordings", *, reserve: bool = True) -> Path:
    """recordings/YYYYmmdd-HHMMSS.mp4 (the events file goes beside it: .events.jsonl), made unique:
    a second recording in the same second is YYYYmmdd-HHMMSS-2.mp4, then -3 ... (a name is never
    reused while this process runs, nor when a file or its events exist).
    ``reserve=False`` only proposes the name (a path dialog's default)."""
    folder = Path(folder)
    stamp = _stamp()
    with _issued_lock:
        n = 1
        while True:
            p = folder / (f"{stamp}.mp4" if n == 1 else f"{stamp}-{n}.mp4")
            key = os.path.abspath(p)
            if key not in _issued and not _name_taken(p):
                if reserve:
                    _issued.add(key)
                return p
            n += 1


def events_path_for(video_path: str | os.PathLike) -> Path:
    p = Path(video_path)
    return p.with_name(p.stem + ".events.jsonl")



def _parent_creatable(folder: Path) -> bool:
    # create only a missing leaf folder (recordings/), never a deep tree under a bad path
    return folder.parent.exists() and os.access(folder.parent, os.W_OK)


def recording_outputs(path: str | os.PathLike, fps: float, size: tuple[int, int], *,
                      quality: str = DEFAULT_QUALITY, overlay: str = "surface", drop: bool = True,
                      say: Callable[[str], None] = log.error) -> Outputs:
    """The ``Outputs`` of a recording started in the window: the annotated frames to an mp4 and the
    monitor events beside it (NAME.events.jsonl), as a live run: the worker never waits for the
    encoder (with ``drop``), and a file that cannot be written is reported through ``say`` while
    monitoring goes on. ``OutputError`` (one line) when the path is not writable."""
    path = Path(path)
    if not path.parent.exists() and _parent_creatable(path.parent):
        path.parent.mkdir(exist_ok=True)   # e.g. recordings/ on first use
    opts = RunOptions(record=str(path), events=str(events_path_for(path)), record_quality=quality)
    return Outputs(opts, fps=fps, size=size, live=True, drop=drop, overlay=overlay, say=say)


# --------------------------------------------------------------------------- worker
MAX_PENDING = 3                          # results in flight to the UI before the worker skips some
PipelineFactory = Callable[[Any], Any]   # settings -> Pipeline
SourceFactory = Callable[..., Any]       # (spec, loop=..., realtime=...) -> Source


def _default_pipeline_factory(settings):
    from app.pipeline import Pipeline

    return Pipeline(settings)


def _default_source_factory(spec, *, loop: bool = False, realtime: bool = True):
    from app.io.capture import open_source

    # one frame waits for the window: the newest (a camera, a file in real time), or in the
    # benchmark mode the next one, decoded while the current one is processed
    return open_source(spec, loop=loop, realtime=realtime, queue_size=1)


class _Rate:
    """Events per second over the last ``n`` marks of a running count."""

    def __init__(self, n: int = 60):
        self.n, self.marks = n, []

    def mark(self, count: int) -> float:
        self.marks.append((time.perf_counter(), count))
        del self.marks[:-self.n]
        (t0, c0), (t1, c1) = self.marks[0], self.marks[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


class ProcessingWorker(QThread, RunHooks):
    """Capture + inference + recording off the UI thread, as ``Runner`` hooks. Communicate through
    the methods below."""

    result = pyqtSignal(object)            # Result
    error = pyqtSignal(str)                # one-line message for the user
    info = pyqtSignal(str)                 # one-line status message ("opened ...", "model ...")
    source_changed = pyqtSignal(str, float)  # name, fps of the source now running ("" = none)
    source_ended = pyqtSignal(str)         # the source finished (message: why)
    source_failed = pyqtSignal(str)        # a new source did not open (message); the old one runs on
    model_failed = pyqtSignal(str)         # a model did not load (message); the previous one runs on
    model_changed = pyqtSignal(str, str, str)   # model name, provider, model path ("" = built-in)
    recording_changed = pyqtSignal(str)    # path being recorded, "" when stopped
    source_status = pyqtSignal(str, str)   # "lost" / "back" (a live camera), one-line message
    paused_changed = pyqtSignal(bool)

    def __init__(self, settings, *, pipeline_factory: PipelineFactory = _default_pipeline_factory,
                 source_factory: SourceFactory = _default_source_factory,
                 realtime: bool = True, drop: bool = True, loop: bool = True,
                 parent=None):
        super().__init__(parent)
        self.settings = settings
        self._pipeline_factory = pipeline_factory
        self._source_factory = source_factory
        self.realtime = realtime
        self.drop = drop
        self.loop = loop
        self._cmds: "queue.Queue[tuple]" = queue.Queue()
        self._quit = threading.Event()
        self.pipeline = None
        self.runner: Optional[Runner] = None       # the Runner of the source now running
        self._next_source = None                   # opened, waiting for the running one to end
        self._end_run = False                      # the running source is to end (switched, stopped)
        self._record_at_start: Optional[str] = None   # asked for before the source's first frame
        self.recording: Optional[Path] = None      # the path being recorded
        self.record_quality = DEFAULT_QUALITY
        self.paused = False
        self.frames_processed = 0
        self._capture_rate, self._process_rate = _Rate(), _Rate()
        self._last_process_error: Optional[str] = None
        # results emitted but not yet taken by the UI: above MAX_PENDING the worker skips emitting
        # (the UI is busy, e.g. a modal dialog): nothing piles up in the Qt event queue
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.results_skipped = 0
        # (w, h) in device pixels that the view shows a frame at, set by the UI thread (one tuple
        # assignment); frames are drawn at that size when it is smaller than theirs (draw_size)
        self.view_size: Optional[tuple[int, int]] = None
        # the window's redraw period (s), set by the UI thread: frames it would not show are not
        # drawn (wants_drawing); None (no window) draws every frame
        self.redraw_period: Optional[float] = None
        self._drawn_t = -math.inf       # perf_counter() when the last frame was drawn
        self._drawn_shown = True        # whether the window has painted the last drawn frame

    # ---- commands (any thread) ---------------------------------------------------------
    def set_source(self, spec) -> None:
        self._cmds.put(("source", spec))

    def stop_source(self) -> None:
        self._cmds.put(("stop_source",))

    def set_model(self, model_path: Optional[str]) -> None:
        """A .onnx path, app.settings.MESH_MODEL ("mesh") for the built-in face-mesh backend, or
        None for the default (the first models/*.onnx, else the face mesh)."""
        self._cmds.put(("model", model_path))

    def update_settings(self, settings) -> None:
        """Thresholds, smoothing and layers of ``settings`` (binding.UI_FIELDS), applied between
        frames to the settings the worker runs; every other field (the model above all) is ignored:
        a UI change sent while a model switch is queued or loading must not undo the switch."""
        self._cmds.put(("settings", settings))

    def set_paused(self, paused: bool) -> None:
        self._cmds.put(("pause", bool(paused)))

    def recalibrate(self) -> None:
        self._cmds.put(("recalibrate",))

    def start_recording(self, path: str | os.PathLike) -> None:
        self._cmds.put(("record", str(path)))

    def stop_recording(self) -> None:
        self._cmds.put(("stop_record",))

    def result_taken(self) -> None:
        """Called by the UI for every Result it receives."""
        with self._pending_lock:
            self._pending = max(0, self._pending - 1)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Stop everything (finalizes a recording) and wait for the thread to end."""
        self._quit.set()
        self._cmds.put(("quit",))
        return self.wait(timeout_ms)

    # ---- thread body --------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._build_pipeline(self.settings)
            while not self._quit.is_set():
                if self._next_source is None or self.pipeline is None:
                    self._handle_commands(block=True)     # idle: no source, or no model loaded
                    continue
                src, self._next_source = self._next_source, None
                self._run_source(src)
        except Exception as e:  # the thread's error boundary: never die silently, tell the UI
            log.exception("GUI worker failed")
            self.error.emit(f"processing stopped: {one_line(e)}")
        finally:
            if self._next_source is not None:
                self._next_source.stop()
            if self.pipeline is not None:
                self.pipeline.close()

    def _run_source(self, src) -> None:
        """One Runner over ``src`` until it ends or a command ends it; then say why it ended."""
        src.set_paused(self.paused)
        self._end_run = False
        self._capture_rate, self._process_rate = _Rate(), _Rate()
        nothing = Outputs(RunOptions(), fps=src.fps, size=tuple(src.size), live=True)
        self.runner = Runner(src, self.pipeline, nothing, quiet=True, say=log.info, hooks=self, draw=True,
                             close_pipeline=False)
        if self._record_at_start is not None:
            path, self._record_at_start = self._record_at_start, None
            self._start_recording(path)
        try:
            rep = self.runner.run()
        finally:
            runner, self.runner = self.runner, None
        if self.recording is not None:          # finalized by the Runner (the source ended)
            self._recording_closed(runner.outputs, rep.written)
        if rep.error:
            self.error.emit(rep.error)
        if self._end_run or self._quit.is_set():
            return
        err = src.error
        msg = err or f"end of {src.name}"
        (self.error if err else self.info).emit(msg)
        self.source_ended.emit(msg)

    def _handle_commands(self, block: bool) -> None:
        try:
            cmd = self._cmds.get(timeout=0.05) if block else self._cmds.get_nowait()
        except queue.Empty:
            return
        while True:
            self._do(cmd)
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return

    def _do(self, cmd: tuple) -> None:
        kind = cmd[0]
        if kind == "quit":
            self._quit.set()
        elif kind == "source":
            self._open_source(cmd[1])
        elif kind == "stop_source":
            self._end_source()
            self.source_changed.emit("", 0.0)
        elif kind == "model":
            self._build_pipeline(binding.with_model(self.settings, cmd[1]))
        elif kind == "settings":
            self._apply_settings(cmd[1])
        elif kind == "pause":
            self._pause(cmd[1])
        elif kind == "recalibrate":
            self._recalibrate()
        elif kind == "record":
            self._start_recording(cmd[1])
        elif kind == "stop_record":
            self._stop_recording()

    # ---- RunHooks: called by the Runner on this thread ----------------------------------
    def between_frames(self, runner: Runner) -> bool:
        self._handle_commands(block=False)
        while self.paused and not (self._end_run or self._quit.is_set()):
            self._handle_commands(block=True)
        return not (self._end_run or self._quit.is_set())

    def on_result(self, runner: Runner, res: FrameResult, annotated: Optional[np.ndarray],
                  stage_ms: dict) -> None:
        self._last_process_error = None
        outputs = runner.outputs
        if self.recording is not None and outputs.failures:   # said on the error signal
            self._stop_recording()                             # the monitor goes on
        self.frames_processed += 1
        src = runner.source
        stats = Stats(
            capture_fps=self._capture_rate.mark(src.frames_read),
            process_fps=self._process_rate.mark(self.frames_processed),
            frames_captured=src.frames_read, frames_processed=self.frames_processed,
            frames_dropped=src.frames_dropped, process_ms=stage_ms["total"] - stage_ms["decode"],
            stage_ms={k: v for k, v in stage_ms.items() if k not in ("decode", "total")},
            model=res.model, provider=res.provider, source=src.name,
            recording=str(self.recording) if self.recording is not None else None,
            recording_frames=runner.outputs.recording_frames if self.recording is not None else 0)
        with self._pending_lock:
            if self._pending >= MAX_PENDING:
                self.results_skipped += 1
                return
            self._pending += 1
        frame = res.frame
        lite = Frame(image=None, timestamp=frame.timestamp, index=frame.index, captured=frame.captured)
        self.result.emit(Result(image=annotated,
                                observations=res.observations, driver=res.driver, state=res.state,
                                frame=lite, wall_t=frame.captured, stats=stats, events=res.events,
                                full=res))

    def wants_drawing(self, runner: Runner) -> bool:
        """Draw this frame unless the window still holds an unpainted drawn frame from less than
        half a redraw period ago: processing faster than the window redraws (at most 30 Hz), about
        every other frame would be drawn and never shown. A source at the redraw rate or slower (a
        30 fps camera) gets every frame drawn: its frames come a whole period apart."""
        period = self.redraw_period
        if period is None:
            return True
        now = time.perf_counter()
        if not self._drawn_shown and now - self._drawn_t < 0.5 * period:
            return False
        self._drawn_t, self._drawn_shown = now, False
        return True

    def image_shown(self) -> None:
        """Called by the UI thread when it has painted a drawn frame."""
        self._drawn_shown = True

    def draw_size(self, runner: Runner, size: tuple[int, int]) -> Optional[tuple[int, int]]:
        """The view's size when the frame is larger: the frame is drawn at the size it is shown and
        the UI thread does not scale it (its redraw 2.5-2.9 -> 1.1-1.2 ms; the drawing here costs
        about what it does at full size, the shaded mesh being per vertex, plus the scaling the
        UI thread did: docs/benchmarks.md section 20)."""
        want = self.view_size
        if want is None or want[0] >= size[0] or want[1] >= size[1]:
            return None
        return want

    def on_source_event(self, runner: Runner, ev: SourceEvent) -> None:
        """A live camera lost / back: said in the window (the Runner logged it beside a recording)."""
        if ev.kind == "lost":
            self.error.emit(f"camera lost: {ev.message}")
        else:
            self.info.emit(ev.message)
        self.source_status.emit(ev.kind, ev.message)

    def on_frame_error(self, runner: Runner, frame: Frame, error: Exception) -> bool:
        """One bad frame must not end the session: report it (once while it repeats), skip it."""
        why = one_line(error)
        if why != self._last_process_error:
            log.error("processing failed on frame %d", frame.index, exc_info=error)
            self.error.emit(f"processing failed on frame {frame.index}: {why}")
        self._last_process_error = why
        return True

    # ---- commands, applied on this thread ------------------------------------------------
    def _open_source(self, spec) -> None:
        try:
            src = self._source_factory(spec, loop=self.loop, realtime=self.realtime)
        except Exception as e:  # SourceError (one line already), or a factory's own error
            msg = one_line(e)
            self.error.emit(msg)
            self.source_failed.emit(msg)
            return  # the previous source (if any) keeps running
        self._end_source()
        self._next_source = src
        w, h = src.size
        self.info.emit(f"source: {src.name} ({w}x{h} @ {src.fps:.1f} fps{', live' if src.is_live else ''})")
        self.source_changed.emit(src.name, float(src.fps or 0.0))

    def _end_source(self) -> None:
        """Stop the recording and end the running source's Runner (and drop one waiting to run)."""
        self._stop_recording()
        if self.runner is not None:
            self._end_run = True
        if self._next_source is not None:
            self._next_source.stop()
            self._next_source = None

    def _pause(self, paused: bool) -> None:
        self.paused = paused
        for src in (self.runner.source if self.runner is not None else None, self._next_source):
            if src is not None:
                src.set_paused(paused)
        self.paused_changed.emit(paused)

    def _recalibrate(self) -> None:
        mon = self.pipeline.monitor if self.pipeline is not None else None
        if mon is not None:
            mon.recalibrate()
            self.info.emit("recalibrating: look straight ahead")
        else:
            self.error.emit("recalibrate: the driver monitor is not active in this pipeline")

    def _build_pipeline(self, settings) -> bool:
        try:
            p = self._pipeline_factory(settings)
        except Exception as e:  # any load failure: one line, the previous model runs on
            msg = f"model failed to load: {one_line(e)}"
            log.debug("pipeline factory failed", exc_info=True)
            self.error.emit(msg)
            self.model_failed.emit(msg)
            return False
        old, self.pipeline = self.pipeline, p
        if self.runner is not None:
            self.runner.replace_pipeline(p)
        self.settings = settings
        if old is not None:
            old.close()
        name, prov = str(p.model_name), str(p.provider)
        self.info.emit(f"model: {name} on {prov}")
        self.model_changed.emit(name, prov, binding.get_model(settings) or "")
        return True

    def _apply_settings(self, settings) -> None:
        """Thresholds, layers and smoothing go into the running pipeline (the monitor keeps its
        calibration, the tracker its faces); only those fields are taken from ``settings``
        (binding.with_ui_fields); turning the monitor on or off rebuilds the pipeline with the
        model that runs."""
        old = self.settings
        settings = binding.with_ui_fields(old, settings)
        p = self.pipeline
        if p is not None:     # only UI fields differ (with_ui_fields): no rebuild, unless the monitor goes on / off
            ok = True
            if old.monitor != settings.monitor:
                ok = _swap_monitor_settings(p, settings.monitor)
            if ok:
                p.settings = settings          # Pipeline reads .smoothing per frame
                p.layers = settings.layers     # and draws with .layers
                self.settings = settings
                return
        self._build_pipeline(settings)

    def _start_recording(self, path: str) -> None:
        self._stop_recording()
        running = self.runner is not None and not self._end_run
        if not running and self._next_source is not None:
            self._record_at_start = path     # the source opened: its run starts with the recording
            return
        if not running:
            self.error.emit("recording: no source is running (open a camera or a video first)")
            self.recording_changed.emit("")
            return
        src = self.runner.source
        # the encoder settings follow what the overlay is made of when the recording starts
        overlay = overlay_kind(self.pipeline.layers, triangles=self.pipeline.backend.triangles is not None)
        try:
            out = recording_outputs(path, src.fps, tuple(src.size), quality=self.record_quality,
                                    overlay=overlay, drop=self.drop, say=self.error.emit)
        except OutputError as e:
            self.error.emit(f"recording: {one_line(e)}")
            self.recording_changed.emit("")
            return
        self.runner.replace_outputs(out).close()       # the run's empty outputs
        self.recording = Path(path)
        self.info.emit(f"recording to {path}")
        self.recording_changed.emit(str(path))

    def _stop_recording(self) -> None:
        self._record_at_start = None
        if self.recording is None or self.runner is None:
            return
        src = self.runner.source
        out = self.runner.replace_outputs(Outputs(RunOptions(), fps=src.fps, size=tuple(src.size), live=True))
        self._recording_closed(out, out.close(self.runner.summary()))

    def _recording_closed(self, out: Outputs, written: list) -> None:
        path, self.recording = self.recording, None
        if out.failures:      # the window keeps showing why the recording stopped
            self.error.emit(f"recording stopped: {out.failures[0]}")
        elif written:
            self.info.emit(f"recorded {out.recording_frames} frames to {path}")
        self.recording_changed.emit("")


# --------------------------------------------------------------------------- pipeline / monitor helpers
def _swap_monitor_settings(pipeline, monitor_settings) -> bool:
    """New thresholds into the running DriverMonitor (calibration and counters kept)."""
    mon = pipeline.monitor
    if mon is None or monitor_settings is None:
        return mon is None and monitor_settings is None   # monitor switched on/off: rebuild
    mon.update_settings(monitor_settings)
    return True
