"""One drive of a batch: a video file through ``Runner`` (a file ``Source``, a ``Pipeline``, and
``FrameTable``, the runner's ``Outputs`` plus the per-frame table and the alert frames) into its
folder ``OUT/<drive id>/``:

- ``frames.parquet``: one row per frame and face (``FRAME_SCHEMA``); a frame without a face is one
  row whose face columns are null, so the table covers every frame. The face's values are those
  of the JSON dump (``main.py --dump``), exactly: decimals with the dump's places (``PLACES*``);
  ``read_frames`` reads them as floats. Written in row groups as the drive runs (bounded memory
  for hour-long drives), zstd-compressed.
- ``events.jsonl``: the monitor's event log, written by the runner's ``EventLog`` (as ``--events``).
- ``alerts/``: the annotated frame at each alert start (``NNN_kind.jpg``) and a strip of the 4 s
  around it, one frame every 0.5 s (``NNN_kind_KK.jpg``).
- ``summary.json``: duration, frames, face rate, alerts by kind (counts and seconds), time with
  the head / the eyes off the road, PERCLOS max, blinks per minute, model, settings, app version
  and commit, and the processing time.
- ``recording.mp4`` with ``--record``.

Everything is written into ``OUT/.tmp-<drive id>-<random>/`` and that folder is renamed to
``OUT/<drive id>`` when the drive is complete: a drive's folder is complete or absent. A drive
that fails, is interrupted or dies leaves only its temp folder, which the batch removes.

``run_drive(job) -> dict`` is what both engines run, in a worker process or a Ray task; the dict
is the drive's row of drives.parquet (``status`` ok | failed | interrupted).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from app.core.errors import one_line
from app.core.types import FrameResult
from app.runner import DUMP_PLACES, DUMP_PLACES_BS, DUMP_PLACES_PX, Outputs, Runner, overlay_kind_for
from app.settings import Layers, RunOptions, Settings

log = logging.getLogger("app.batch")

FRAMES = "frames.parquet"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
RECORDING = "recording.mp4"
ALERTS_DIR = "alerts"
TMP_PREFIX = ".tmp-"
# rows buffered before a row group goes to frames.parquet (~ 2 min of one face at 30 fps)
ROW_GROUP = 4096
# the alert strip: one frame every SAMPLE_S over the AROUND_S before and after the alert start
SAMPLE_S = 0.5
AROUND_S = 2.0
THUMB_WIDTH = 480
STRIP_WIDTH = 320
# columns that hold measured time: they differ between two runs of the same drive
TIMING_COLUMNS = ("process_ms",)


@dataclass
class DriveJob:
    """Everything a worker needs for one drive (picklable: sent to processes and Ray tasks)."""
    path: str
    drive_id: str
    out: str                       # the batch folder (shared by every node for Ray)
    settings: Settings
    record: bool = False
    record_quality: str = "medium"
    record_scale: float = 1.0
    meta: dict = field(default_factory=dict)
    engine: str = "local"
    app_version: str = ""
    git_commit: str = ""


# Decimal places kept per column: the JSON dump's own (app.runner.face_record: landmarks and
# iris 0.01 px, angles, box and ratios 0.001, blendshapes 0.0001), so that frames.parquet holds
# exactly the dump's values. Stored as Parquet DECIMAL(9, places) on INT32 (the scale is in the
# type: duckdb, Spark, pandas read 123.45, not 12345); values rounded as the dump rounds them.
PLACES_PX = DUMP_PLACES_PX   # landmarks_*, iris_* (image pixels)
PLACES = DUMP_PLACES         # box, angles, eye / mouth openness, eye visibility
PLACES_BS = DUMP_PLACES_BS   # blendshapes
DECIMAL_PRECISION = 9  # INT32 storage: |value| < 10**(9 - places)
# the dump's zstd level: 15 is 6.3x smaller than the JSON vs 5.7x at 3 on the shared clips, at
# 0.08 ms of CPU per row (docs/benchmarks.md section 16)
ZSTD_LEVEL = 15
# the first pyarrow whose writer has store_decimal_as_integer (16.1 has not; 17.0 and 18.0 write
# and read these files, checked)
PYARROW_MIN = (17, 0)


def _dec(places: int):
    import pyarrow as pa

    return pa.decimal128(DECIMAL_PRECISION, places)


def _schema():
    import pyarrow as pa

    from app.facemesh import BLENDSHAPE_NAMES

    f32 = pa.float32()
    px, d3, d4 = _dec(PLACES_PX), _dec(PLACES), _dec(PLACES_BS)
    cols = [
        ("frame", pa.int32()), ("t", pa.float64()), ("n_faces", pa.int8()),
        # the face (null on a frame without one)
        ("face", pa.int8()), ("driver", pa.bool_()),
        ("box", pa.list_(d3, 4)), ("score", f32),
        ("yaw", d3), ("pitch", d3), ("roll", d3),
        # the 68 landmarks (iBUG 300-W order), image pixels, one list per axis: like values side
        # by side compress better than interleaved x, y, z
        ("landmarks_x", pa.list_(px, 68)), ("landmarks_y", pa.list_(px, 68)), ("landmarks_z", pa.list_(px, 68)),
        ("eye_open_left", d3), ("eye_open_right", d3), ("mouth_open", d3),
        # each eye itself seen (app.facemesh.eye_visibility): false = not visible (its eye_open and
        # the gaze are null then), null = not measured; the visibility score behind it
        ("eye_available_left", pa.bool_()), ("eye_available_right", pa.bool_()),
        ("eye_visibility_left", d3), ("eye_visibility_right", d3),
        # gaze (head + eyes), the eye-in-head mean of the measured eyes, and each eye's own
        ("gaze_yaw", d3), ("gaze_pitch", d3), ("gaze_eye_yaw", d3), ("gaze_eye_pitch", d3),
        ("gaze_eye_yaw_left", d3), ("gaze_eye_yaw_right", d3), ("gaze_eye_pitch_left", d3), ("gaze_eye_pitch_right", d3),
        # mediapipe points 468-477 (the subject's right iris: centre, 4 on its rim; then the left)
        ("iris_x", pa.list_(px, 10)), ("iris_y", pa.list_(px, 10)), ("iris_z", pa.list_(px, 10)),
        *[(f"bs_{n}", d4) for n in BLENDSHAPE_NAMES],
        ("model", pa.string()),
        # the monitor on this frame (the same on every face row of a frame; null: monitor off)
        ("calibrated", pa.bool_()),
        ("yaw_offset", f32), ("pitch_offset", f32), ("gaze_yaw_offset", f32), ("gaze_pitch_offset", f32),
        ("eye_open_rel", f32), ("perclos", f32), ("blink_rate_per_min", f32),
        ("away_s", f32), ("away_by", pa.string()), ("closed_s", f32),
        ("alerts", pa.list_(pa.string())),             # active alert kinds, most severe first
        ("alert_levels", pa.list_(pa.string())),       # their levels (warning | critical)
        ("unavailable", pa.list_(pa.string())),        # what the monitor cannot see (eyes, driver, camera)
        ("emergency", pa.bool_()),                     # the unresponsive driver's emergency is on
        # the pipeline's time on this frame (ms, the stages without the overlapped eyes stage)
        ("process_ms", f32),
    ]
    return pa.schema(cols)


FRAME_SCHEMA = None   # built on first use (pyarrow is imported by the batch only)


def frame_schema():
    global FRAME_SCHEMA
    if FRAME_SCHEMA is None:
        FRAME_SCHEMA = _schema()
    return FRAME_SCHEMA


def _f(v) -> Optional[float]:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _q(v, places: int) -> Optional[int]:
    """``v`` as the JSON dump writes it (Python's ``round(v, places)``) in units of 10**-places;
    None for a missing or non-finite value (the dump's null) or one too large for the column."""
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None
    k = round(round(v, places) * 10 ** places)
    return k if abs(k) < 10 ** (DECIMAL_PRECISION - places) else None


def _decimal_array(values, places: int, mask=None):
    """Integers in units of 10**-places (a list with None, or numpy with ``mask``) as DECIMAL(9, places)."""
    import pyarrow as pa

    a = pa.array(values, pa.int32(), mask=mask)
    # the integers are the unscaled decimals: cast to scale 0 (exact), then read with the scale
    return a.cast(pa.decimal128(DECIMAL_PRECISION + 1, 0)).view(_dec(places))


def _point_lists(rows: list, n: int, places: int) -> list:
    """Per-row (n, 3) float arrays (None: no face) -> the x, y and z columns, each a
    fixed_size_list<decimal, n>, rounded as the dump rounds (numpy's round on float64)."""
    import pyarrow as pa

    valid = np.array([r is not None for r in rows], bool)
    pts = np.zeros((len(rows), n, 3), np.float64)
    if valid.any():
        pts[valid] = np.stack([np.asarray(r, np.float64)[:n, :3] for r in rows if r is not None])
    k = np.rint(pts * 10 ** places)       # np.round(pts, places) is rint(pts * 10**places) / 10**places
    bad = ~np.isfinite(k) | (np.abs(k) >= 10 ** (DECIMAL_PRECISION - places))
    k = np.where(bad, 0, k).astype(np.int32)
    out = []
    for axis in range(3):
        vals = _decimal_array(k[:, :, axis].reshape(-1), places, mask=bad[:, :, axis].reshape(-1))
        out.append(pa.FixedSizeListArray.from_arrays(vals, n, mask=pa.array(~valid)))
    return out


def _decimal_floats(a):
    """A DECIMAL array (or a fixed-size list of them) as float64: each value the double nearest
    to it (the unscaled integer divided by 10**scale; Arrow's own cast multiplies by 10**-scale,
    one ulp off at times), so 123.45 reads as the float Python parses from "123.45"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_fixed_size_list(a.type):
        n = a.type.list_size
        vals = a.values.slice(a.offset * n, len(a) * n)
        return pa.FixedSizeListArray.from_arrays(_decimal_floats(vals), n, mask=a.is_null() if a.null_count else None)
    ints = a.view(pa.decimal128(a.type.precision, 0)).cast(pa.int64())
    return pc.divide(ints.cast(pa.float64()), float(10 ** a.type.scale))


def read_frames(path, columns: Optional[list] = None):
    """frames.parquet as a pyarrow Table whose decimal columns (and lists of decimals) are float64:
    the float view of the exact values, the floats the JSON dump holds (``.to_pandas()`` for a
    DataFrame of floats)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=columns)
    for i, f in enumerate(t.schema):
        ty = f.type.value_type if pa.types.is_fixed_size_list(f.type) else f.type
        if pa.types.is_decimal(ty):
            col = pa.chunked_array([_decimal_floats(c) for c in t.column(i).chunks],
                                   pa.list_(pa.float64(), f.type.list_size) if ty is not f.type else pa.float64())
            t = t.set_column(i, f.name, col)
    return t


class FrameTable(Outputs):
    """The runner's outputs (events, recording) plus ``frames.parquet`` and the alert frames."""

    # frames.parquet has a column per blendshape score
    reads_blendshapes = True

    def __init__(self, options: RunOptions, *, folder: Path, fps: float, size: tuple[int, int],
                 monitor_on: bool, overlay: str, say):
        import pyarrow as pa
        import pyarrow.parquet as pq

        super().__init__(options, fps=fps, size=size, live=False, monitor_on=monitor_on, overlay=overlay, say=say)
        self.folder = folder
        self.schema = frame_schema()
        # the landmark and iris points of each face row, split into their x/y/z columns at a flush
        self._points = {"landmarks": 68, "iris": 10}
        self._rows: dict[str, list] = {n: [] for n in self.schema.names
                                       if not n.startswith(("landmarks_", "iris_"))}
        self._rows.update({k: [] for k in self._points})
        self._places = {f.name: f.type.scale for f in self.schema if pa.types.is_decimal(f.type)}
        # numbers (floats, decimals and their lists) byte-stream-split before zstd, no dictionary:
        # docs/benchmarks.md section 16 (every layout and encoding measured)
        nums = [f.name for f in self.schema if pa.types.is_floating(f.type) or pa.types.is_decimal(f.type)]
        nums += [f"{f.name}.list.element" for f in self.schema if pa.types.is_fixed_size_list(f.type)]
        self._writer = pq.ParquetWriter(str(folder / FRAMES), self.schema, compression="zstd",
                                        compression_level=ZSTD_LEVEL, store_decimal_as_integer=True,
                                        use_byte_stream_split=nums,
                                        use_dictionary=[n for n in self.schema.names if n not in nums])
        from app.facemesh import BLENDSHAPE_NAMES

        self._bs_names = BLENDSHAPE_NAMES
        self.rows = 0
        self.t_first: Optional[float] = None
        self.t_last: Optional[float] = None
        self.frames = 0
        self.with_face = 0
        # alert seconds by kind: each frame's interval counted for the alerts active on it
        self.alert_s: dict[str, float] = {}
        self._prev_alerts: tuple = ()
        # alert frames: results sampled every SAMPLE_S over the last AROUND_S; alerts collecting theirs
        self._ring: deque = deque()
        self._last_sample: Optional[float] = None
        self._pending: list[dict] = []
        self.alert_frames: list[dict] = []

    # ------------------------------------------------------------------ per frame
    def write(self, result: FrameResult, annotated=None, layers: Optional[Layers] = None) -> None:
        super().write(result, annotated, layers)
        self._add_rows(result)
        self._collect_alert_frames(result, layers)
        if len(self._rows["frame"]) >= ROW_GROUP:
            self._flush()

    def _add_rows(self, res: FrameResult) -> None:
        fr, st = res.frame, res.state
        t = float(fr.timestamp)
        if self.t_first is None:
            self.t_first = t
        if self.t_last is not None:
            for k in self._prev_alerts:
                self.alert_s[k] = self.alert_s.get(k, 0.0) + (t - self.t_last)
        self.t_last = t
        self.frames += 1
        self.with_face += bool(res.observations)
        sig = st.signals if st is not None else {}
        cnt = st.counters if st is not None else {}
        alerts = [a.kind for a in st.alerts] if st is not None else None
        self._prev_alerts = tuple(alerts or ())
        frame_cols = {
            "frame": fr.index, "t": t, "n_faces": len(res.observations),
            "calibrated": None if st is None else bool(st.calibrated),
            "yaw_offset": _f(sig.get("yaw_offset")), "pitch_offset": _f(sig.get("pitch_offset")),
            "gaze_yaw_offset": _f(sig.get("gaze_yaw_offset")), "gaze_pitch_offset": _f(sig.get("gaze_pitch_offset")),
            "eye_open_rel": _f(sig.get("eye_open_rel")), "perclos": _f(sig.get("perclos")),
            "blink_rate_per_min": _f(cnt.get("blink_rate_per_min")),
            "away_s": _f(sig.get("away_s")), "away_by": sig.get("away_by"), "closed_s": _f(sig.get("closed_s")),
            "alerts": alerts, "alert_levels": [a.level for a in st.alerts] if st is not None else None,
            "unavailable": sorted(st.unavailable) if st is not None else None,
            "emergency": None if st is None else st.emergency is not None,
            "process_ms": float(sum(v for k, v in res.stage_ms.items() if k != "mesh/eyes")),
        }
        faces = res.observations or [None]
        for i, o in enumerate(faces):
            row = dict(frame_cols)
            if o is None:
                row.update({n: None for n in self._rows if n not in frame_cols})
            else:
                g = o.gaze
                bs = o.blendshapes or {}
                eyes = np.full((2, 2), np.nan) if g is None else np.asarray(g.eyes, np.float64)
                row.update({
                    "face": i, "driver": o is res.driver,
                    "box": [_q(v, PLACES) for v in o.box[:4]], "score": _f(o.score),
                    "yaw": _q(o.yaw, PLACES), "pitch": _q(o.pitch, PLACES), "roll": _q(o.roll, PLACES),
                    "landmarks": np.asarray(o.landmarks),
                    "eye_open_left": _q(o.eye_open[0], PLACES), "eye_open_right": _q(o.eye_open[1], PLACES),
                    "mouth_open": _q(o.mouth_open, PLACES),
                    "eye_available_left": o.eye_available[0], "eye_available_right": o.eye_available[1],
                    "eye_visibility_left": _q(o.eye_visibility[0], PLACES),
                    "eye_visibility_right": _q(o.eye_visibility[1], PLACES),
                    "gaze_yaw": None if g is None else _q(g.yaw, PLACES),
                    "gaze_pitch": None if g is None else _q(g.pitch, PLACES),
                    "gaze_eye_yaw": None if g is None else _q(g.eye_yaw, PLACES),
                    "gaze_eye_pitch": None if g is None else _q(g.eye_pitch, PLACES),
                    "gaze_eye_yaw_left": _q(eyes[0, 0], PLACES), "gaze_eye_yaw_right": _q(eyes[1, 0], PLACES),
                    "gaze_eye_pitch_left": _q(eyes[0, 1], PLACES), "gaze_eye_pitch_right": _q(eyes[1, 1], PLACES),
                    "iris": (None if o.mesh_points is None or len(o.mesh_points) < 478
                             else np.asarray(o.mesh_points)[468:478]),
                    **{f"bs_{n}": _q(bs.get(n), PLACES_BS) if o.blendshapes is not None else None
                       for n in self._bs_names},
                    "model": o.model,
                })
            for n, v in row.items():
                self._rows[n].append(v)
            self.rows += 1

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._rows["frame"]:
            return
        cols = {}
        for f in self.schema:
            n = f.name
            if n in self._places:
                cols[n] = _decimal_array(self._rows[n], self._places[n])
            elif n == "box":
                vals = [v for r in self._rows[n] for v in (r if r is not None else [None] * 4)]
                cols[n] = pa.FixedSizeListArray.from_arrays(
                    _decimal_array(vals, PLACES), 4, mask=pa.array([r is None for r in self._rows[n]]))
            elif n in self._rows:
                cols[n] = pa.array(self._rows[n], f.type)
        for k, size in self._points.items():
            for axis, arr in zip("xyz", _point_lists(self._rows[k], size, PLACES_PX)):
                cols[f"{k}_{axis}"] = arr
        self._writer.write_table(pa.Table.from_pydict(cols, schema=self.schema))
        for v in self._rows.values():
            v.clear()

    # ------------------------------------------------------------------ alert frames
    def _collect_alert_frames(self, res: FrameResult, layers: Optional[Layers]) -> None:
        t = float(res.frame.timestamp)
        take = self._last_sample is None or t - self._last_sample >= SAMPLE_S - 1e-6
        if take:
            self._last_sample = t
            self._ring.append((t, res))
            while self._ring and self._ring[0][0] < t - AROUND_S - 1e-6:
                self._ring.popleft()
            for p in self._pending:
                if t > p["t"]:
                    p["after"].append(res)
        for ev in res.events:
            if ev.get("event") == "start" and "escalated_from" not in ev:
                self._pending.append({"n": len(self.alert_frames) + len(self._pending), "kind": ev.get("kind"),
                                      "level": ev.get("level"), "t": t, "t_drive": float(ev.get("t", 0.0)),
                                      "frame": res.frame.index, "start": res,
                                      "before": [r for tt, r in self._ring if tt < t], "after": [],
                                      "layers": layers})
        done = [p for p in self._pending if t >= p["t"] + AROUND_S]
        for p in done:
            self._pending.remove(p)
            self._save_alert(p)

    def _save_alert(self, p: dict) -> None:
        import cv2

        from app.render import draw_result

        d = self.folder / ALERTS_DIR
        d.mkdir(exist_ok=True)

        def save(res: FrameResult, name: str, width: int) -> str:
            img = draw_result(res, p["layers"])
            h, w = img.shape[:2]
            img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
            if not cv2.imwrite(str(d / name), img, [cv2.IMWRITE_JPEG_QUALITY, 85]):
                raise OSError(f"cannot write {d / name}")
            return f"{ALERTS_DIR}/{name}"

        base = f"{p['n']:03d}_{p['kind']}"
        strip = []
        t0 = p["t"]
        for k, r in enumerate(p["before"] + [p["start"]] + p["after"]):
            strip.append({"file": save(r, f"{base}_{k:02d}.jpg", STRIP_WIDTH),
                          "dt": round(float(r.frame.timestamp) - t0, 2), "frame": r.frame.index})
        self.alert_frames.append({"n": p["n"], "kind": p["kind"], "level": p["level"], "t": round(p["t_drive"], 3),
                                  "frame": p["frame"], "thumb": save(p["start"], f"{base}.jpg", THUMB_WIDTH),
                                  "strip": strip})

    # ------------------------------------------------------------------ end
    def close(self, summary: Optional[dict] = None) -> list[str]:
        for p in list(self._pending):       # the drive ended within 2 s of an alert start
            self._pending.remove(p)
            self._save_alert(p)
        self._ring.clear()
        self._flush()
        self._writer.close()
        self.alert_frames.sort(key=lambda a: a["n"])
        return super().close(summary) + [f"frames {self.folder / FRAMES}"]

    def discard(self) -> None:
        self._writer.close()
        super().discard()


# ---------------------------------------------------------------------- summary
def _settings_dict(s: Settings) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(s), default=str))


def make_summary(job: DriveJob, table: FrameTable, rep, monitor: Optional[dict], source, model: str,
                 provider: str, wall_s: float) -> dict:
    fps = float(source.fps or 0.0)
    dur = ((table.t_last - table.t_first) + (1.0 / fps if fps > 0 else 0.0)) if table.t_first is not None else 0.0
    mon = monitor or {}
    # count: alerts started (a warning escalated to critical counts once: one alert-frames entry
    # per alert); critical: the monitor's critical starts; duration_s: seconds with it active
    per_kind: dict[str, dict] = {}
    for a in table.alert_frames:
        per_kind.setdefault(a["kind"], {"count": 0, "critical": 0, "duration_s": 0.0})["count"] += 1
    for k, v in (mon.get("alerts") or {}).items():
        per_kind.setdefault(k, {"count": 0, "critical": 0, "duration_s": 0.0})["critical"] = int(v.get("critical", 0))
    for k, s in table.alert_s.items():
        per_kind.setdefault(k, {"count": 0, "critical": 0, "duration_s": 0.0})["duration_s"] = round(s, 3)
    by = mon.get("time_distracted_by_s") or {}
    head = by.get("head", 0.0) + by.get("both", 0.0) if by else None
    eyes = by.get("gaze", 0.0) + by.get("both", 0.0) if by else None
    return {
        "drive_id": job.drive_id, "path": job.path, "meta": job.meta,
        "duration_s": round(dur, 3), "frames": table.frames, "frames_with_face": table.with_face,
        "face_rate": round(table.with_face / table.frames, 4) if table.frames else None,
        "fps": round(fps, 3), "width": source.size[0], "height": source.size[1],
        "rows": table.rows,
        "alerts": per_kind,
        "alerts_total": sum(v["count"] for v in per_kind.values()),
        "alert_s": round(sum(table.alert_s.values()), 3),
        "head_off_road_s": None if head is None else round(head, 3),
        "eyes_off_road_s": None if eyes is None else round(eyes, 3),
        "time_distracted_s": mon.get("time_distracted_s"),
        "perclos_max": mon.get("perclos_max"),
        "blinks_per_min": mon.get("blink_rate_per_min"),
        "blinks": mon.get("blinks"), "yawns": mon.get("yawns"), "nods": mon.get("nods"),
        "longest_closure_s": mon.get("longest_closure_s"),
        "alert_frames": table.alert_frames,
        "model": model, "provider": provider,
        "settings": _settings_dict(job.settings),
        "app_version": job.app_version, "git_commit": job.git_commit,
        "processing": {"engine": job.engine, "host": socket.gethostname(), "pid": os.getpid(),
                       "wall_s": round(wall_s, 3), "run_s": round(rep.elapsed, 3), "cpu_s": round(rep.cpu_s, 3),
                       "fps": round(table.frames / rep.elapsed, 2) if rep.elapsed > 0 else None,
                       "x_realtime": round(dur / wall_s, 3) if wall_s > 0 else None},
        "monitor": mon,
    }


def summary_row(s: dict) -> dict:
    """The drives.parquet fields of a summary (ok and skipped rows)."""
    p = s.get("processing") or {}
    row = {k: s.get(k) for k in ("duration_s", "frames", "face_rate", "alerts_total", "alert_s",
                                 "head_off_road_s", "eyes_off_road_s", "perclos_max", "blinks_per_min", "model")}
    from app.monitor.core import KINDS

    for k in KINDS:
        a = (s.get("alerts") or {}).get(k) or {}
        row[f"alerts_{k}"] = int(a.get("count", 0))
        row[f"{k}_s"] = float(a.get("duration_s", 0.0))
    row.update({"wall_s": p.get("wall_s"), "cpu_s": p.get("cpu_s"), "x_realtime": p.get("x_realtime"),
                "engine": p.get("engine"), "host": p.get("host")})
    return row


# ---------------------------------------------------------------------- one drive
# this process's pipeline and the settings it was made for (one at a time: a batch has one)
_KEPT: dict = {}


def kept_pipeline(settings: Settings):
    """The process's Pipeline for ``settings``, loaded on first use and kept for the next drives."""
    from app.pipeline import Pipeline

    key = repr(settings)
    if key not in _KEPT:
        for old in _KEPT.values():
            old.close()
        _KEPT.clear()
        _KEPT[key] = Pipeline(settings)
    return _KEPT[key]


def _failed(job: DriveJob, error: str, t0: float) -> dict:
    return {"drive_id": job.drive_id, "path": job.path, "status": "failed", "error": error,
            "wall_s": round(time.perf_counter() - t0, 3), "engine": job.engine, "host": socket.gethostname()}


def _publish(tmp: Path, final: Path) -> bool:
    """Rename the complete temp folder onto its final name; False when another run of the same
    drive got there first (its folder is kept, this one removed: every drive once)."""
    if final.exists():
        return False
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():
            return False
        raise
    return True


def run_drive(job: DriveJob, stop_requested: Optional[Callable[[], bool]] = None) -> dict:
    """One drive through ``Runner`` into ``OUT/<drive id>/``; its drives.parquet row.
    ``stop_requested()`` true before the first frame: the drive is not run ("interrupted")."""
    from app.io.capture import SourceError, open_source
    from app.io.files import OutputError, atomic_write
    from app.model3dmm import ContractError, DeviceError

    t0 = time.perf_counter()
    out = Path(job.out)
    final = out / job.drive_id
    tmp = out / f"{TMP_PREFIX}{job.drive_id}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    said: list[str] = []
    source = table = None
    try:
        try:
            source = open_source(job.path)
            # the event log is the monitor's (none with --no-monitor)
            options = RunOptions(events=str(tmp / EVENTS) if job.settings.monitor is not None else None, record=str(tmp / RECORDING) if job.record else None,
                                 record_quality=job.record_quality, record_scale=job.record_scale)
            table = FrameTable(options, folder=tmp, fps=source.fps, size=source.size,
                               monitor_on=job.settings.monitor is not None,
                               overlay=overlay_kind_for(job.settings), say=said.append)
            pipe = kept_pipeline(job.settings)
        except (SourceError, OutputError, ContractError, DeviceError, FileNotFoundError) as e:
            if table is not None:
                table.discard()
            if source is not None:
                source.stop()
            return _failed(job, one_line(e), t0)
        model, provider = pipe.model_name, pipe.provider
        if stop_requested is not None and stop_requested():
            table.discard()
            source.stop()
            return {"drive_id": job.drive_id, "path": job.path, "status": "interrupted", "error": "interrupted"}
        # the worker's pipeline, models kept loaded: a fresh stream for this drive, left open at
        # its end for the next one
        pipe.reset()
        rep = Runner(source, pipe, table, quiet=True, say=said.append, close_pipeline=False).run()
        if rep.interrupted:
            return {"drive_id": job.drive_id, "path": job.path, "status": "interrupted", "error": "interrupted"}
        if rep.rc or rep.frames == 0:
            errs = [m[len("error: "):] for m in said if m.startswith("error: ")]
            why = rep.error or (errs[0] if errs else None) or source.error or "the input gave no frames"
            return _failed(job, one_line(why), t0)
        if table.with_face == 0:
            return _failed(job, f"no face in any of the {table.frames} frames of {job.path}", t0)
        summary = make_summary(job, table, rep, rep.summary, source, model, provider, time.perf_counter() - t0)
        with atomic_write(tmp / SUMMARY) as f:
            json.dump(summary, f, indent=1, default=str)
        if not _publish(tmp, final):
            log.info("drive %s was completed by another run; keeping that one", job.drive_id)
        return {"drive_id": job.drive_id, "path": job.path, "status": "ok", "error": None, **summary_row(summary)}
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_summary(folder: Path) -> Optional[dict]:
    """The summary of a complete drive folder, None when there is none."""
    p = folder / SUMMARY
    if not p.is_file():
        return None
    with open(p, encoding="utf-8") as f:
        return json.load(f)
