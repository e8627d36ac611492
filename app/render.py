"""Overlays, one module for the headless writer and the GUI: ``annotate(image, observations, ...)``.

Layers (each a switch in ``Layers``): face box; 68 landmarks with the iBUG contour lines; the dense
mesh; head axes; yaw/pitch/roll text; fps; which model / provider runs; and the driver-monitoring
HUD (alert banner, gauges, "calibrating").

Dense mesh cost (``python -m app.render --bench``, this 2-core CPU, 1280x720 frame, BFM mean face
350 px tall, 53215 vertices / 105840 triangles): one cv2.polylines call over all 159055 unique
edges 57 ms (too slow); every 8th edge 5.2 ms (and ragged); the chosen default ``mesh_style="wire"``,
a wireframe of the mesh decimated by 3D vertex clustering (40 cells across the face: 8942 edges
between ~3000 representative vertices), alpha-blended in the mesh's bounding box: 2.7 ms;
``"points"`` (every vertex splatted as an alpha-blended dot) 1.9 ms. The edge list is computed once
per triangle topology (47 ms, cached by shape + sampled content) from the first vertices seen; meshes
with <= 20000 unique edges (mediapipe's 468-point mesh) draw every edge.

Head axes: ``FaceObservation.rotation`` is the 3DMM R (rows from P2sRt; model x right-of-image,
y up, z towards the camera). Model axis k appears in the image along (R[0, k], -R[1, k]) (image y
points down) — checked against the official 3DDFA-V2 landmarks in tests/test_render.py. x red,
y green, z blue, drawn from the nose tip (landmark 30), length 0.5 x the box size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from app.core.types import FaceObservation, MonitorState

# colours (BGR)
C_BOX = (255, 200, 0)
C_LM_PT = (0, 255, 0)
C_LM_LINE = (0, 200, 255)
C_MESH = (255, 255, 255)
C_AX = ((0, 0, 255), (0, 255, 0), (255, 0, 0))   # x red, y green, z blue
C_TEXT = (255, 255, 255)
C_WARNING = (0, 191, 255)   # amber
C_CRITICAL = (0, 0, 255)    # red
C_CALIB = (200, 160, 60)

MESH_ALPHA = 0.55
WIRE_CELLS = 40              # decimation grid: cells across the face's larger extent
MAX_FULL_EDGES = 20000       # draw every edge below this count

# iBUG 300-W 68-point groups: (first, last inclusive, closed)
IBUG_GROUPS = [(0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
               (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True)]

ALERT_TITLES = {
    "looking_around": "LOOKING AROUND", "time_sharing": "EYES OFF ROAD (TIME SHARING)",
    "eyes_closed": "EYES CLOSED", "drowsy": "DROWSY (PERCLOS)", "yawning": "YAWNING",
    "nodding": "NODDING", "no_driver": "DRIVER NOT VISIBLE",
}

# gauges: (where: "signals" | "counters" of the MonitorState, key, label, lo, hi, threshold keys
# (in signals), fmt, rule). rule = when the bar turns red, matching the monitor's rule:
# "abs" |v| > thr (yaw: either side, marks at +-thr), "above" v > thr, "below" v < thr, None never.
# Pitch shows ``pitch_down`` (degrees below neutral, positive = head down) with one mark at
# +threshold: only looking down counts as looking away (app/monitor/core.py), looking up does not.
GAUGES = [
    ("signals", "yaw_offset", "yaw", -90.0, 90.0, ("yaw_threshold",), "{:+.0f}", "abs"),
    ("signals", "pitch_down", "down", -60.0, 60.0, ("pitch_threshold",), "{:+.0f}", "above"),
    # gaze offset from the neutral gaze (eyes off road: app.core.gaze, same tests as the head's)
    ("signals", "gaze_yaw_offset", "gaze", -90.0, 90.0, ("gaze_yaw_threshold",), "{:+.0f}", "abs"),
    ("signals", "gaze_down", "g.down", -60.0, 60.0, ("gaze_pitch_threshold",), "{:+.0f}", "above"),
    ("signals", "eye_open_rel", "eyes", 0.0, 1.5, ("eye_closed_threshold", "eye_threshold"), "{:.2f}", "below"),
    ("signals", "eye_open", "eyes", 0.0, 0.5, ("eye_threshold",), "{:.2f}", "below"),
    ("signals", "perclos", "PERCLOS", 0.0, 1.0, ("perclos_threshold",), "{:.0%}", "above"),
    ("signals", "mouth_open", "mouth", 0.0, 1.0, ("mouth_threshold",), "{:.2f}", "above"),
    # blinks per minute over --blink-rate-window (NaN = "--" for the first 10 s); no threshold
    ("counters", "blink_rate_per_min", "blinks", 0.0, 40.0, (), "{:.0f}/min", None),
]
C_GAUGE_OK = (80, 200, 80)


@dataclass
class Layers:
    box: bool = True
    landmarks: bool = True
    mesh: bool = True
    axes: bool = True
    text: bool = True       # yaw / pitch / roll per face
    fps: bool = True
    model: bool = True
    monitor: bool = True
    mesh_style: str = "wire"   # "wire" (decimated wireframe) | "points" (every vertex)

    NAMES = ("box", "landmarks", "mesh", "axes", "text", "fps", "model", "monitor")

    @classmethod
    def from_spec(cls, spec: str) -> "Layers":
        """CLI form: "all", "none", a comma list ("box,landmarks"), or changes to the defaults
        ("-mesh,+points"; "points"/"wire" pick the mesh style). ValueError names a bad item."""
        spec = (spec or "").strip().lower()
        items = [x.strip() for x in spec.split(",") if x.strip()]
        if items == ["all"]:
            return cls()
        if items == ["none"]:
            return cls(**{n: False for n in cls.NAMES})
        relative = all(x[0] in "+-" for x in items if x not in ("points", "wire"))
        lay = cls() if relative else cls(**{n: False for n in cls.NAMES})
        for x in items:
            if x in ("points", "wire", "+points", "+wire"):
                lay.mesh_style = x.lstrip("+")
                continue
            on = not x.startswith("-")
            name = x.lstrip("+-")
            if name not in cls.NAMES:
                raise ValueError(f"unknown overlay layer {name!r} (choose from {', '.join(cls.NAMES)}, all, none)")
            setattr(lay, name, on)
        return lay


# ----------------------------------------------------------------------------- helpers
def _finite(a) -> bool:
    return a is not None and bool(np.all(np.isfinite(a)))


def _ui_scale(img: np.ndarray) -> float:
    h, w = img.shape[:2]
    return max(0.5, min(3.0, max(h, w) / 1280.0))


def _put_text(img, text, org, scale, color=C_TEXT, thickness=1):
    """Text with a dark outline, readable on any background."""
    org = (int(org[0]), int(org[1]))
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def _clip_int(p: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(p, -1e5, 1e5)).astype(np.int32)


def _fmt_angle(v: float) -> str:
    return "--" if not math.isfinite(v) else f"{v:+.1f}"


# ----------------------------------------------------------------------------- mesh edges
_EDGE_CACHE: dict = {}


def _unique_edges(tri: np.ndarray) -> np.ndarray:
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = e.astype(np.int64, copy=False)
    e.sort(axis=1)
    e = e[e[:, 0] != e[:, 1]]
    if len(e) == 0:
        return e.reshape(0, 2)
    n = int(e.max()) + 1
    k = np.unique(e[:, 0] * n + e[:, 1])       # 1-D unique: much faster than unique(axis=0)
    return np.stack([k // n, k % n], axis=1)


def decimated_edges(tri: np.ndarray, vertices: np.ndarray, cells: int = WIRE_CELLS) -> np.ndarray:
    """Edges (E, 2) of a coarse wireframe: vertices clustered on a 3D grid of ``cells`` across the
    mesh's larger x/y extent, one representative vertex per cluster, an edge wherever a triangle
    spans two clusters. Indices refer to the original vertices."""
    v = np.nan_to_num(np.asarray(vertices, dtype=np.float64)[:, :3])
    vmin = v.min(0)
    ext = v.max(0) - vmin
    cell = max(float(max(ext[0], ext[1])) / cells, 1e-9)
    q = np.floor((v - vmin) / cell).astype(np.int64)
    key = q[:, 0] + q[:, 1] * 4096 + q[:, 2] * 4096 * 4096
    _, first, lab = np.unique(key, return_index=True, return_inverse=True)
    e = _unique_edges(lab.reshape(-1)[tri])
    return first[e].astype(np.int32)


def mesh_edges(tri: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Edge list to draw for this triangle array (cached): all edges of small meshes, a decimated
    wireframe of large ones."""
    tri = np.asarray(tri)
    # keyed by content (shape + 64 sampled rows), not identity: a per-frame copy of the same
    # topology must not recompute the edge list
    key = (tri.shape, hash(tri[:: max(1, len(tri) // 64)].astype(np.int64).tobytes()))
    e = _EDGE_CACHE.get(key)
    if e is None:
        t = tri.astype(np.int64, copy=False)
        e = _unique_edges(t)
        if len(e) > MAX_FULL_EDGES:
            e = decimated_edges(t, vertices)
        e = e.astype(np.int32)
        if len(_EDGE_CACHE) > 16:
            _EDGE_CACHE.clear()
        _EDGE_CACHE[key] = e
    return e


_MP_EDGES: Optional[np.ndarray] = None


def mediapipe_edges() -> Optional[np.ndarray]:
    """mediapipe's 468-point tessellation as (E, 2) edges; None when mediapipe is not importable."""
    global _MP_EDGES
    if _MP_EDGES is None:
        try:
            from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION
        except Exception:
            _MP_EDGES = np.zeros((0, 2), np.int32)
        else:
            _MP_EDGES = np.array(sorted(FACEMESH_TESSELATION), dtype=np.int32)
    return _MP_EDGES if len(_MP_EDGES) else None


# ----------------------------------------------------------------------------- per-face layers
def draw_mesh(img: np.ndarray, vertices: np.ndarray, triangles: Optional[np.ndarray],
              style: str = "wire", color=C_MESH, alpha: float = MESH_ALPHA,
              edges: Optional[np.ndarray] = None) -> None:
    """Draw a mesh in place, alpha-blended inside the mesh's bounding box only."""
    v = np.asarray(vertices)
    if v.ndim != 2 or v.shape[0] == 0:
        return
    h, w = img.shape[:2]
    wire = not (style == "points" or (triangles is None and edges is None))
    if wire:
        if edges is None:
            edges = mesh_edges(triangles, v)
        seg = v[:, :2][edges]                      # (E, 2, 2) float: only the drawn vertices
        if not np.isfinite(seg.sum()):
            seg = seg[np.isfinite(seg).all(axis=(1, 2))]
        pts = seg.reshape(-1, 2)
    else:
        pts = v[:, :2]
        if not np.isfinite(pts.sum()):
            pts = pts[np.isfinite(pts).all(1)]
    if len(pts) == 0:
        return
    # per-column reductions: ~7x faster than min(axis=0) on a strided (V, 2) view
    x0, x1 = math.floor(pts[:, 0].min()), math.ceil(pts[:, 0].max()) + 2
    y0, y1 = math.floor(pts[:, 1].min()), math.ceil(pts[:, 1].max()) + 2
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    if not wire:
        px = pts[:, 0].astype(np.int32) - x0   # truncation == floor inside the roi (x >= x0 >= 0)
        py = pts[:, 1].astype(np.int32) - y0
        inside = (px >= 0) & (px < x1 - x0) & (py >= 0) & (py < y1 - y0)
        px, py = px[inside], py[inside]
        vals = roi[py, px].astype(np.float32)
        roi[py, px] = (vals * (1 - alpha) + np.asarray(color, np.float32) * alpha).astype(np.uint8)
        return
    segs = _clip_int(seg - (x0, y0))
    layer = roi.copy()
    cv2.polylines(layer, segs, False, color, 1, cv2.LINE_8)
    cv2.addWeighted(layer, alpha, roi, 1 - alpha, 0, dst=roi)


def draw_landmarks(img: np.ndarray, lm: np.ndarray, s: float) -> None:
    lm = np.asarray(lm)
    if lm.ndim != 2 or lm.shape[0] == 0:
        return
    xy = lm[:, :2]
    ok = np.isfinite(xy).all(1)
    if len(lm) == 68:
        lines = []
        for a, b, closed in IBUG_GROUPS:
            seg = xy[a:b + 1]
            if ok[a:b + 1].all():
                seg = _clip_int(seg)
                lines.append(np.vstack([seg, seg[:1]]) if closed else seg)
        if lines:
            cv2.polylines(img, lines, False, C_LM_LINE, 1, cv2.LINE_AA)
    r = max(1, int(round(1.5 * s)))
    for x, y in _clip_int(xy[ok]):
        cv2.circle(img, (int(x), int(y)), r, C_LM_PT, -1, cv2.LINE_AA)


def _box_size(obs: FaceObservation) -> float:
    b = np.asarray(obs.box, dtype=float)
    if _finite(b):
        return max(float(b[2] - b[0]), float(b[3] - b[1]), 1.0)
    lm = np.asarray(obs.landmarks, dtype=float)[:, :2]
    lm = lm[np.isfinite(lm).all(1)]
    return float(np.ptp(lm, axis=0).max()) if len(lm) else 100.0


def axes_origin(obs: FaceObservation) -> Optional[np.ndarray]:
    """Nose tip (landmark 30) when known, else the translation, else the box centre."""
    lm = np.asarray(obs.landmarks) if obs.landmarks is not None else None
    if lm is not None and lm.ndim == 2 and len(lm) == 68 and _finite(lm[30, :2]):
        return lm[30, :2].astype(float)
    if obs.translation is not None and _finite(np.asarray(obs.translation)[:2]):
        return np.asarray(obs.translation, dtype=float)[:2]
    if _finite(obs.box):
        return obs.center
    return None


def axes_endpoints(R: np.ndarray, origin: np.ndarray, length: float) -> np.ndarray:
    """Image endpoints (3, 2) of the model's x, y, z axes: axis k along (R[0,k], -R[1,k])."""
    R = np.asarray(R, dtype=float).reshape(3, 3)
    d = np.stack([R[0], -R[1]], axis=1)   # row k = image direction of model axis k
    return origin[None, :] + length * d


def draw_axes(img: np.ndarray, obs: FaceObservation, s: float) -> None:
    if obs.rotation is None or not _finite(obs.rotation):
        return
    o = axes_origin(obs)
    if o is None:
        return
    length = 0.5 * _box_size(obs)
    ends = axes_endpoints(obs.rotation, o, length)
    R = np.asarray(obs.rotation, dtype=float)
    th = max(1, int(round(2 * s)))
    # draw the axis pointing away from the camera first so the nearer ones stay on top
    order = np.argsort(R[2])
    oi = tuple(int(v) for v in _clip_int(o))
    for k in order:
        cv2.arrowedLine(img, oi, tuple(int(v) for v in _clip_int(ends[k])), C_AX[k], th, cv2.LINE_AA,
                        tipLength=0.15)


C_GAZE = (255, 255, 0)   # BGR cyan


def draw_gaze(img: np.ndarray, obs: FaceObservation, s: float) -> None:
    """One ray per measured eye from its iris centre along its gaze direction (camera frame x right,
    y up: image dx = x, dy = -y), as long as the head axes; a ray towards the camera is short."""
    g = obs.gaze
    if g is None:
        return
    length = 0.5 * _box_size(obs)
    th = max(1, int(round(2 * s)))
    for o, d in zip(g.origins, g.eye_directions):
        if not (_finite(o) and _finite(d)):
            continue
        end = np.array([o[0] + length * d[0], o[1] - length * d[1]])
        cv2.arrowedLine(img, tuple(int(v) for v in _clip_int(o)), tuple(int(v) for v in _clip_int(end)),
                        C_GAZE, th, cv2.LINE_AA, tipLength=0.2)


def draw_box(img: np.ndarray, obs: FaceObservation, s: float) -> None:
    b = np.asarray(obs.box, dtype=float)
    if not _finite(b):
        return
    x0, y0, x1, y1 = (int(v) for v in _clip_int(b[:4]))
    cv2.rectangle(img, (x0, y0), (x1, y1), C_BOX, max(1, int(round(2 * s))), cv2.LINE_AA)


def draw_face_text(img: np.ndarray, obs: FaceObservation, s: float) -> None:
    b = np.asarray(obs.box, dtype=float)
    if not _finite(b):
        return
    text = f"yaw {_fmt_angle(obs.yaw)} pitch {_fmt_angle(obs.pitch)} roll {_fmt_angle(obs.roll)}"
    fs = 0.5 * s
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
    x = int(np.clip(b[0], 0, max(0, img.shape[1] - tw)))
    y = int(b[1]) - int(6 * s)
    if y - th < 0:
        y = int(b[3]) + th + int(6 * s)
    _put_text(img, text, (x, y), fs)


# ----------------------------------------------------------------------------- HUD
def draw_hud_text(img: np.ndarray, lines: Sequence[str], s: float, top: int) -> int:
    fs = 0.55 * s
    y = top
    for line in lines:
        (_, th), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        y += th + int(8 * s)
        _put_text(img, line, (int(10 * s), y), fs)
    return y


def _blend_rect(img, x0, y0, x1, y1, color, alpha):
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    fill = np.empty_like(roi)
    fill[:] = color
    cv2.addWeighted(fill, alpha, roi, 1 - alpha, 0, dst=roi)


def banner_height(img: np.ndarray) -> int:
    return int(round(44 * _ui_scale(img)))


def draw_banner(img: np.ndarray, state: MonitorState, s: float) -> None:
    h, w = img.shape[:2]
    bh = banner_height(img)
    alert = state.top_alert
    if alert is not None:
        color = C_CRITICAL if alert.level == "critical" else C_WARNING
        title = ALERT_TITLES.get(alert.kind, alert.kind.replace("_", " ").upper())
        text = f"{alert.level.upper()}: {title}"
        more = len(state.alerts) - 1
        if more > 0:
            text += f"  (+{more})"
        _blend_rect(img, 0, 0, w, bh, color, 0.8)
        fs = 0.8 * s
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 2)
        _put_text(img, text, ((w - tw) // 2, (bh + th) // 2), fs, (255, 255, 255), 2)
    elif state.calibrating:
        text = "calibrating: look ahead"
        fs = 0.6 * s
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, fs, 1)
        _blend_rect(img, (w - tw) // 2 - int(10 * s), 0, (w + tw) // 2 + int(10 * s), bh, C_CALIB, 0.6)
        _put_text(img, text, ((w - tw) // 2, (bh + th) // 2), fs)


def gauge_rows(state: MonitorState) -> list:
    """The gauges drawn for this state: (label, value, lo, hi, threshold, fmt, rule) per row, top
    to bottom; a gauge whose value is missing from the state is left out (NaN is drawn as "--")."""
    sig = state.signals or {}
    src = {"signals": sig, "counters": state.counters or {}}
    rows = []
    seen_labels = set()
    for where, key, label, lo, hi, thr_keys, fmt, rule in GAUGES:
        v = src[where].get(key)
        if v is None or label in seen_labels:
            continue
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        thr = None
        for tk in thr_keys:
            if sig.get(tk) is not None:
                try:
                    thr = float(sig[tk])
                except (TypeError, ValueError):
                    thr = None
                break
        seen_labels.add(label)
        rows.append((label, v, lo, hi, thr, fmt, rule))
    return rows


def gauge_over(v: float, thr: Optional[float], rule: Optional[str]) -> bool:
    """Whether a gauge value is beyond its threshold by the monitor's rule (drawn red)."""
    if rule is None or thr is None or not (math.isfinite(v) and math.isfinite(thr)):
        return False
    return {"abs": abs(v) > thr, "above": v > thr, "below": v < thr}[rule]


def draw_gauges(img: np.ndarray, state: MonitorState, s: float) -> None:
    """Horizontal bars, bottom-left: value, threshold marks (+-threshold for the "abs" rule)."""
    rows = gauge_rows(state)
    if not rows:
        return
    h, w = img.shape[:2]
    bw, bh, gap = int(160 * s), max(6, int(10 * s)), int(22 * s)
    lx = int(10 * s)
    bx = lx + int(82 * s)   # label column ("PERCLOS" at font 0.45)
    y = h - int(12 * s) - gap * len(rows)
    fs = 0.45 * s
    _blend_rect(img, 0, y - int(6 * s), bx + bw + int(70 * s), h, (0, 0, 0), 0.45)
    for label, v, lo, hi, thr, fmt, rule in rows:
        cy = y + gap // 2
        _put_text(img, label, (lx, cy + bh // 2), fs)
        cv2.rectangle(img, (bx, cy - bh // 2), (bx + bw, cy + bh // 2), (90, 90, 90), -1)

        def X(val):
            return bx + int(round((min(max(val, lo), hi) - lo) / (hi - lo) * bw))

        if math.isfinite(v):
            col = C_CRITICAL if gauge_over(v, thr, rule) else C_GAUGE_OK
            a = X(0.0) if lo < 0 else bx
            b = X(v)
            cv2.rectangle(img, (min(a, b), cy - bh // 2), (max(a, b), cy + bh // 2), col, -1)
            val_text = fmt.format(v)
        else:
            val_text = "--"
        if thr is not None and math.isfinite(thr):
            marks = (thr, -thr) if rule == "abs" else (thr,)
            for m in marks:
                mx = X(m)
                cv2.line(img, (mx, cy - bh // 2 - 3), (mx, cy + bh // 2 + 3), (255, 255, 255), 1)
        if lo < 0:
            cv2.line(img, (X(0.0), cy - bh // 2), (X(0.0), cy + bh // 2), (200, 200, 200), 1)
        _put_text(img, val_text, (bx + bw + int(8 * s), cy + bh // 2), fs)
        y += gap


# ----------------------------------------------------------------------------- entry point
def annotate(image: np.ndarray, observations: Sequence[FaceObservation] | None, *,
             layers: Optional[Layers] = None, state: Optional[MonitorState] = None,
             info: Optional[dict] = None, inplace: bool = False) -> np.ndarray:
    """Draw the enabled layers on a BGR uint8 image and return it (a copy unless ``inplace``;
    a grayscale image is converted to a new BGR image).

    ``info`` may hold {"fps": float, "model": str, "provider": str}.
    """
    layers = layers or Layers()
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        img = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)        # always a new image
    else:
        img = image if inplace else image.copy()
    s = _ui_scale(img)
    observations = observations or []
    for obs in observations:
        if layers.mesh:
            if obs.vertices is not None and len(obs.vertices):
                draw_mesh(img, obs.vertices, obs.triangles, layers.mesh_style)
            elif obs.mesh_points is not None and len(obs.mesh_points):
                mp = np.asarray(obs.mesh_points)
                e = mediapipe_edges() if len(mp) in (468, 478) else None
                draw_mesh(img, mp, None, "wire" if e is not None else "points", edges=e)
        if layers.box:
            draw_box(img, obs, s)
        if layers.landmarks and obs.landmarks is not None:
            draw_landmarks(img, obs.landmarks, s)
        if layers.axes:
            draw_axes(img, obs, s)
            draw_gaze(img, obs, s)
        if layers.text:
            draw_face_text(img, obs, s)

    info = info or {}
    lines = []
    if layers.fps and info.get("fps") is not None:
        f = float(info["fps"])
        lines.append(f"FPS {f:.1f}" if math.isfinite(f) else "FPS --")
    if layers.model:
        model = info.get("model") or (observations[0].model if observations else None)
        if model:
            prov = info.get("provider")
            lines.append(f"model {model}" + (f" ({prov})" if prov else ""))
    top = banner_height(img) if (layers.monitor and state is not None) else 0
    if lines:
        draw_hud_text(img, lines, s, top)
    if layers.monitor and state is not None:
        draw_banner(img, state, s)
        draw_gauges(img, state, s)
    return img


# ----------------------------------------------------------------------------- benchmark
def _bench(argv=None) -> int:
    """python -m app.render --bench [--bfm DIR]: mesh drawing cost at 1280x720."""
    import argparse
    import time

    ap = argparse.ArgumentParser(prog="python -m app.render")
    ap.add_argument("--bench", action="store_true", required=True)
    ap.add_argument("--bfm", default=None, help="folder with u_shp.npy, u_exp.npy, tri.mat "
                                                 "(default ../shared/bfm/3dmm_data)")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    from pathlib import Path
    import sys

    bfm = Path(args.bfm) if args.bfm else Path(__file__).resolve().parents[2] / "shared" / "bfm" / "3dmm_data"
    if not (bfm / "tri.mat").exists():
        print(f"error: BFM not found in {bfm} (pass --bfm DIR with u_shp.npy, u_exp.npy, tri.mat)",
              file=sys.stderr)
        return 2
    import scipy.io as sio

    u = (np.load(bfm / "u_shp.npy") + np.load(bfm / "u_exp.npy")).reshape(-1, 3)
    tri = sio.loadmat(str(bfm / "tri.mat"))["tri"].T.astype(np.int32) - 1
    v = u.astype(np.float64)
    v[:, 1] *= -1
    v -= v.mean(0)
    v *= 350.0 / np.ptp(v[:, 1])
    v[:, 0] += 640
    v[:, 1] += 360
    v = v.astype(np.float32)
    base = np.full((720, 1280, 3), 80, np.uint8)
    obs = FaceObservation(box=np.array([640 - 180, 360 - 180, 640 + 180, 360 + 180], float),
                          landmarks=np.full((68, 3), np.nan, np.float32), model="bench",
                          vertices=v, triangles=tri)
    t = time.perf_counter()
    mesh_edges(tri, v)
    print(f"edge list (once per mesh): {(time.perf_counter() - t) * 1e3:.1f} ms")
    # the alternatives that were not chosen, for the record
    all_e = _unique_edges(tri.astype(np.int64))
    for name, e in (("every edge", all_e), ("every 8th edge", all_e[::8])):
        ts = []
        for _ in range(max(3, args.repeat // 5)):
            img = base.copy()
            t = time.perf_counter()
            cv2.polylines(img, _clip_int(v[:, :2][e]), False, C_MESH, 1, cv2.LINE_8)
            ts.append(time.perf_counter() - t)
        print(f"(not used) one polylines call, {name} ({len(e)} edges): median {np.median(ts) * 1e3:.2f} ms")
    for style in ("wire", "points"):
        lay = Layers(box=False, landmarks=False, axes=False, text=False, fps=False, model=False,
                     monitor=False, mesh_style=style)
        annotate(base, [obs], layers=lay)
        ts = []
        for _ in range(args.repeat):
            img = base.copy()
            t = time.perf_counter()
            annotate(img, [obs], layers=lay, inplace=True)
            ts.append(time.perf_counter() - t)
        print(f"mesh {style}: {len(v)} vertices, {len(tri)} triangles, 1280x720: "
              f"median {np.median(ts) * 1e3:.2f} ms, min {np.min(ts) * 1e3:.2f} ms")
    img = base.copy()
    ts = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        annotate(base, [obs], state=MonitorState(signals={"yaw_offset": 10, "perclos": 0.1}),
                 info={"fps": 25, "model": "bench"})
        ts.append(time.perf_counter() - t)
    print(f"all layers (copy + mesh wire + HUD): median {np.median(ts) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(_bench())
