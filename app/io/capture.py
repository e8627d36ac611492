"""Frame sources: cameras, video files, still images and image playlists -> ``Frame``.

``open_source(spec)`` validates the input at once (raising ``SourceError`` with one line that says
what, which file and what to do) and returns a ``Source``. ``Source.start()`` launches a capture
thread that reads frames into a bounded queue; iterate the source to get ``Frame`` objects until
the end.

- Live sources (cameras) always hand over the newest frame: ``read`` returns the latest frame
  captured and drops the older ones still queued, and a full queue drops its oldest frame (both
  counted in ``frames_dropped``), so processing never lags behind the camera.
  Timestamps are ``time.monotonic()`` seconds since ``start()``; ``Frame.captured`` is the
  ``time.perf_counter()`` when a frame was queued (latency measured by the window).
- A camera that stops delivering (unplugged, driver error) is reopened with back-off
  (``RETRY_DELAYS_S``, then every ``RETRY_DELAYS_S[-1]`` seconds, until ``stop()``) and resumes when
  the device is back; ``pop_events()`` hands over a ``SourceEvent`` "lost" and, later, "back".
- Files (and stills / playlists) deliver every frame in order; the reader blocks while the queue
  is full. With ``realtime=True`` they are paced to their timestamps instead and, like a camera,
  hand over the newest frame (a file played "as a camera", e.g. in the GUI); ``set_paused`` stops
  a file where it is (its pacing resumes from there). Timestamps come from the container pts (PyAV), relative to the first frame, else
  ``index / fps``.
- A file that breaks off midway stops cleanly: the frames decoded so far are delivered and
  ``Source.error`` says what happened (decoder error, or the video ending well before the duration
  its header declares). The container's frame count is never trusted.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import cv2
import numpy as np

from app.core.errors import one_line
from app.core.types import Frame, SourceEvent

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
DEFAULT_STILL_FPS = 25.0  # frame rate of still-image clips and playlists when none is given
# A file whose frames end this much before its declared video duration is reported as broken off.
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_TOLERANCE_FRAMES = 5
# Waits before each attempt to reopen a camera that stopped delivering; the last one repeats.
# The first retry comes quickly (a driver hiccup), then the wait grows so that a camera that is
# gone costs ~nothing, while one plugged back in is picked up within 2 s.
RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0)

_END = object()  # queue sentinel: the capture thread has finished


class SourceError(Exception):
    """A source that cannot be opened or read; the message is one line meant for the user."""


# --------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _quiet_opencv():
    """Silence OpenCV's own log (camera probing prints WARN/ERROR lines for missing devices).
    OpenCV 5 has the log level in cv2.utils.logging only, OpenCV 4 also as cv2.setLogLevel."""
    lg = cv2.utils.logging if hasattr(cv2.utils, "logging") else cv2
    old = lg.getLogLevel()
    lg.setLogLevel(0)  # 0 = LOG_LEVEL_SILENT
    try:
        yield
    finally:
        lg.setLogLevel(old)


def list_cameras(max_index: int = 10) -> list[int]:
    """Indices in [0, max_index) that open and deliver a frame (OpenCV warnings suppressed)."""
    found = []
    with _quiet_opencv():
        for i in range(max_index):
            cap = cv2.VideoCapture(i)
            try:
                if cap.isOpened():
                    ok, _ = cap.read()
                    if ok:
                        found.append(i)
            finally:
                cap.release()
    return found


def _read_image(path: Path) -> np.ndarray:
    if not path.exists():
        raise SourceError(f"image not found: {path} (check the path)")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise SourceError(f"cannot read image: {path} (not a supported image file, or damaged)")
    return img


# --------------------------------------------------------------------------- readers
# A reader is a generator of (image_bgr, timestamp or None). It runs in the capture thread.
# It may set ``state["error"]`` before returning to report that it broke off.

class _CameraReader:
    def __init__(self, index: int, size: Optional[tuple[int, int]] = None, fps: Optional[float] = None):
        self.index = index
        self.asked_size, self.asked_fps = size, fps
        cap, first = self._open()
        if first is None:
            others = [i for i in list_cameras(10) if i != index]
            hint = (f"cameras that open: {', '.join(map(str, others))}" if others
                    else "no cameras found")
            raise SourceError(f"camera {index} does not open ({hint}); pass a video or image path instead")
        self.cap = cap
        self.first = first
        h, w = first.shape[:2]
        self.size = (w, h)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps_reported = bool(fps and fps > 0 and math.isfinite(fps))
        self.fps = float(fps) if self.fps_reported else 30.0  # nominal when the driver says nothing
        self.name = f"camera {index}"
        if size and tuple(size) != self.size:
            log.info("%s: asked for %dx%d, the camera delivers %dx%d", self.name, size[0], size[1], *self.size)
        if not self.fps_reported:
            log.info("%s: the driver reports no frame rate; assuming %.0f fps", self.name, self.fps)

    def _open(self):
        """(capture, first frame) or (None, None) when the device does not open or deliver."""
        with _quiet_opencv():
            cap = cv2.VideoCapture(self.index)
            first = None
            if cap.isOpened():
                if self.asked_size:   # a request: the driver picks the nearest mode it supports
                    cap.set(cv2.CAP_PROP_FRAME_WIDTH, int(self.asked_size[0]))
                    cap.set(cv2.CAP_PROP_FRAME_HEIGHT, int(self.asked_size[1]))
                if self.asked_fps:
                    cap.set(cv2.CAP_PROP_FPS, float(self.asked_fps))
                ok, img = cap.read()
                first = img if ok and img is not None else None
        if first is None:
            cap.release()
            return None, None
        return cap, first

    def _same_size(self, img: np.ndarray) -> np.ndarray:
        # a camera back in another mode: keep the source's size (recordings, overlays rely on it)
        h, w = img.shape[:2]
        if (w, h) != self.size:
            return cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        return img

    def frames(self, state: dict, stop: threading.Event) -> Iterator:
        t0 = state["t0"]
        try:
            if self.first is not None:
                yield self.first, time.monotonic() - t0
                self.first = None
            while not stop.is_set():
                ok, img = self.cap.read() if self.cap is not None else (False, None)
                if ok and img is not None:
                    yield self._same_size(img), time.monotonic() - t0
                    continue
                t_lost = time.monotonic() - t0
                state["event"](SourceEvent("lost", t_lost, f"{self.name}: stopped delivering frames "
                                                           f"(unplugged or in use?); retrying"))
                self.close()
                img = self._reconnect(stop)
                if img is None:
                    return        # stopped while waiting
                t_back = time.monotonic() - t0
                state["event"](SourceEvent("back", t_back, f"{self.name}: delivering frames again after "
                                                           f"{t_back - t_lost:.1f} s", lost_s=t_back - t_lost))
                yield self._same_size(img), t_back
        finally:
            self.close()

    def _reconnect(self, stop: threading.Event) -> Optional[np.ndarray]:
        attempt = 0
        while not stop.wait(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]):
            attempt += 1
            cap, first = self._open()
            if first is not None:
                self.cap = cap
                log.info("%s: reopened after %d attempt(s)", self.name, attempt)
                return first
        return None

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class _VideoFileReader:
    """PyAV decoder; timestamps from pts relative to the first frame."""

    def __init__(self, path: Path, loop: bool = False):
        import av

        self.path = path
        self.loop = loop
        if not path.exists():
            raise SourceError(f"video file not found: {path} (check the path)")
        if not os.access(path, os.R_OK):
            raise SourceError(f"video file not readable: {path} (check its permissions)")
        self.container = None
        self._rotation_logged = False
        self._open()
        try:
            self.first = next(self._decode_iter)
        except StopIteration:
            self.close()
            raise SourceError(f"video file decodes to no frames: {path} (empty or damaged file)")
        except Exception as e:  # av.error.* while decoding the first frame
            self.close()
            raise SourceError(f"cannot decode video file: {path} ({one_line(e)})")
        img, _ = self.first
        h, w = img.shape[:2]
        self.size = (w, h)
        self.name = path.name

    def _open(self):
        import av

        try:
            self.container = av.open(str(self.path))
        except Exception as e:
            raise SourceError(f"cannot open video file: {self.path} ({one_line(e)}; not a video or damaged)")
        if not self.container.streams.video:
            self.close()
            raise SourceError(f"no video stream in: {self.path} (damaged or truncated file, or audio only)")
        s = self.container.streams.video[0]
        # One decoding thread up to 1080p: FFmpeg's frame threads cost CPU in hand-offs (720p H.264:
        # 3.39 ms of CPU per frame with them, 2.84 ms with one thread, same pixels; docs/benchmarks.md
        # section 15) and one thread decodes 720p at over 300 fps, far ahead of the pipeline. Larger
        # frames keep the threads, so that decoding never becomes the bottleneck.
        cc = s.codec_context
        s.thread_type = "AUTO" if (cc.width or 0) * (cc.height or 0) > 1920 * 1080 else "NONE"
        # one converter to BGR for the whole file: frame.to_ndarray(format=...) builds and frees a
        # swscale context (and its slice threads) per frame (0.6 ms of CPU per 720p frame, measured)
        self._to_bgr = av.video.reformatter.VideoReformatter()
        self.stream = s
        rate = s.average_rate or s.guessed_rate or s.base_rate
        self.fps = float(rate) if rate else DEFAULT_STILL_FPS
        self.declared_duration = None
        if s.duration is not None and s.time_base is not None:
            self.declared_duration = float(s.duration * s.time_base)
        elif self.container.duration:
            self.declared_duration = self.container.duration / 1e6
        self.start_time = None
        self._decode_iter = self._decode()

    def _decode(self):
        for f in self.container.decode(self.stream):
            t = f.time
            if t is not None:
                if self.start_time is None:
                    self.start_time = t
                t = t - self.start_time
            img = self._to_bgr.reformat(f, format="bgr24").to_ndarray()
            rot = int(round(getattr(f, "rotation", 0) or 0)) % 360
            if rot:
                # phone clips: the display matrix rotates the stored frame counterclockwise by
                # `rot` degrees (ffmpeg's autorotate does the same); np.rot90 turns counterclockwise
                if not self._rotation_logged:
                    log.info("%s: applying the file's display rotation (%d deg counterclockwise)",
                             self.path.name, rot)
                    self._rotation_logged = True
                img = np.ascontiguousarray(np.rot90(img, k=rot // 90))
            yield img, t

    def frames(self, state: dict, stop: threading.Event) -> Iterator:
        offset = 0.0   # timestamp offset when looping
        total = 0      # frame index over all passes (keeps increasing when looping)
        try:
            while True:
                n = 0
                last_t = None
                it = self._decode_iter
                if self.first is not None:
                    img, t = self.first
                    self.first = None
                    n, last_t = 1, t
                    total += 1
                    yield img, (None if t is None else t + offset), total - 1
                while not stop.is_set():
                    try:
                        img, t = next(it)
                    except StopIteration:
                        break
                    except Exception as e:
                        state["error"] = (f"{self.name}: decoding stopped after {n} frames "
                                          f"({one_line(e)}); the file is damaged or truncated")
                        return
                    n += 1
                    total += 1
                    last_t = t
                    yield img, (None if t is None else t + offset), total - 1
                if stop.is_set():
                    return
                end = (last_t if last_t is not None else (n - 1) / self.fps) + 1.0 / self.fps
                dd = self.declared_duration
                tol = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRAMES / self.fps)
                if dd is not None and end < dd - tol:
                    state["error"] = (f"{self.name}: video ends at {end:.2f} s of the {dd:.2f} s its header "
                                      f"declares ({n} frames); the file is truncated or damaged")
                    return
                if not self.loop or n == 0:
                    return
                offset += end
                self.close()
                self._open()
        finally:
            self.close()

    def close(self):
        if self.container is not None:
            try:
                self.container.close()
            except Exception:  # pragma: no cover
                pass
            self.container = None


class _StillsReader:
    """Still images as a clip: segments of (image, seconds) at ``fps`` (timestamps index / fps)."""

    def __init__(self, segments: Sequence[tuple[np.ndarray, Optional[float]]], fps: float, name: str,
                 loop: bool = False):
        sizes = {img.shape[:2] for img, _ in segments}
        if len(sizes) != 1:
            # playlist images of different sizes: resize to the first one
            h, w = segments[0][0].shape[:2]
            segments = [(img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA), s)
                        for img, s in segments]
        self.segments = segments
        self.fps = float(fps)
        h, w = segments[0][0].shape[:2]
        self.size = (w, h)
        self.name = name
        self.loop = loop

    def frames(self, state: dict, stop: threading.Event) -> Iterator:
        i = 0
        while True:
            for img, seconds in self.segments:
                n = 1 if seconds is None else max(1, int(round(seconds * self.fps)))
                for _ in range(n):
                    if stop.is_set():
                        return
                    # a fresh copy each frame: consumers may draw on the image in place
                    yield img.copy(), i / self.fps, i
                    i += 1
            if not self.loop:
                return

    def close(self):
        pass


# --------------------------------------------------------------------------- Source
class Source:
    """A started-on-demand frame source with a capture thread and a bounded queue."""

    def __init__(self, reader, *, is_live: bool, queue_size: int = 4, realtime: bool = False):
        self._reader = reader
        self.is_live = bool(is_live)
        # realtime: a file / still clip is paced to its timestamps and, like a camera, hands over
        # the newest frame (dropping the oldest) when the consumer is slower than the clip
        self.realtime = bool(realtime) and not self.is_live
        self.fps: float = float(reader.fps)
        self.size: tuple[int, int] = tuple(reader.size)
        self.name: str = reader.name
        self.frames_read = 0
        self.frames_dropped = 0
        self.error: Optional[str] = None
        self._events: list[SourceEvent] = []   # lost / back, for pop_events()
        self.lost = False                       # a live source between "lost" and "back"
        self._q: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
        self._stop = threading.Event()
        self._resume = threading.Event()  # cleared = paused (a file stops reading where it is)
        self._resume.set()
        self._thread: Optional[threading.Thread] = None
        self._finished = False
        self._end_seen = False           # the end marker was taken while draining stale frames
        self._lock = threading.Lock()
        self._drop_lock = threading.Lock()

    def _event(self, ev: SourceEvent) -> None:
        (log.warning if ev.kind == "lost" else log.info)(ev.message)
        with self._drop_lock:
            self._events.append(ev)
            self.lost = ev.kind == "lost"

    def pop_events(self) -> list[SourceEvent]:
        """The source's lost / back events since the last call (oldest first)."""
        with self._drop_lock:
            out, self._events = self._events, []
        return out

    def _count_drop(self) -> None:
        with self._drop_lock:        # both threads drop frames
            self.frames_dropped += 1

    # ---- lifecycle
    def start(self) -> "Source":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"capture:{self.name}", daemon=True)
                self._thread.start()
        return self

    def set_paused(self, paused: bool) -> None:
        """A paused file / still clip stops reading where it is and, played in real time, resumes
        its pacing from there; a camera goes on capturing (``read`` hands over the newest frame)."""
        if paused:
            self._resume.clear()
        else:
            self._resume.set()

    def _wait_while_paused(self, state: dict) -> bool:
        """Block the capture thread of a paused file; False when stopped meanwhile."""
        t_pause = time.monotonic()
        while not self._resume.wait(0.1):
            if self._stop.is_set():
                return False
        state["t0"] += time.monotonic() - t_pause   # the pause does not count as played time
        return not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()
        # unblock a file reader waiting on a full queue
        with contextlib.suppress(queue.Empty):
            while True:
                self._q.get_nowait()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        if self._thread is None:
            self._reader.close()
        self._finished = True

    def __enter__(self) -> "Source":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- capture thread
    def _put(self, item) -> bool:
        """Queue an item; False when stopping."""
        if (self.is_live or self.realtime) and item is not _END:
            while True:
                try:
                    self._q.put_nowait(item)
                    return True
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._q.get_nowait()
                        self._count_drop()
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        state = {"t0": time.monotonic(), "error": None, "event": self._event}
        try:
            for item in self._reader.frames(state, self._stop):
                if self._stop.is_set():
                    break
                if self.is_live:
                    img, ts = item
                    idx = self.frames_read
                else:
                    img, ts, idx = item
                    if ts is None:
                        ts = idx / self.fps
                    if not self._resume.is_set() and not self._wait_while_paused(state):
                        break
                    if self.realtime:
                        wait = state["t0"] + ts - time.monotonic()
                        if wait > 0 and self._stop.wait(wait):
                            break
                self.frames_read += 1
                if not self._put(Frame(image=img, timestamp=float(ts), index=int(idx),
                                       captured=time.perf_counter())):
                    break
        except Exception as e:  # unexpected reader failure: report, never hang the consumer
            state["error"] = f"{self.name}: capture failed ({one_line(e)})"
        finally:
            self._reader.close()
            if state["error"]:
                self.error = state["error"]
                log.warning(self.error)
            if self.is_live or self.realtime:
                # the end marker must not be dropped, and must not evict a frame in a full queue
                while not self._stop.is_set():
                    try:
                        self._q.put(_END, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            else:
                self._put(_END)

    # ---- consumer side
    def read(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """Next frame; None at the end of the source (or after ``timeout`` seconds with none)."""
        if self._finished:
            return None
        self.start()
        if self._end_seen:
            self._finished = True
            return None
        try:
            item = self._q.get(timeout=timeout)
        except queue.Empty:
            return None
        if self.is_live or self.realtime:
            # hand over the newest frame: the ones queued behind it are stale (dropped)
            while item is not _END:
                try:
                    newer = self._q.get_nowait()
                except queue.Empty:
                    break
                if newer is _END:
                    self._end_seen = True
                    break
                self._count_drop()
                item = newer
        if item is _END:
            self._finished = True
            return None
        return item

    def __iter__(self) -> Iterator[Frame]:
        self.start()
        while True:
            f = self.read()
            if f is None:
                return
            yield f

    @property
    def finished(self) -> bool:
        return self._finished

    def __repr__(self) -> str:
        return (f"Source({self.name!r}, {self.size[0]}x{self.size[1]} @ {self.fps:.2f} fps, "
                f"live={self.is_live})")


SourceSpec = Union[int, str, os.PathLike, Sequence[tuple[Union[str, os.PathLike], float]]]


def open_source(spec: SourceSpec, *, loop: bool = False, queue_size: int = 4,
                repeat_seconds: Optional[float] = None, fps: Optional[float] = None,
                realtime: bool = False, camera_size: Optional[tuple[int, int]] = None) -> Source:
    """Open a camera index, a video file, an image, or a playlist of (image_path, seconds).

    ``fps`` sets the frame rate of still-image clips and playlists (default 25), or requests a
    camera frame rate. ``repeat_seconds`` turns one image into a still clip of that length.
    ``loop`` restarts files / playlists at the end (timestamps keep increasing). ``realtime`` plays
    a file / still clip at its own pace and drops frames like a camera when the consumer is slower.
    ``camera_size`` (w, h) requests a camera resolution. Raises ``SourceError`` with one clear line
    on bad input.
    """
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise SourceError("empty playlist: give at least one (image_path, seconds) segment")
        segs = []
        for seg in spec:
            try:
                p, secs = seg
                secs = float(secs)
            except (TypeError, ValueError):
                raise SourceError(f"bad playlist segment {seg!r}: expected (image_path, seconds)")
            if not (secs > 0):
                raise SourceError(f"bad playlist segment {seg!r}: seconds must be > 0")
            segs.append((_read_image(Path(p)), secs))
        f = float(fps or DEFAULT_STILL_FPS)
        name = "playlist(" + ", ".join(Path(p).name for p, _ in spec) + ")"
        return Source(_StillsReader(segs, f, name, loop=loop), is_live=False, queue_size=queue_size,
                      realtime=realtime)

    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return Source(_CameraReader(int(spec), camera_size, fps), is_live=True, queue_size=queue_size)

    path = Path(os.fspath(spec)).expanduser()
    if path.suffix.lower() in IMAGE_EXTS:
        img = _read_image(path)
        f = float(fps or DEFAULT_STILL_FPS)
        return Source(_StillsReader([(img, repeat_seconds)], f, path.name, loop=loop),
                      is_live=False, queue_size=queue_size, realtime=realtime)
    if path.is_dir():
        raise SourceError(f"{path} is a folder: give a video file, an image, or a camera index")
    return Source(_VideoFileReader(path, loop=loop), is_live=False, queue_size=queue_size, realtime=realtime)
