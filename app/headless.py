"""Headless runner: source -> Pipeline -> recording / per-frame dump / monitor events.

``run(settings, options) -> exit code`` (app.settings.Settings, RunOptions). Every output is written to a temp file in its own folder
and moved onto its name when the run ends (end of input, Ctrl-C, or an error), so a path never
holds a half-written file; a run that fails before its first frame leaves no output. Bad input
(missing or unreadable video, unusable model, unwritable output, --device cuda without CUDA):
one line on stderr, exit 2.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from app.core.errors import one_line
from app.core.types import FaceObservation
from app.settings import RunOptions, Settings

log = logging.getLogger("app")

ROOT = Path(__file__).resolve().parents[1]
ALERT_WAV = ROOT / "assets" / "alert.wav"


class UsageError(Exception):
    """Bad input or output named on the command line (exit 2)."""


def _num(v) -> Optional[float]:
    v = float(v)
    return round(v, 3) if math.isfinite(v) else None


def face_record(o: FaceObservation) -> dict:
    """One face of the --dump line (image pixels; angles in degrees, AFLW2000 Pose_Para convention)."""
    lm = np.round(np.asarray(o.landmarks, dtype=np.float64)[:, :3], 2)
    return {
        "box": [_num(v) for v in o.box[:4]],
        "landmarks": [[(x if math.isfinite(x) else None) for x in row] for row in lm.tolist()],
        "yaw": _num(o.yaw), "pitch": _num(o.pitch), "roll": _num(o.roll),
        "eye_open": [_num(o.eye_open[0]), _num(o.eye_open[1])],
        "mouth_open": _num(o.mouth_open),
        # mediapipe's iris points 468-477: the subject's right iris (centre, 4 on its rim), then the left
        "iris": (None if o.mesh_points is None or len(o.mesh_points) < 478 else
                 np.round(np.asarray(o.mesh_points[468:478], np.float64), 2).tolist()),
        "blendshapes": (None if o.blendshapes is None else
                        {k: round(float(v), 4) for k, v in o.blendshapes.items() if k != "_neutral"}),
        "gaze": None if o.gaze is None else {
            "yaw": _num(o.gaze.yaw), "pitch": _num(o.gaze.pitch),
            "eye_yaw": [_num(v) for v in o.gaze.eyes[:, 0]], "eye_pitch": [_num(v) for v in o.gaze.eyes[:, 1]]},
        "model": o.model,
    }


class JsonLines:
    """JSON lines into ``.NAME.partial`` beside ``path``; ``close()`` moves it onto ``path``."""

    def __init__(self, path: str, what: str):
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise UsageError(f"cannot write {what} to {self.path}: it is a folder; give a file name like out.jsonl")
        if not self.path.parent.is_dir():
            raise UsageError(f"cannot write {what} to {self.path}: folder {self.path.parent} does not exist")
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        try:
            self._f = open(self.tmp, "w", encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot write {what} to {self.path}: {e.strerror} (choose a writable folder)")
        self.lines = 0

    def write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
        self.lines += 1

    def close(self, keep: bool = True) -> Optional[Path]:
        if self._f.closed:
            return None
        self._f.close()
        if keep and self.lines:
            os.replace(self.tmp, self.path)
            return self.path
        self.tmp.unlink(missing_ok=True)
        return None


class BackgroundWriter:
    """Encodes on its own thread (libx264 / PyAV release the GIL) so that frame N is encoded while
    frame N+1 is processed. ``write`` blocks only when ``depth`` frames are already waiting (the
    time it blocks is the "encode" stage of headless / bench). An encoder error is raised by the
    next ``write`` or by ``close``. ``close`` writes every queued frame, then finalizes the file."""

    def __init__(self, writer, depth: int = 2):
        import queue

        self.writer = writer
        self.path = writer.path
        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self.writer.write(*item)
                except BaseException as e:  # reported to the main thread
                    self._error = e

    def write(self, image: np.ndarray, timestamp: float) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((image, timestamp))

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def _join(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def close(self):
        self._join()
        if self._error is not None:
            self.writer.abort()
            raise self._error
        return self.writer.close()

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")
        self._join()
        self.writer.abort()


def _source_spec(options: RunOptions):
    if options.video and options.camera is not None:
        raise UsageError("give either --video FILE or --camera N, not both")
    if options.source is None:
        raise UsageError("no input: give --video FILE or --camera N")
    return options.source


def _stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95))} if len(a) else {"median": 0.0, "p95": 0.0}


def run(settings: Settings, options: RunOptions) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from app.io.capture import SourceError, open_source
    from app.io.writer import OutputError, VideoWriter
    from app.model3dmm import ContractError, DeviceError
    from app.pipeline import Pipeline

    source = writer = dump = events = sound = pipe = None
    outputs: list = []
    try:
        spec = _source_spec(options)
        source = open_source(spec, loop=options.loop)
        if options.events and settings.monitor is None:
            raise UsageError("--events needs driver monitoring (app.monitor is not installed, or --no-monitor was given)")
        # outputs first: a bad path fails in one line, before the models load (and log)
        if options.record:
            writer = BackgroundWriter(VideoWriter(options.record, source.fps or 25.0, tuple(source.size)))
        if options.dump:
            dump = JsonLines(options.dump, "the per-frame dump")
        if options.events:
            from app.monitor import EventLog

            try:
                events = EventLog(options.events)
            except OSError as e:
                raise UsageError(f"cannot write events to {options.events}: {one_line(e)}")
        if options.sound:
            from app.monitor import AlertSound

            sound = AlertSound(str(ALERT_WAV))
        pipe = Pipeline(settings)
    except (UsageError, SourceError, OutputError, ContractError, DeviceError, FileNotFoundError) as e:
        # nothing was processed: drop every output opened so far (each one's own discard call)
        if writer is not None:
            writer.abort()
        if dump is not None:
            dump.close(keep=False)
        if events is not None:
            events.discard()
        if source is not None:
            source.stop()
        if pipe is not None:
            pipe.close()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2

    log.info("input %s (%dx%d @ %.2f fps), model %s on %s", source.name, source.size[0], source.size[1],
             source.fps, pipe.model_name, pipe.provider)
    stage: dict[str, list[float]] = {}
    frames = with_face = 0
    rc = 0
    interrupted = False
    t_start = time.perf_counter()
    t_progress = t_start
    max_frames = options.max_frames
    it = iter(source)
    # Ctrl-C: finish the current frame (so the recording, the dump and the events agree), then stop
    # and finalize; a second Ctrl-C interrupts at once (outputs are still finalized).
    stop = {"requested": False}

    def on_sigint(signum, frame_):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True

    old_handler = None
    if threading.current_thread() is threading.main_thread():
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    try:
        while max_frames is None or frames < max_frames:
            if stop["requested"]:
                interrupted = True
                print("interrupted: finalizing outputs", file=sys.stderr)
                break
            t0 = time.perf_counter()
            frame = next(it, None)
            t1 = time.perf_counter()
            if frame is None:
                break
            obs, state, annotated = pipe.process(frame)
            t2 = time.perf_counter()
            if writer is not None:
                writer.write(annotated, frame.timestamp)
            t3 = time.perf_counter()
            if dump is not None:
                dump.write({"frame": frame.index, "t": round(float(frame.timestamp), 6),
                            "faces": [face_record(o) for o in obs]})
            new_events = pipe.last_events
            if events is not None:
                for ev in new_events:
                    events.write(ev)
            if sound is not None and any(ev.get("event") == "start" for ev in new_events):
                sound.play()
            st = dict(pipe.stage_ms, decode=(t1 - t0) * 1e3, encode=(t3 - t2) * 1e3, total=(t3 - t0) * 1e3)
            for k, v in st.items():
                stage.setdefault(k, []).append(v)
            frames += 1
            with_face += bool(obs)
            now = time.perf_counter()
            if not options.quiet and now - t_progress >= 1.0:
                print(f"frame {frames}: {frames / (now - t_start):.1f} fps, {len(obs)} face(s)", file=sys.stderr)
                t_progress = now
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: finalizing outputs", file=sys.stderr)
    except Exception as e:   # finalize what was written, then report
        print(f"error: processing stopped at frame {frames}: {one_line(e)}", file=sys.stderr)
        log.debug("processing error", exc_info=True)
        rc = 1
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
        source.stop()
        elapsed = time.perf_counter() - t_start
        summary = None
        mon = pipe.monitor
        if mon is not None and hasattr(mon, "summary"):
            try:
                summary = mon.summary()
            except Exception as e:
                log.warning("monitor summary failed: %s", one_line(e))
        for name, out in (("recording", writer), ("dump", dump)):
            if out is not None:
                try:
                    p = out.close()
                    if p is not None:
                        outputs.append(f"{name} {p}")
                except Exception as e:
                    print(f"error: could not finalize {name}: {one_line(e)}", file=sys.stderr)
                    rc = rc or 1
        if events is not None and frames == 0:
            events.discard()          # no frame, no events: leave no file (the error says why)
        elif events is not None:
            try:
                if isinstance(summary, dict):
                    events.write(summary if "event" in summary else {"event": "summary", **summary})
                events.close()
                outputs.append(f"events {options.events}")
            except Exception as e:
                print(f"error: could not finalize events: {one_line(e)}", file=sys.stderr)
                rc = rc or 1
        pipe.close()

    if source.error and not interrupted:
        print(f"warning: {source.error}", file=sys.stderr)
        rc = rc or 1
    fps = frames / elapsed if elapsed > 0 else 0.0
    print(f"done: {frames} frames in {elapsed:.1f} s ({fps:.1f} fps), a face in {with_face} "
          f"({100.0 * with_face / max(1, frames):.0f} %), model {pipe.model_name} on {pipe.provider}", file=sys.stderr)
    if frames:
        parts = [f"{k} {v['median']:.1f}/{v['p95']:.1f}" for k, v in ((k, _stats(x)) for k, x in stage.items())]
        print("stage ms median/p95: " + ", ".join(parts), file=sys.stderr)
    if isinstance(summary, dict):
        print("monitor: " + json.dumps({k: v for k, v in summary.items() if k not in ("event", "time")}, default=str),
              file=sys.stderr)
    for o in outputs:
        print(f"wrote {o}", file=sys.stderr)
    if frames == 0 and rc == 0:
        print("error: the input gave no frames", file=sys.stderr)
        rc = 2
    return rc

