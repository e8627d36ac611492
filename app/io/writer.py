"""Recording writer: H.264 in fragmented MP4 through PyAV (libx264), crash-safe.

- Fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``): the header goes first
  and every keyframe starts a fragment that is complete in the file once the next one begins. A
  keyframe is forced at least every ``KEYFRAME_S`` seconds of the timestamps, so after ``kill -9``,
  a power cut or a full disk the file plays up to its last 2 s (the fragment being written is
  lost or torn). Browsers (Media Source Extensions need exactly this layout), VLC, mpv, ffmpeg
  and QuickTime play it; ``close()`` writes the last fragment and the fragment index (seeking).
- The file is written under its final name and created by the first frame: a recording with no
  frame leaves no file. ``close()`` is idempotent and registered with ``atexit``.
- A failed write (full disk above all) raises ``OutputError``, one line that says what and
  where; the writer then stops and ``close()`` keeps what was written.
- Frame timing follows the source timestamps (pts in a 1/90000 time base, forced to increase);
  without timestamps frames are spaced 1/fps. Odd frame sizes are padded to even (yuv420p).
- Without libx264 in PyAV's FFmpeg, ffmpeg's own MPEG-4 Part 2 encoder ("mp4v") writes the same
  fragmented file at a fixed bit rate, announced with a warning.
- ``BackgroundWriter`` encodes on its own thread; a live source never waits for it (a frame that
  finds its queue full is left out of the recording and counted), a file waits (no frame lost).
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Union

import cv2
import numpy as np

from app.io.files import OutputError, probe_writable, write_failed
from app.settings import OVERLAY_KINDS, RECORD_QUALITIES

log = logging.getLogger(__name__)

__all__ = ["VideoWriter", "BackgroundWriter", "OutputError", "QUALITIES", "DEFAULT_QUALITY"]

TIME_BASE = Fraction(1, 90000)  # the MPEG 90 kHz clock
# Longest time between keyframes (= fragments): what a crash can lose at most. [the 2 s]
KEYFRAME_S = 2.0
MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
# --record-quality (app.settings.RECORD_QUALITIES: measured there)
QUALITIES = RECORD_QUALITIES
DEFAULT_QUALITY = "medium"
MP4V_BITRATE = 8_000_000        # the fallback encoder's fixed rate (MPEG-4 Part 2 needs ~1.5x H.264)


def _pyav_h264_available() -> bool:
    import av

    return "libx264" in av.codecs_available


class VideoWriter:
    """``VideoWriter(path, fps, size)``; ``.write(image_bgr, timestamp=None)``; ``.close()``.
    ``quality`` x ``overlay`` ("surface" or "lines": app.render.overlay_kind) pick the encoder
    settings (app.settings.RECORD_QUALITIES); ``preset`` / ``crf`` / ``tune`` override them.
    ``scale`` (0, 1]: the video is that fraction of the frames' size (--record-scale)."""

    def __init__(self, path, fps: float, size: tuple[int, int], *, codec: str = "h264",
                 quality: str = DEFAULT_QUALITY, overlay: str = "surface",
                 preset: Optional[str] = None, crf: Optional[int] = None,
                 tune: Optional[str] = None, keyframe_s: float = KEYFRAME_S, scale: float = 1.0):
        self.path = Path(os.fspath(path)).expanduser()
        self.fps = float(fps) if fps and fps > 0 else 0.0
        if not self.fps:
            raise OutputError(f"cannot record {self.path}: frame rate must be > 0 (got {fps!r})")
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            raise OutputError(f"cannot record {self.path}: frame size must be positive (got {size!r})")
        if quality not in QUALITIES:
            raise OutputError(f"cannot record {self.path}: unknown quality {quality!r} "
                              f"(use {', '.join(QUALITIES)})")
        if overlay not in OVERLAY_KINDS:
            raise ValueError(f"overlay must be one of {', '.join(OVERLAY_KINDS)}, got {overlay!r}")
        codec = codec.lower()
        if codec not in ("h264", "mp4v"):
            raise OutputError(f"cannot record {self.path}: unknown codec {codec!r} (use h264 or mp4v)")
        if not 0.0 < scale <= 1.0:
            raise OutputError(f"cannot record {self.path}: --record-scale must be in (0, 1], got {scale:g}")
        self.size = (w, h)                          # size of the frames given to write()
        # the recorded size: frames may come at it (app.runner draws the overlay at that size, on
        # the frame made smaller by app.render.downscale) or at ``size``, which this writer then
        # area-averages itself (OpenCV's INTER_AREA: 0.27 ms per 720p frame at 0.5, 3.7-7.7 ms at
        # fractional factors); then padded to the even size actually encoded
        self.scaled = (w, h) if scale == 1.0 else (max(1, round(w * scale)), max(1, round(h * scale)))
        sw, sh = self.scaled
        self.out_size = (sw + (sw & 1), sh + (sh & 1))
        self.frames_written = 0
        self.packets = 0          # packets muxed: frames_written - packets = frames inside the encoder
        self.closed = False
        self.error: Optional[OutputError] = None
        self.keyframe_ticks = int(round(keyframe_s / TIME_BASE))
        self._last_pts: Optional[int] = None
        self._last_key: Optional[int] = None
        self._t0: Optional[float] = None
        self._container = None
        self._frame = None        # the encoder's input frame and the I420 buffer it is filled from (_yuv_frame)
        self._i420: Optional[np.ndarray] = None
        self._planes: list = []
        probe_writable(self.path, f"cannot record to {self.path}", "out.mp4")
        q = QUALITIES[quality][overlay]   # the settings measured for what the frames show
        self.options = {"preset": str(preset or q["preset"]), "crf": str(int(crf if crf is not None else q["crf"])),
                        # the encoder's own keyframe interval as a backstop to the forced ones
                        "g": str(max(1, int(round(keyframe_s * self.fps)))),
                        # no B-frames: a fragmented file has no edit list, so B-frame reordering
                        # would shift every timestamp by their delay; it also lowers the delay
                        # between a frame and its bytes in the file
                        "bf": "0"}
        tune = tune if tune is not None else q.get("tune")
        if tune:
            self.options["tune"] = str(tune)
        if codec == "h264" and _pyav_h264_available():
            self.codec = "libx264"
        else:
            if codec == "h264":
                log.warning("libx264 is not in PyAV's FFmpeg: recording %s with MPEG-4 Part 2 (mp4v) at "
                            "%d Mbit/s, about 1.5x the size of H.264 at the same quality", self.path,
                            MP4V_BITRATE // 1_000_000)
            self.codec = "mpeg4"
        self.backend = f"pyav-{self.codec}"
        atexit.register(self.close)

    # ------------------------------------------------------------------ opening (first frame)
    def _open(self) -> None:
        import av

        # flush_packets: each fragment goes to the file when the muxer writes it, not when FFmpeg's
        # 32 KiB I/O buffer happens to fill (a crash would otherwise tear the last complete one)
        self._container = av.open(str(self.path), mode="w", format="mp4",
                                  options={"movflags": MOVFLAGS, "flush_packets": "1"})
        rate = Fraction(self.fps).limit_denominator(1001)
        if self.codec == "libx264":
            s = self._container.add_stream("libx264", rate=rate, options=self.options)
        else:
            s = self._container.add_stream("mpeg4", rate=rate, options={"g": self.options["g"], "bf": "0"})
            s.bit_rate = MP4V_BITRATE
        s.width, s.height = self.out_size
        s.pix_fmt = "yuv420p"
        s.time_base = TIME_BASE
        # the encoder must count in a fine clock, or close timestamps collapse onto one 1/fps tick
        # (MPEG-4 Part 2 allows time base denominators up to 65535 only: milliseconds)
        s.codec_context.time_base = TIME_BASE if self.codec == "libx264" else Fraction(1, 1000)
        self._stream = s

    # ------------------------------------------------------------------ writing
    def _prepare(self, image: np.ndarray) -> np.ndarray:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"VideoWriter.write expects an HxWx3 uint8 BGR image, got {image.shape} {image.dtype}")
        h, w = image.shape[:2]
        if (w, h) == self.size and self.scaled != self.size:
            image = cv2.resize(image, self.scaled, interpolation=cv2.INTER_AREA)
            w, h = self.scaled
        elif (w, h) != self.scaled:        # the frames' size, or already the scaled one (drawn at it)
            raise ValueError(f"frame size {w}x{h} differs from the recording size {self.size[0]}x{self.size[1]}"
                             + (f" (or {self.scaled[0]}x{self.scaled[1]} scaled)" if self.scaled != self.size else ""))
        ow, oh = self.out_size
        if (ow, oh) != (w, h):
            image = cv2.copyMakeBorder(image, 0, oh - h, 0, ow - w, cv2.BORDER_REPLICATE)
        return image

    def _next_pts(self, timestamp: Optional[float]) -> int:
        tick = 1.0 / TIME_BASE
        if timestamp is None or not np.isfinite(timestamp):
            if self._last_pts is None:
                pts = 0
            else:
                pts = self._last_pts + max(1, int(round(float(tick) / self.fps)))
        else:
            if self._t0 is None:
                self._t0 = float(timestamp)
            pts = int(round((float(timestamp) - self._t0) * float(tick)))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1   # monotonic-increasing guard (repeated / backwards timestamps)
        self._last_pts = pts
        return pts

    def _yuv_frame(self, img: np.ndarray):
        """The encoder's input frame of a BGR image: OpenCV's BGR -> I420 conversion (faster than
        swscale's bgr24 path here), then its three planes. For libx264 one frame and one I420
        buffer serve every write: x264 copies the picture into its own frames during ``encode``
        (libavcodec gives it the frame and unreferences it before encode returns), so nothing
        holds them afterwards. A new frame per write (``VideoFrame.from_ndarray``) cost 0.9-1.2 ms
        of CPU per 720x1280 frame, a new frame filled by the same copy 0.58 ms (fresh buffers), the
        copy into the kept frame 0.10 ms (docs/benchmarks.md section 20). The same bytes reach the encoder
        (tests/test_writer.py compares the files). MPEG-4 Part 2 may keep a reference to its input
        frames, so it gets a new frame each time."""
        import av

        if self.codec != "libx264":
            return av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        h, w = img.shape[:2]
        if self._frame is None:
            self._i420 = np.empty((h * 3 // 2, w), np.uint8)
            self._frame = av.VideoFrame(w, h, "yuv420p")
            flat = self._i420.reshape(-1)
            cw, ch = w // 2, h // 2
            parts = (flat[:h * w].reshape(h, w), flat[h * w:h * w + ch * cw].reshape(ch, cw),
                     flat[h * w + ch * cw:].reshape(ch, cw))
            # (source rows in the I420 buffer, destination rows in the frame's plane: a plane's
            # lines may be padded past its width)
            self._planes = [(src, np.frombuffer(pl, np.uint8).reshape(-1, pl.line_size)[:src.shape[0], :src.shape[1]])
                            for src, pl in zip(parts, self._frame.planes)]
        cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420, dst=self._i420)
        for src, dst in self._planes:
            dst[...] = src
        return self._frame

    def _kept(self) -> str:
        return (f"the file keeps the frames up to its last complete fragment (at most {KEYFRAME_S:g} s "
                f"before frame {self.frames_written})")

    def write(self, image_bgr: np.ndarray, timestamp: Optional[float] = None) -> None:
        if self.closed:
            raise RuntimeError(f"write() on a closed VideoWriter ({self.path})")
        if self.error is not None:
            raise self.error
        import av

        img = self._prepare(np.asarray(image_bgr))
        pts = self._next_pts(timestamp)
        frame = self._yuv_frame(img)
        frame.pts = pts
        frame.time_base = TIME_BASE
        # a keyframe (and so a new fragment) at least every keyframe_s of the timestamps, whatever
        # the frame rate the source really delivers; the encoder chooses for the others
        if self._last_key is None or pts - self._last_key >= self.keyframe_ticks - TIME_BASE.denominator // 1000:
            frame.pict_type = av.video.frame.PictureType.I
            self._last_key = pts
        else:
            frame.pict_type = av.video.frame.PictureType.NONE
        try:
            if self._container is None:
                self._open()
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
                self.packets += 1
        except av.error.FFmpegError as e:   # disk full, I/O error: one line, the caller closes
            self.error = write_failed("the recording", self.path, e, self._kept())
            raise self.error from None
        except OSError as e:
            self.error = write_failed("the recording", self.path, e, self._kept())
            raise self.error from None
        self.frames_written += 1

    # ------------------------------------------------------------------ closing
    def close(self) -> Optional[Path]:
        """Write the last fragment and the index; idempotent. Returns the path written (None when
        no frame was written: then there is no file). After a write error the file is kept as it
        is (it plays up to its last complete fragment) and no error is raised again."""
        if self.closed:
            return self.path if self.frames_written else None
        self.closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        if self._container is None:
            if self.error is None:
                log.info("recording %s: no frames were written, no file created", self.path)
            return self.path if self.frames_written else None
        import av

        try:
            if self.error is None:
                try:
                    for packet in self._stream.encode(None):
                        self._container.mux(packet)
                finally:
                    self._container.close()
            else:
                with contextlib.suppress(av.error.FFmpegError, OSError):
                    self._container.close()   # what fits is written; the error was reported
        except (av.error.FFmpegError, OSError) as e:
            self.error = write_failed("the recording", self.path, e, self._kept())
            raise self.error from None
        return self.path if self.frames_written else None

    def abort(self) -> None:
        """Stop without keeping the recording (the file is removed)."""
        had_file = self._container is not None
        if not self.closed:
            self.closed = True
            with contextlib.suppress(Exception):
                atexit.unregister(self.close)
            if self._container is not None:
                with contextlib.suppress(Exception):
                    self._container.close()
        if had_file:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoWriter({str(self.path)!r}, {self.fps} fps, {self.size}, backend={self.backend})"


class BackgroundWriter:
    """Encodes on its own thread (libx264 / PyAV release the GIL) so that frame N is encoded while
    frame N+1 is processed. ``write`` takes the image, or a function that draws it: then the
    drawing happens on this thread too (the overlay of a run that only records: app.runner), and
    ``render_ms`` is the time the last one took. With ``drop=False`` (files) ``write`` blocks while
    ``depth`` frames are waiting (that wait is the "encode" stage of headless / bench); with
    ``drop=True`` (live sources) it never blocks: a frame that finds the queue full is not
    recorded (nor drawn) and counted in ``frames_dropped``. An encoder or drawing error is raised
    by the next ``write`` (and kept in ``error``); ``close`` writes every queued frame, then
    finalizes the file (after an error: keeps it)."""

    def __init__(self, writer: VideoWriter, depth: int = 2, *, drop: bool = False):
        self.writer = writer
        self.path = writer.path
        self.drop = bool(drop)
        self.frames_dropped = 0
        self.render_ms = 0.0
        self._q: "queue.Queue" = queue.Queue(maxsize=depth)
        self.error: Optional[BaseException] = None
        self._reported = False
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            if self.error is None:
                image, timestamp = item
                try:
                    if callable(image):
                        t = time.perf_counter()
                        image = image()
                        self.render_ms = (time.perf_counter() - t) * 1e3
                    self.writer.write(image, timestamp)
                except BaseException as e:  # reported to the caller's thread by write / close
                    self.error = e

    def write(self, image: Union[np.ndarray, Callable[[], np.ndarray]], timestamp: float) -> None:
        if self.error is not None and not self._reported:
            self._reported = True
            raise self.error
        if self.error is not None:
            return
        if self.drop:
            try:
                self._q.put_nowait((image, timestamp))
            except queue.Full:
                self.frames_dropped += 1
        else:
            self._q.put((image, timestamp))

    @property
    def frames_written(self) -> int:
        return self.writer.frames_written

    def _join(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()

    def close(self) -> Optional[Path]:
        """Finalize; raises the encoder's error if no ``write`` reported it yet."""
        self._join()
        path = self.writer.close()
        if self.error is not None and not self._reported:
            self._reported = True
            raise self.error
        return path

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        self._reported = True
        self._join()
        self.writer.abort()
