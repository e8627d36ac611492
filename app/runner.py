"""The run: source -> Pipeline -> outputs (recording, per-frame dump, event log, alert sound).

``Outputs`` owns the files of a run and what happens when one cannot be written; ``Runner`` drives
a source through a Pipeline into them, with stage timing, the summary and finalizing. Headless
(app/headless.py), the benchmark (app/eval/bench.py), the soak (app/eval/soak.py) and the window's
worker (app/gui/worker.py) run a ``Runner``; the window plugs into its loop through ``RunHooks``
(commands in between frames, each result and its drawn image out).

- Logs are logs: the dump and the event log are JSON lines under their final names, every line
  complete in the file when ``write`` returns (app.io.files.JsonLinesWriter); the recording is
  fragmented MP4 (app.io.writer). A crash loses at most the last 2 s of video and a torn line.
- An output that cannot be written (a full disk above all) is reported in one line that says what
  and where. With a file source the run then stops (exit 1, what was written is kept). With a
  live source (a camera, the window) that output is closed and the run goes on: monitoring and
  alerts never depend on the disk.
- A live camera that stops delivering is retried by the source (app.io.capture); the runner logs
  ``camera_lost`` / ``camera_back`` events and says so in one line each.
"""
from __future__ import annotations

import functools
import logging
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from app.core.types import FaceObservation, Frame, FrameResult, SourceEvent
from app.core.errors import one_line
from app.io.files import JsonLinesWriter, OutputError
from app.io.writer import BackgroundWriter, VideoWriter
from app.monitor.core import camera_unavailable_event
from app.io.sound import sound_for
from app.pipeline import resolve_model_path
from app.render import draw_result, overlay_kind
from app.settings import Layers, RunOptions, Settings

log = logging.getLogger("app")

ROOT = Path(__file__).resolve().parents[1]
ALERT_WAV = ROOT / "assets" / "alert.wav"
EMERGENCY_WAV = ROOT / "assets" / "emergency.wav"   # the unresponsive driver: louder, repeated
# frame rate a recording is timed with when the source reports none (cameras: app.io.capture
# assumes the same nominal 30 fps)
FALLBACK_FPS = 30.0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


# the --dump's precision in decimal places (the batch's frames.parquet stores the same values)
DUMP_PLACES_PX = 2     # landmarks and iris points (image pixels)
DUMP_PLACES = 3        # box, angles, eye / mouth openness, eye visibility, gaze
DUMP_PLACES_BS = 4     # blendshape scores


def _num(v) -> Optional[float]:
    v = float(v)
    return round(v, DUMP_PLACES) if math.isfinite(v) else None


def face_record(o: FaceObservation) -> dict:
    """One face of the --dump line (image pixels; angles in degrees, AFLW2000 Pose_Para convention)."""
    lm = np.round(np.asarray(o.landmarks, dtype=np.float64)[:, :3], DUMP_PLACES_PX)
    return {
        "box": [_num(v) for v in o.box[:4]],
        "landmarks": lm.tolist(),          # NaN -> null by the JSON-lines writer
        "yaw": _num(o.yaw), "pitch": _num(o.pitch), "roll": _num(o.roll),
        "eye_open": [_num(o.eye_open[0]), _num(o.eye_open[1])],   # null: not measured or not visible
        "eye_available": list(o.eye_available),   # per eye: true / false (not visible) / null (not measured)
        "eye_visibility": [_num(v) for v in o.eye_visibility],
        "mouth_open": _num(o.mouth_open),
        # mediapipe's iris points 468-477: the subject's right iris (centre, 4 on its rim), then the left
        "iris": (None if o.mesh_points is None or len(o.mesh_points) < 478 else
                 np.round(np.asarray(o.mesh_points[468:478], np.float64), DUMP_PLACES_PX).tolist()),
        "blendshapes": (None if o.blendshapes is None else
                        {k: round(float(v), DUMP_PLACES_BS) for k, v in o.blendshapes.items() if k != "_neutral"}),
        "gaze": None if o.gaze is None else {
            "yaw": _num(o.gaze.yaw), "pitch": _num(o.gaze.pitch),
            "eye_yaw": [_num(v) for v in o.gaze.eyes[:, 0]], "eye_pitch": [_num(v) for v in o.gaze.eyes[:, 1]]},
        "model": o.model,
    }


def overlay_kind_for(settings: Settings) -> str:
    """What a recording of these settings shows (app.render.overlay_kind), known before the models
    load: the face mesh alone draws its wireframe, a 3DMM its triangles."""
    return overlay_kind(settings.layers, triangles=resolve_model_path(settings.model) is not None)


def source_event_record(ev: SourceEvent, t_origin: Optional[float], frame: int, source: str) -> dict:
    """A lost / back event as an event-log line ("camera_lost" / "camera_back"), timed like the
    monitor's events: ``t`` seconds since the first frame, ``time`` the wall clock."""
    t = ev.t - (t_origin if t_origin is not None else ev.t)
    rec = {"time": datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds"),
           "t": round(t, 6), "frame": frame, "event": f"camera_{ev.kind}", "kind": "camera",
           "source": source, "message": ev.message}
    if ev.kind == "back":
        rec["lost_s"] = round(ev.lost_s, 3)
    return rec


class Outputs:
    """The files (and the sound) of one run. ``Outputs(options, fps=, size=, live=)`` opens them
    (``OutputError`` for a bad path, after removing the ones already opened); ``write`` per frame,
    ``source_event`` for a lost / back camera, ``close(summary)`` at the end.

    ``live``: an output that fails is closed while the others go on, and the recording never makes
    the caller wait (frames the encoder cannot take are left out; ``drop`` overrides this);
    otherwise (files) every frame is recorded and a failure sets ``stop`` so the caller ends the
    run. ``overlay`` ("surface" or "lines", app.render.overlay_kind) picks the recording's encoder
    settings for what it will show. ``say`` gets each one-line message (errors start with "error:")."""

    def __init__(self, options: RunOptions, *, fps: float, size: tuple[int, int], live: bool,
                 drop: Optional[bool] = None, monitor_on: bool = True, overlay: str = "surface",
                 say: Callable[[str], None] = _say):
        self.options = options
        self.live = bool(live)
        drop = self.live if drop is None else bool(drop)
        self.say = say
        self.recording: Optional[BackgroundWriter] = None
        self.dump: Optional[JsonLinesWriter] = None
        self.events = None
        self.sound = None
        self.emergency_sound = None
        self.failures: list[str] = []
        self._dead: set[str] = set()   # outputs that failed (their error was said)
        self._kept: list[str] = []     # "KIND PATH" of failed outputs closed during the run
        self.stop = False
        self.encode_ms = 0.0           # time the last write waited for the encoder
        self.recording_handed = 0      # frames handed to the recording (some may be left out: drop)
        self._dropped_closed = 0       # frames the recording left out, once it is closed
        if options.events and not monitor_on:
            raise OutputError("--events needs driver monitoring (remove --no-monitor)")
        try:
            if options.record:
                self.recording = BackgroundWriter(
                    VideoWriter(options.record, fps or FALLBACK_FPS, tuple(size), quality=options.record_quality,
                                overlay=overlay, scale=options.record_scale),
                    drop=drop)
            if options.dump:
                self.dump = JsonLinesWriter(options.dump, "the per-frame dump")
            if options.events:
                from app.monitor.events import EventLog

                self.events = EventLog(options.events)
            if options.sound:
                from app.io.sound import AlertSound

                self.sound = AlertSound(str(ALERT_WAV))
                self.emergency_sound = AlertSound(str(EMERGENCY_WAV), min_interval=1.0)
        except BaseException:
            self.discard()
            raise

    # ------------------------------------------------------------------ per frame
    def write(self, result: FrameResult, annotated: Optional[np.ndarray] = None,
              layers: Optional[Layers] = None) -> None:
        """One frame's outputs. The recording gets ``annotated`` (the frame the caller drew, e.g.
        the one the window shows), or else the result drawn with ``layers`` on the encoder's
        thread: the next frame is processed meanwhile (``render_ms``: the time the last drawing took)."""
        frame, observations, events = result.frame, result.observations, result.events
        t = time.perf_counter()
        if self.recording is not None:
            # drawn on the encoder's thread at the recording's size (smaller with --record-scale)
            image = annotated if annotated is not None else functools.partial(
                draw_result, result, layers, size=self.recording.writer.scaled)
            try:
                self.recording.write(image, frame.timestamp)
                self.recording_handed += 1
            except OutputError as e:
                self._failed("recording", e)
        self.encode_ms = (time.perf_counter() - t) * 1e3
        if self.dump is not None:
            try:
                self.dump.write({"frame": frame.index, "t": round(float(frame.timestamp), 6),
                                 "faces": [face_record(o) for o in observations]})
            except OutputError as e:
                self._failed("dump", e)
        self.log_events(events)
        want = sound_for(result.state, events) if self.sound is not None else None
        if want is not None:
            (self.emergency_sound if want == "emergency" else self.sound).play()

    def log_events(self, events: list) -> None:
        if self.events is None:
            return
        try:
            for ev in events:
                self.events.write(ev)
            self.events.tick()
        except OutputError as e:
            self._failed("events", e)

    def source_event(self, record: dict) -> None:
        """A camera_lost / camera_back line (source_event_record) into the event log; the sound
        on a lost camera: a monitor that cannot see must say so."""
        unavailable = camera_unavailable_event(record)    # the monitor's unavailable_start / _end camera line
        self.log_events([record] if unavailable is None else [record, unavailable])
        if self.sound is not None and record.get("event") == "camera_lost":
            self.sound.play()

    def _failed(self, which: str, e: OutputError) -> None:
        msg = str(e)
        self.failures.append(msg)
        self._dead.add(which)
        if not self.live:
            self.say(f"error: {msg}")
            self.stop = True
            return
        self.say(f"error: {msg}; monitoring goes on without it")
        if which == "recording":
            out, self.recording = self.recording, None
            self._dropped_closed = out.frames_dropped
        elif which == "dump":
            out, self.dump = self.dump, None
        else:
            out, self.events = self.events, None
        try:
            p = out.close()
        except OutputError:
            p = None                 # already reported; what was written stays
        if p is not None:
            self._kept.append(f"{which} {p} (up to the failure)")

    # ------------------------------------------------------------------ end
    @property
    def draws(self) -> bool:
        """Whether these outputs draw the frames (a recording does): the Runner then asks the
        pipeline for everything the overlay shows, the dense mesh included."""
        return self.recording is not None

    @property
    def reads_blendshapes(self) -> bool:
        """Whether these outputs write the blendshape scores (the dump does): otherwise the
        pipeline skips the blendshape model (1.0-1.4 ms of CPU per frame with one face: docs/benchmarks.md
        section 19); nothing else reads them (the monitor, the gaze and the overlay do not)."""
        return self.dump is not None

    @property
    def render_ms(self) -> float:
        """How long the encoder thread took to draw the last frame it drew (0 when the caller draws)."""
        return self.recording.render_ms if self.recording is not None else 0.0

    @property
    def recording_dropped(self) -> int:
        return self.recording.frames_dropped if self.recording is not None else self._dropped_closed

    @property
    def recording_frames(self) -> int:
        """Frames in the recording so far: handed over minus those the busy encoder left out."""
        return self.recording_handed - self.recording_dropped

    def close(self, summary: Optional[dict] = None) -> list[str]:
        """Finalize every output ("summary" goes last into the event log); the "KIND PATH" of each
        file written. A failure here is said in one line and added to ``failures``."""
        written = list(self._kept)
        for name, out in (("recording", self.recording), ("dump", self.dump), ("events", self.events)):
            if out is None:
                continue
            if name == "recording":
                self._dropped_closed = out.frames_dropped
            if name == "recording" and out.frames_dropped:
                self.say(f"warning: {out.frames_dropped} frames left out of the recording "
                         f"(the encoder could not keep up with the live source)")
            dead = name in self._dead
            try:
                if name == "events" and summary is not None and not dead:
                    out.write(summary, sync=True)
                p = out.close()
            except OutputError as e:
                if not dead:
                    self.failures.append(str(e))
                    self.say(f"error: {e}")
                dead = True
                p = out.close() if name != "recording" else (out.path if out.frames_written else None)
            if p is not None:
                written.append(f"{name} {p}" + (" (up to the failure)" if dead else ""))
        self.recording = self.dump = self.events = None
        return written

    def discard(self) -> None:
        """Remove every file (a run that failed before its first frame)."""
        if self.recording is not None:
            self.recording.abort()
        for out in (self.dump, self.events):
            if out is not None:
                out.discard()
        self.recording = self.dump = self.events = None


class StageTimes:
    """Median and p95 per stage over a run of any length in bounded memory: the values of the
    last < EXACT frames exactly, older ones folded into a histogram of log-spaced bins (0.5 %
    apart, so a quantile is off by at most 0.5 %). An hour at 30 fps would otherwise keep ~1.3
    million floats."""

    EXACT = 4096
    EDGES = np.geomspace(1e-3, 1e5, 3700)     # ms

    def __init__(self):
        self._vals: dict[str, list[float]] = {}
        self._hist: dict[str, np.ndarray] = {}

    def add(self, stage_ms: dict) -> None:
        for k, v in stage_ms.items():
            vals = self._vals.setdefault(k, [])
            vals.append(float(v))
            if len(vals) >= self.EXACT:
                h = self._hist.setdefault(k, np.zeros(len(self.EDGES) + 1, np.int64))
                h += np.bincount(np.searchsorted(self.EDGES, vals), minlength=len(h))
                vals.clear()

    def stats(self) -> dict:
        """stage -> {"median", "p95"} in ms (insertion order of the stages)."""
        out = {}
        for k, vals in self._vals.items():
            h = self._hist.get(k)
            if h is None:
                out[k] = stage_stats(vals)
                continue
            h = h + np.bincount(np.searchsorted(self.EDGES, vals), minlength=len(h)).astype(np.int64)
            cum = np.cumsum(h)
            mids = np.concatenate([[0.0], np.sqrt(self.EDGES[:-1] * self.EDGES[1:]), [self.EDGES[-1]]])
            out[k] = {q: float(mids[int(np.searchsorted(cum, p * cum[-1]))]) for q, p in (("median", 0.5), ("p95", 0.95))}
        return out


@dataclass
class RunReport:
    frames: int = 0
    with_face: int = 0
    elapsed: float = 0.0
    stage_ms: dict = field(default_factory=dict)   # stage -> {"median", "p95"} ms (after the warm-up)
    interrupted: bool = False
    error: Optional[str] = None                    # processing stopped by this (one line)
    summary: Optional[dict] = None
    written: list = field(default_factory=list)
    counted: int = 0                               # frames after the warm-up
    cpu_s: float = 0.0                             # CPU time of all threads over those frames
    rc: int = 0


class RunHooks:
    """What a caller plugs into ``Runner``'s loop (the window's worker does; headless, the bench and
    the soak run without). Every method runs on the Runner's thread; each default does nothing.

    - ``between_frames(runner)`` before each read of the source: apply commands (pause by blocking
      here, recalibrate, new thresholds, ``runner.replace_pipeline`` for another model,
      ``runner.replace_outputs`` to start or stop a recording). False ends the run, finalized as
      at the end of the source.
    - ``on_result(runner, result, annotated, stage_ms)`` after the frame's outputs were written:
      ``annotated`` is the drawn frame (``Runner(draw=True)``, else None); ``stage_ms`` the
      pipeline's stages plus decode, overlay, encode and total (ms).
    - ``on_source_event(runner, event)`` a live camera lost / back (already in the event log).
    - ``on_frame_error(runner, frame, error)`` processing or drawing a frame raised: True skips that
      frame and goes on (a window must not end on one bad frame); False (the default) ends the
      run with the error, as without hooks.
    - ``wants_drawing(runner)`` after each frame is processed, with ``Runner(draw=True)``: False
      skips drawing that frame (a window that will not show it: it shows at most its redraw
      rate). Not asked while an output records: the recording gets every frame drawn.
    - ``draw_size(runner, size)`` (w, h) to draw a frame of ``size`` (w, h) at with
      ``Runner(draw=True)`` (a window's view smaller than the frame), None (the default) for the
      frame's own size. Not asked while an output records: the recording gets the frame drawn at
      its own size.
    """

    def between_frames(self, runner: "Runner") -> bool:
        return True

    def on_result(self, runner: "Runner", result: FrameResult, annotated: Optional[np.ndarray],
                  stage_ms: dict) -> None:
        pass

    def on_source_event(self, runner: "Runner", event: SourceEvent) -> None:
        pass

    def on_frame_error(self, runner: "Runner", frame: Frame, error: Exception) -> bool:
        return False

    def wants_drawing(self, runner: "Runner") -> bool:
        return True

    def draw_size(self, runner: "Runner", size: tuple[int, int]) -> Optional[tuple[int, int]]:
        return None


class Runner:
    """``Runner(source, pipeline, outputs).run() -> RunReport``: every frame of ``source`` through
    ``pipeline.process`` into ``outputs`` until the end, ``max_frames``, ``duration_s``, Ctrl-C
    (the current frame is finished first; a second Ctrl-C interrupts at once) or an output
    failure (file sources); then everything is finalized. ``warmup`` frames run before the stage timing starts;
    ``on_frame(frame_ms)`` is called after each frame (the soak's per-minute table).

    ``hooks`` (RunHooks) lets a caller steer the loop between frames and see every result; ``draw``
    draws each result on this thread (for a window that shows every frame; the recording then
    gets that image) instead of only for a recording, on the encoder's thread;
    ``close_pipeline=False`` leaves the pipeline open at the end (the window runs one per source)."""

    def __init__(self, source, pipeline, outputs: Outputs, *, max_frames: Optional[int] = None,
                 duration_s: Optional[float] = None, warmup: int = 0, quiet: bool = False,
                 on_frame: Optional[Callable[[float], None]] = None, say: Callable[[str], None] = _say,
                 hooks: Optional[RunHooks] = None, draw: bool = False, close_pipeline: bool = True):
        self.source, self.pipe, self.outputs = source, pipeline, outputs
        self.max_frames, self.duration_s, self.warmup, self.quiet = max_frames, duration_s, warmup, quiet
        self.on_frame, self.say = on_frame, say
        self.hooks = hooks if hooks is not None else RunHooks()
        self.draw, self.close_pipeline = bool(draw), bool(close_pipeline)
        self._stop_requested = False
        self._t_origin: Optional[float] = None
        self._last_index = -1
        self._n_lost = 0
        self._lost_wall: Optional[float] = None    # perf_counter() when the source was lost
        self._lost_s = 0.0

    def replace_pipeline(self, pipeline):
        """Run ``pipeline`` from the next frame on (between frames only); the old one is returned,
        open: the caller closes it."""
        old, self.pipe = self.pipe, pipeline
        return old

    def replace_outputs(self, outputs: Outputs) -> Outputs:
        """Write into ``outputs`` from the next frame on (between frames only); the old ones are
        returned, open: the caller closes them."""
        old, self.outputs = self.outputs, outputs
        return old

    @property
    def t_origin(self) -> Optional[float]:
        """Timestamp of the run's first frame (None before it): event times count from it."""
        return self._t_origin

    def _on_sigint(self, signum, frame_) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested = True

    def _source_events(self, rep: RunReport) -> None:
        for ev in self.source.pop_events():
            self.say(("warning: " if ev.kind == "lost" else "") + ev.message)
            if ev.kind == "lost":
                self._n_lost += 1
                self._lost_wall = time.perf_counter()
            else:
                self._lost_s += ev.lost_s
                self._lost_wall = None
            self.outputs.source_event(source_event_record(ev, self._t_origin, self._last_index, self.source.name))
            self.hooks.on_source_event(self, ev)

    def run(self) -> RunReport:
        rep = RunReport()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        t_start = t_progress = t_begin = time.perf_counter()
        c_start = time.process_time()
        counted = 0
        times = StageTimes()
        try:
            self.pipe.prepare(self._vertices_wanted())   # before the first frame, not during it
            t_start = t_progress = t_begin = time.perf_counter()
            c_start = time.process_time()
            while self.max_frames is None or rep.frames < self.max_frames:
                if self._stop_requested:
                    rep.interrupted = True
                    self.say("interrupted: finalizing outputs")
                    break
                if self.outputs.stop:
                    break
                if self.duration_s is not None and time.perf_counter() - t_begin >= self.duration_s:
                    break
                if not self.hooks.between_frames(self):
                    break
                self._source_events(rep)   # a camera lost meanwhile is said before waiting for a frame
                t0, c0 = time.perf_counter(), time.process_time()
                frame = self.source.read(timeout=0.1)
                t1 = time.perf_counter()
                self._source_events(rep)
                if frame is None:
                    if self.source.finished:
                        break
                    continue
                if self._t_origin is None:
                    self._t_origin = frame.timestamp
                done = self._process(frame)
                if done is None:
                    continue               # a bad frame the hooks chose to skip
                res, annotated, draw_ms = done
                t3 = time.perf_counter()
                obs = res.observations
                self._last_index = frame.index
                rep.frames += 1
                if rep.frames == self.warmup + 1:
                    t_start = t0           # the measured part starts with this frame
                    c_start = c0
                st = dict(res.stage_ms, decode=(t1 - t0) * 1e3,
                          overlay=draw_ms if annotated is not None else self.outputs.render_ms,
                          encode=self.outputs.encode_ms, total=(t3 - t0) * 1e3)
                if rep.frames > self.warmup:
                    counted += 1
                    rep.with_face += bool(obs)
                    times.add(st)
                self.hooks.on_result(self, res, annotated, st)
                if self.on_frame is not None:
                    self.on_frame((t3 - t0) * 1e3)
                now = time.perf_counter()
                if not self.quiet and now - t_progress >= 1.0:
                    self.say(f"frame {rep.frames}: {counted / (now - t_start):.1f} fps, {len(obs)} face(s)")
                    t_progress = now
        except KeyboardInterrupt:
            rep.interrupted = True
            self.say("interrupted: finalizing outputs")
        except Exception as e:   # the run's error boundary: finalize what was written, then report
            rep.error = f"processing stopped at frame {rep.frames}: {one_line(e)}"
            self.say(f"error: {rep.error}")
            log.debug("processing error", exc_info=True)
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            rep.elapsed = time.perf_counter() - t_start
            rep.cpu_s = time.process_time() - c_start
            rep.stage_ms = times.stats()
            self.source.stop()
            self._source_events(rep)
            rep.counted = counted
            rep.summary = self._summary()
            if rep.frames == 0:
                self.outputs.discard()     # no frame, no files (the caller says why)
            else:
                rep.written = self.outputs.close(rep.summary)
            if self.close_pipeline:
                self.pipe.close()
        if rep.error or self.outputs.failures:
            rep.rc = 1
        elif self.source.error and not rep.interrupted:
            self.say(f"warning: {self.source.error}")
            rep.rc = 1
        return rep

    def _process(self, frame: Frame) -> Optional[tuple[FrameResult, Optional[np.ndarray], float]]:
        """(result, drawn image or None, drawing ms) of one frame, its outputs written; None for a
        frame that failed and that the hooks skip (a failure they do not skip is raised)."""
        try:
            res = self.pipe.process(frame, vertices=self._vertices_wanted(),
                                    blendshapes=self.outputs.reads_blendshapes)
            annotated, draw_ms = None, 0.0
            # a recording takes this drawing too: then every frame is drawn, at the frame's size
            if self.draw and (self.outputs.draws or self.hooks.wants_drawing(self)):
                t = time.perf_counter()
                h, w = res.frame.image.shape[:2]
                size = None if self.outputs.draws else self.hooks.draw_size(self, (w, h))
                annotated = draw_result(res, self.pipe.layers, size=size)
                draw_ms = (time.perf_counter() - t) * 1e3
        except Exception as e:   # the hooks decide: skip this frame (the window), or end the run
            if self.hooks.on_frame_error(self, frame, e):
                return None
            raise
        # without ``draw`` the overlay is drawn only for a recording (a run without one does not
        # pay it), on the encoder's thread while this one goes on with the next frame
        self.outputs.write(res, annotated, layers=self.pipe.layers)
        return res, annotated, draw_ms

    def _vertices_wanted(self) -> bool:
        """Whether this frame's dense mesh will be drawn: the mesh layer is on and this Runner
        draws (a window) or an output does (a recording). Otherwise the pipeline skips it (about
        3 ms of CPU per face with the shipped 3DMM: docs/benchmarks.md section 15)."""
        return bool(self.pipe.layers.mesh) and (self.draw or self.outputs.draws)

    def summary(self) -> Optional[dict]:
        """The monitor's summary of the run so far (the event log's last line)."""
        return self._summary()

    def _summary(self) -> Optional[dict]:
        mon = self.pipe.monitor
        if mon is None:
            return None
        s = dict(mon.summary())
        if self.source.is_live:
            lost = self._lost_s
            if self._lost_wall is not None:          # still lost at the end
                lost += time.perf_counter() - self._lost_wall
            s["camera_lost"] = self._n_lost
            s["camera_lost_s"] = round(lost, 3)
        return s


def stage_stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return ({"median": float(np.median(a)), "p95": float(np.percentile(a, 95))} if len(a)
            else {"median": 0.0, "p95": 0.0})
