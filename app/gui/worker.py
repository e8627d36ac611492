"""The GUI's processing thread: it owns the Source, the Pipeline and the recording.

Nothing here runs on the UI thread. Two threads per running source:

- ``FrameGrabber`` (a plain thread) iterates the ``Source`` and keeps only the NEWEST frame in a
  one-slot mailbox. When processing is slower than the source, older frames are overwritten and
  counted as dropped, never queued. Video files are paced to their own frame rate (``realtime``),
  so a file behaves like a camera; ``realtime=False, drop=False`` hands over every frame as fast
  as the consumer takes them (the benchmark mode). Each frame is stamped with the wall clock
  (``time.perf_counter()``) when it left the source: the UI measures latency from that stamp to
  the moment the result is painted.
- ``ProcessingWorker`` (a ``QThread``) takes the newest frame, runs ``Pipeline.process``, writes the
  annotated frame when recording, and emits a ``Result`` through the ``result`` signal. The UI
  talks to it only through a thread-safe command queue (``set_source``, ``set_model``, ``pause``,
  ``start_recording`` ...), handled between frames.

Errors (a source that does not open or breaks off, a model that fails to load, an unwritable
recording path) are emitted as one-line messages on the ``error`` signal; the worker keeps running
and accepts a new source or model.
"""
from __future__ import annotations

import logging
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
from app.runner import Outputs, source_event_record
from app.settings import RunOptions
from app.gui import binding
from app.render import draw_result, overlay_kind

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data sent to the UI
@dataclass
class Stats:
    capture_fps: float = 0.0        # frames/s leaving the source (before dropping)
    process_fps: float = 0.0        # results/s produced by the worker
    frames_captured: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0         # dropped by the grabber (processing slower than the source)
    process_ms: float = 0.0         # Pipeline.process time of this frame
    stage_ms: dict = field(default_factory=dict)
    model: str = ""
    provider: str = ""
    source: str = ""
    recording: Optional[str] = None  # path being recorded, None when not recording
    recording_frames: int = 0


@dataclass
class Result:
    image: np.ndarray                   # annotated BGR frame (owned by the UI from now on)
    raw: Optional[np.ndarray]           # the raw frame (kept only when the worker is asked to)
    observations: list                  # list[FaceObservation]
    driver: Optional[FaceObservation]   # the face the monitor judges (one of observations), None = no face
    state: Optional[MonitorState]
    frame: Frame                        # image is None-ed out to avoid keeping two buffers
    wall_t: float                       # perf_counter() when the frame left the source
    stats: Stats
    events: list = field(default_factory=list)  # monitor events (start/end dicts) of this frame


# --------------------------------------------------------------------------- grabber
class FrameGrabber:
    """Reads a started ``Source`` on its own thread; ``take()`` returns the newest frame."""

    def __init__(self, source, *, realtime: bool = True, drop: bool = True):
        self.source = source
        self.realtime = bool(realtime) and not source.is_live
        self.drop = bool(drop)
        self._cv = threading.Condition()
        self._slot: Optional[tuple[Frame, float]] = None
        self._ended = False
        self._stop = threading.Event()
        self._running = threading.Event()   # cleared = paused (files stop reading; cameras drop)
        self._running.set()
        self.captured = 0
        self.dropped = 0
        self._times: list[float] = []
        self._thread = threading.Thread(target=self._run, name=f"grab:{source.name}", daemon=True)

    def start(self) -> "FrameGrabber":
        self.source.start()
        self._thread.start()
        return self

    @property
    def capture_fps(self) -> float:
        with self._cv:
            ts = list(self._times)
        if len(ts) < 2 or ts[-1] <= ts[0]:
            return 0.0
        return (len(ts) - 1) / (ts[-1] - ts[0])

    def _run(self) -> None:
        t_wall0 = None
        t_src0 = None
        try:
            while not self._stop.is_set():
                if not self._running.is_set() and not self.source.is_live:
                    self._running.wait(0.1)      # a paused file keeps its position
                    t_wall0 = None               # re-base the pacing clock on resume
                    continue
                f = self.source.read(timeout=0.1)
                if f is None:
                    if self.source.finished:
                        break
                    continue
                if self.realtime:
                    now = time.perf_counter()
                    if t_wall0 is None:
                        t_wall0, t_src0 = now, f.timestamp
                    due = t_wall0 + (f.timestamp - t_src0)
                    if due > now:
                        if self._stop.wait(due - now):
                            break
                wall = time.perf_counter()
                with self._cv:
                    self.captured += 1
                    self._times.append(wall)
                    if len(self._times) > 60:
                        del self._times[:-60]
                    if self._slot is not None:
                        if self.drop:
                            self.dropped += 1
                        else:
                            while self._slot is not None and not self._stop.is_set():
                                self._cv.wait(0.1)
                    self._slot = (f, wall)
                    self._cv.notify_all()
        finally:
            with self._cv:
                self._ended = True
                self._cv.notify_all()

    def set_paused(self, paused: bool) -> None:
        if paused:
            self._running.clear()
        else:
            self._running.set()

    def take(self, timeout: float = 0.1) -> Optional[tuple[Frame, float]]:
        """The newest frame and its wall-clock stamp, or None (nothing new within ``timeout``)."""
        with self._cv:
            if self._slot is None and not self._ended:
                self._cv.wait(timeout)
            item, self._slot = self._slot, None
            self._cv.notify_all()
            return item

    @property
    def ended(self) -> bool:
        """True once the source is exhausted (or broke off) and the last frame was taken."""
        with self._cv:
            return self._ended and self._slot is None

    @property
    def error(self) -> Optional[str]:
        return self.source.error

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        try:
            self.source.stop()
        finally:
            if self._thread.is_alive() and self._thread is not threading.current_thread():
                self._thread.join(timeout=5.0)


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


class Recorder:
    """Annotated frames to an mp4 plus the monitor events beside it (NAME.events.jsonl), through
    app.runner.Outputs as a live run: the worker never waits for the encoder (with ``drop``), and a
    file that cannot be written is reported through ``say`` while monitoring goes on."""

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], *, events: bool = True,
                 quality: str = DEFAULT_QUALITY, overlay: str = "surface", drop: bool = True,
                 say: Callable[[str], None] = log.error):
        self.path = Path(path)
        if not self.path.parent.exists() and _parent_creatable(self.path.parent):
            self.path.parent.mkdir(exist_ok=True)   # e.g. recordings/ on first use
        opts = RunOptions(record=str(self.path), events=str(events_path_for(self.path)) if events else None,
                          record_quality=quality)
        # OutputError (one line) when not writable
        self.outputs = Outputs(opts, fps=fps, size=size, live=True, drop=drop, overlay=overlay, say=say)
        self._handed = 0
        self._dropped = 0
        self.started_wall = time.monotonic()

    @property
    def frames(self) -> int:
        """Frames in the recording (handed over minus those the busy encoder left out)."""
        return self._handed - max(self._dropped, self.outputs.recording_dropped)

    @property
    def failed(self) -> bool:
        return bool(self.outputs.failures)

    def write(self, result: FrameResult, annotated: np.ndarray) -> None:
        self.outputs.write(result, annotated)
        self._handed += 1

    def source_event(self, record: dict) -> None:
        self.outputs.source_event(record)

    def close(self, summary: Optional[dict] = None) -> list[str]:
        self._dropped = self.outputs.recording_dropped
        return self.outputs.close(summary)


def _parent_creatable(folder: Path) -> bool:
    # create only a missing leaf folder (recordings/), never a deep tree under a bad path
    return folder.parent.exists() and os.access(folder.parent, os.W_OK)


# --------------------------------------------------------------------------- worker
MAX_PENDING = 3                          # results in flight to the UI before the worker skips some
PipelineFactory = Callable[[Any], Any]   # settings -> Pipeline
SourceFactory = Callable[..., Any]       # (spec, loop=...) -> Source


def _default_pipeline_factory(settings):
    from app.pipeline import Pipeline

    return Pipeline(settings)


def _default_source_factory(spec, *, loop: bool = False):
    from app.io.capture import open_source

    return open_source(spec, loop=loop)


class ProcessingWorker(QThread):
    """Capture + inference + recording off the UI thread. Communicate through the methods below."""

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
                 realtime: bool = True, drop: bool = True, loop: bool = True, keep_raw: bool = False,
                 parent=None):
        super().__init__(parent)
        self.settings = settings
        self._pipeline_factory = pipeline_factory
        self._source_factory = source_factory
        self.realtime = realtime
        self.drop = drop
        self.loop = loop
        self.keep_raw = keep_raw
        self._cmds: "queue.Queue[tuple]" = queue.Queue()
        self._quit = threading.Event()
        self.pipeline = None
        self.grabber: Optional[FrameGrabber] = None
        self.recorder: Optional[Recorder] = None
        self.record_quality = DEFAULT_QUALITY
        self._t_origin: Optional[float] = None     # first frame timestamp of the running source
        self._last_index = -1
        self.paused = False
        self._proc_times: list[float] = []
        self.frames_processed = 0
        self._last_process_error: Optional[str] = None
        # results emitted but not yet taken by the UI: above MAX_PENDING the worker skips emitting
        # (the UI is busy, e.g. a modal dialog): nothing piles up in the Qt event queue
        self._pending = 0
        self._pending_lock = threading.Lock()
        self.results_skipped = 0

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
            self._build_pipeline(self.settings, announce=True)
            while not self._quit.is_set():
                idle = self.paused or self.grabber is None or self.pipeline is None
                self._handle_commands(block=idle)
                if self._quit.is_set():
                    break
                if self.paused or self.grabber is None or self.pipeline is None:
                    continue
                item = self.grabber.take(timeout=0.05)
                for ev in self.grabber.source.pop_events():
                    self._source_event(ev)
                if item is None:
                    if self.grabber.ended:
                        self._end_source()
                    continue
                self._process(*item)
        except Exception as e:  # never die silently: tell the UI
            log.exception("GUI worker failed")
            self.error.emit(f"processing stopped: {one_line(e)}")
        finally:
            self._stop_recording()
            if self.grabber is not None:
                self.grabber.stop()
                self.grabber = None

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
            self._stop_recording()
            if self.grabber is not None:
                self.grabber.stop()
                self.grabber = None
            self.source_changed.emit("", 0.0)
        elif kind == "model":
            new = binding.with_model(self.settings, cmd[1])
            self._build_pipeline(new, announce=True)
        elif kind == "settings":
            self._apply_settings(cmd[1])
        elif kind == "pause":
            self.paused = cmd[1]
            if self.grabber is not None:
                self.grabber.set_paused(self.paused)
            self.paused_changed.emit(self.paused)
        elif kind == "recalibrate":
            mon = self.pipeline.monitor if self.pipeline is not None else None
            if mon is not None:
                mon.recalibrate()
                self.info.emit("recalibrating: look straight ahead")
            else:
                self.error.emit("recalibrate: the driver monitor is not active in this pipeline")
        elif kind == "record":
            self._start_recording(cmd[1])
        elif kind == "stop_record":
            self._stop_recording()

    def _open_source(self, spec) -> None:
        name = str(spec)
        try:
            src = self._source_factory(spec, loop=self.loop)
        except Exception as e:  # SourceError: one line already
            msg = one_line(e)
            self.error.emit(msg)
            self.source_failed.emit(msg)
            return  # the previous source (if any) keeps running
        self._stop_recording()
        if self.grabber is not None:
            self.grabber.stop()
        self.grabber = FrameGrabber(src, realtime=self.realtime, drop=self.drop)
        self.grabber.set_paused(self.paused)
        self.grabber.start()
        self._proc_times.clear()
        self._t_origin, self._last_index = None, -1
        name = src.name
        w, h = src.size
        fps = src.fps
        msg = f"source: {name} ({w}x{h} @ {fps:.1f} fps{', live' if src.is_live else ''})"
        self.info.emit(msg)
        self.source_changed.emit(name, float(fps or 0.0))

    def _end_source(self) -> None:
        g = self.grabber
        self.grabber = None
        err = g.error if g is not None else None
        g.stop()
        self._stop_recording()
        if err:
            self.error.emit(err)
            self.source_ended.emit(err)
        else:
            msg = f"end of {g.source.name}"
            self.info.emit(msg)
            self.source_ended.emit(msg)

    def _build_pipeline(self, settings, announce: bool) -> bool:
        try:
            p = self._pipeline_factory(settings)
        except Exception as e:
            msg = f"model failed to load: {one_line(e)}"
            log.debug("pipeline factory failed", exc_info=True)
            self.error.emit(msg)
            self.model_failed.emit(msg)
            return False   # keep the previous pipeline
        old, self.pipeline = self.pipeline, p
        self.settings = settings
        if old is not None:
            old.close()
        name, prov = str(p.model_name), str(p.provider)
        if announce:
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
        self._build_pipeline(settings, announce=True)

    def _start_recording(self, path: str) -> None:
        if self.recorder is not None:
            self._stop_recording()
        if self.grabber is None:
            self.error.emit("recording: no source is running (open a camera or a video first)")
            self.recording_changed.emit("")
            return
        src = self.grabber.source
        try:
            # the encoder settings follow what the overlay is made of when the recording starts
            overlay = overlay_kind(self.pipeline.layers, triangles=self.pipeline.backend.triangles is not None) \
                if self.pipeline is not None else "surface"
            self.recorder = Recorder(path, src.fps, tuple(src.size), quality=self.record_quality,
                                     overlay=overlay, drop=self.drop, say=self.error.emit)
        except OutputError as e:
            msg = f"recording: {one_line(e)}"
            self.error.emit(msg)
            self.recorder = None
            self.recording_changed.emit("")
            return
        self.info.emit(f"recording to {path}")
        self.recording_changed.emit(str(path))

    def _stop_recording(self) -> None:
        rec, self.recorder = self.recorder, None
        if rec is None:
            return
        mon = self.pipeline.monitor if self.pipeline is not None else None
        summary = mon.summary() if mon is not None else None   # {"event": "summary", ...}
        written = rec.close(summary)
        if rec.failed:      # the window keeps showing why the recording stopped
            self.error.emit(f"recording stopped: {rec.outputs.failures[0]}")
        elif written:
            self.info.emit(f"recorded {rec.frames} frames to {rec.path}")
        self.recording_changed.emit("")

    def _source_event(self, ev: SourceEvent) -> None:
        """A live camera lost / back: said in the window, logged beside a recording."""
        if ev.kind == "lost":
            self.error.emit(f"camera lost: {ev.message}")
        else:
            self.info.emit(ev.message)
        self.source_status.emit(ev.kind, ev.message)
        if self.recorder is not None:
            name = self.grabber.source.name if self.grabber is not None else ""
            self.recorder.source_event(source_event_record(ev, self._t_origin, self._last_index, name))

    def _process(self, frame: Frame, wall_t: float) -> None:
        raw = frame.image.copy() if self.keep_raw else None
        t = time.perf_counter()
        try:
            res = self.pipeline.process(frame)
            t_proc = time.perf_counter()
            annotated = draw_result(res, self.pipeline.layers)   # shown in the window (and recorded)
            t_drawn = time.perf_counter()
        except Exception as e:   # one bad frame must not end the session: report, skip it
            msg = f"processing failed on frame {frame.index}: {one_line(e)}"
            if msg.split(":", 1)[1] != self._last_process_error:
                log.exception(msg)
                self.error.emit(msg)
            self._last_process_error = msg.split(":", 1)[1]
            return
        self._last_process_error = None
        dt = time.perf_counter() - t
        observations, driver, state, events = res.observations, res.driver, res.state, res.events
        if self._t_origin is None:
            self._t_origin = frame.timestamp
        self._last_index = frame.index
        if self.recorder is not None:
            self.recorder.write(res, annotated)
            if self.recorder.failed:       # said on the error signal; the monitor goes on
                self._stop_recording()
        now = time.perf_counter()
        self._proc_times.append(now)
        if len(self._proc_times) > 60:
            del self._proc_times[:-60]
        self.frames_processed += 1
        pt = self._proc_times
        pfps = (len(pt) - 1) / (pt[-1] - pt[0]) if len(pt) > 1 and pt[-1] > pt[0] else 0.0
        g = self.grabber
        stats = Stats(
            capture_fps=g.capture_fps, process_fps=pfps, frames_captured=g.captured,
            frames_processed=self.frames_processed,
            frames_dropped=g.dropped + g.source.frames_dropped,
            process_ms=dt * 1000.0, stage_ms=dict(res.stage_ms, overlay=(t_drawn - t_proc) * 1e3),
            model=res.model, provider=res.provider,
            source=g.source.name,
            recording=str(self.recorder.path) if self.recorder is not None else None,
            recording_frames=self.recorder.frames if self.recorder is not None else 0,
        )
        with self._pending_lock:
            if self._pending >= MAX_PENDING:
                self.results_skipped += 1
                return
            self._pending += 1
        lite = Frame(image=None, timestamp=frame.timestamp, index=frame.index)
        self.result.emit(Result(image=annotated, raw=raw, observations=observations, driver=driver,
                                state=state, frame=lite, wall_t=wall_t, stats=stats, events=events))


# --------------------------------------------------------------------------- pipeline / monitor helpers
def _swap_monitor_settings(pipeline, monitor_settings) -> bool:
    """New thresholds into the running DriverMonitor (calibration and counters kept)."""
    mon = pipeline.monitor
    if mon is None or monitor_settings is None:
        return mon is None and monitor_settings is None   # monitor switched on/off: rebuild
    mon.update_settings(monitor_settings)
    return True
