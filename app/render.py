"""Overlays, one module for the headless writer and the GUI: ``annotate(image, observations, ...)``.

Layers (each a switch in ``Layers``): face box; 68 landmarks with the iBUG contour lines; the dense
mesh; head axes; yaw/pitch/roll text; fps; which model / provider runs; and the driver-monitoring
HUD (alert banner, gauges, "calibrating").

Dense mesh styles (``python -m app.eval.render_bench``, this 2-core CPU, 1280x720 frame, BFM mean face
350 px tall; docs/benchmarks.md section 6). The default ``mesh_style="shaded"`` (``draw_shaded``):
the model's triangles as a lit grey surface (per-vertex Phong lighting from vertex normals,
z-buffered at about the vertex spacing, blended over the video), 2.9 ms on 3DDFA-V2's neck-less
mesh (38365 vertices), 4.2 ms on the full BFM (53215 vertices / 105840 triangles). ``"wire"``: one
cv2.polylines call over all 159055 unique edges of the full BFM is 57 ms (too slow), every 8th
edge 5.2 ms (and ragged), so the wireframe is the mesh decimated by 3D vertex clustering (40 cells
across the face: 8942 edges between ~3000 representative vertices), alpha-blended in the mesh's
bounding box: 2.7-3.4 ms. ``"points"`` (every vertex splatted as an alpha-blended dot) 1.6-2.3 ms.
What depends on the triangle topology only (the edge list, 47 ms; the normal stencil, 0.1-0.2 s) is
computed once from the first vertices seen and cached by shape + sampled content; meshes with
<= 20000 unique edges (mediapipe's 468-point mesh, which has no triangles: always its wireframe)
draw every edge.

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

from app.core.types import FaceObservation, FrameResult, MonitorState
from app.settings import MESH_STYLES, Layers

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
C_EMERGENCY = (160, 0, 200)  # magenta-red: beyond critical
C_LIMITED = (150, 110, 60)   # slate blue: the monitor cannot see everything

MESH_ALPHA = 0.55
# shaded mesh: 3DDFA-V2's demo render (its Sim3DR RenderPipeline: ambient + diffuse + Phong
# specular per vertex, grey, blended over the video), with what looked better on the shared
# expression clips (docs/shaded_vs_wire.png): the light moved from the camera to its upper left
# (direction towards the light; x right, y down, z towards the camera) and less ambient, so that
# the frontal surfaces are modelled too, and alpha 0.7 instead of 0.6 (the face reads as a 3D
# surface over a bright face). Sim3DR's defaults: ambient 0.3, diffuse 0.6, specular 0.1,
# exponent 5, light at the camera, alpha 0.6.
SHADE_ALPHA = 0.7
SHADE_LIGHT = (-0.4, -0.5, 1.0)
SHADE_AMBIENT, SHADE_DIFFUSE, SHADE_SPECULAR, SHADE_SHININESS = 0.15, 0.75, 0.1, 5
# z-buffer grid cell = this x the mean spacing of the visible vertices in the image (from their
# bounding box): 22-25 % of the surface's cells get no vertex and are filled from their neighbours
# (expressions_d13 and the bench's mean face; python -m app.eval.render_bench prints it), while the
# render stays as fine as the mesh (1.3 and 1.6 x were coarser to the eye, 1.0 x left 40 % empty)
SHADE_CELL = 1.1
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


def _topology_key(tri: np.ndarray) -> tuple:
    """Cache key of a triangle array by content (shape + 64 sampled rows), not identity: a
    per-frame copy of the same topology must not recompute what depends on it."""
    return (tri.shape, hash(tri[:: max(1, len(tri) // 64)].astype(np.int64).tobytes()))


def mesh_edges(tri: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Edge list to draw for this triangle array (cached): all edges of small meshes, a decimated
    wireframe of large ones."""
    tri = np.asarray(tri)
    key = _topology_key(tri)
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


def mediapipe_edges() -> np.ndarray:
    """mediapipe's 468-point tessellation as (E, 2) edges (the Tasks API's FaceLandmarksConnections:
    mediapipe 0.10 and 1.x have it, the same 2556 edges as the legacy FACEMESH_TESSELATION)."""
    global _MP_EDGES
    if _MP_EDGES is None:
        from mediapipe.tasks.python.vision import FaceLandmarksConnections

        pairs = {(c.start, c.end) for c in FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION}
        _MP_EDGES = np.array(sorted(pairs), dtype=np.int32)
    return _MP_EDGES


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


# ----------------------------------------------------------------------------- shaded mesh
_STENCIL_CACHE: dict = {}


def area_weighted_normals(vertices: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Unit vertex normals (V, 3), float64: the sum of the incident triangles' cross products
    (b - a) x (c - a), so oriented by the triangles' winding. Zero for unused vertices."""
    v = np.asarray(vertices, dtype=np.float64)[:, :3]
    tri = np.asarray(tri, dtype=np.int64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    fn = np.cross(b - a, c - a)
    n = np.zeros_like(v)
    for j in range(3):
        np.add.at(n, tri[:, j], fn)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, ln, out=np.zeros_like(n), where=ln > 0)


def normal_stencil(tri: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """(4, V) int32 vertex indices (a, b, c, d) per vertex such that (v[a] - v[b]) x (v[c] - v[d])
    is its normal: central differences across its one-ring along two perpendicular tangent
    directions (a one-sided difference with the vertex itself where the ring has no neighbour on
    one side, on the mesh border), chosen on ``vertices`` and oriented like the area-weighted
    normal of the triangles' winding. Per frame that is 4 row gathers and one cross product per
    vertex (0.5 ms for 38k vertices on this 2-core CPU) instead of one cross product per triangle
    and a scatter-add (1.7 ms for its 76k triangles). Against the area-weighted normals on
    3DDFA-V2's neck-less BFM fitted to a frame of expressions_d13: within 2.3 deg for 99 % of the
    vertices on the frame it was chosen on, 2.6 deg on a frame 140 frames later (21 of the
    38365, on the border, beyond 20 deg). An unused vertex gets (i, i, i, i): a zero normal,
    never drawn."""
    tri = np.asarray(tri, dtype=np.int64)
    v = np.nan_to_num(np.asarray(vertices, dtype=np.float64)[:, :3])
    nv = len(v)
    nref = area_weighted_normals(v, tri)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    e = e[e[:, 0] != e[:, 1]]
    k = np.unique(e[:, 0] * nv + e[:, 1])      # directed one-ring edges, sorted by source vertex
    src, dst = k // nv, k % nv
    n_s = nref[src]
    d = v[dst] - v[src]
    d -= (d * n_s).sum(1, keepdims=True) * n_s              # onto the tangent plane
    d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
    # tangent frame per vertex: the x axis projected on the tangent plane (y where the normal is
    # almost along x), and its perpendicular n x t1
    ref = np.zeros((nv, 3))
    ref[:, 0] = 1.0
    ref[np.abs(nref[:, 0]) > 0.9] = (0.0, 1.0, 0.0)
    t1 = ref - (ref * nref).sum(1, keepdims=True) * nref
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True) + 1e-12
    t2 = np.cross(nref, t1)
    out = np.tile(np.arange(nv, dtype=np.int64), (4, 1))
    first = np.r_[0, np.nonzero(np.diff(src))[0] + 1]
    owner = src[first]
    seg = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(src)]))
    pos = np.arange(len(src))
    for row, (t, sign) in enumerate(((t1, 1.0), (t1, -1.0), (t2, 1.0), (t2, -1.0))):
        if sign > 0:
            c = np.einsum("ij,ij->i", d, t[src])          # how far along t each neighbour lies
        else:
            c = -c
        best_c = np.maximum.reduceat(c, first)            # per vertex: the neighbour furthest along
        hit = np.where(c == best_c[seg], pos, len(src))
        best = np.minimum.reduceat(hit, first)
        ok = best_c > 0.3                                 # a neighbour really on that side
        out[row, owner[ok]] = dst[best[ok]]
    # (a - b) x (c - d) points along n x ... by construction; flip the pair where it does not
    a, b, c, dd = (v[i] for i in out)
    flip = (np.cross(a - b, c - dd) * nref).sum(1) < 0
    out[2, flip], out[3, flip] = out[3, flip].copy(), out[2, flip].copy()
    return out.astype(np.int32)


def _stencil(tri: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    key = _topology_key(tri)
    st = _STENCIL_CACHE.get(key)
    if st is None or st.shape[1] != len(vertices):
        st = normal_stencil(tri, vertices).astype(np.intp)
        if np.isfinite(vertices.sum()):    # chosen on unknown vertices: for this frame only
            if len(_STENCIL_CACHE) > 16:
                _STENCIL_CACHE.clear()
            _STENCIL_CACHE[key] = st
    return st


def vertex_normals(vertices: np.ndarray, stencil: np.ndarray) -> tuple:
    """Un-normalised vertex normals (nx, ny, nz), float32 arrays, from a ``normal_stencil`` (its
    indices best as np.intp: numpy converts other index types on every gather). Each coordinate
    is gathered from its own contiguous row (one row gather of 12 bytes per index took 0.92-0.98 ms
    for 38k vertices, these 0.67-0.76 ms; the same values bit for bit)."""
    xs, ys, zs = np.ascontiguousarray(vertices[:, :3].T)
    gx, gy, gz = xs.take(stencil), ys.take(stencil), zs.take(stencil)
    u0, u1, u2 = gx[0] - gx[1], gy[0] - gy[1], gz[0] - gz[1]
    w0, w1, w2 = gx[2] - gx[3], gy[2] - gy[3], gz[2] - gz[3]
    return u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0


def camera_side(vertices: np.ndarray, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray) -> tuple:
    """(outward, camera, confidence): the image z of a model may point either way
    (app/core/types.py) and the normals' sign comes from the triangles' winding, so both are read
    off the mesh. ``outward`` = +-1 makes the normals point away from the mesh's centroid (a face
    is a shell around it); ``camera`` = +-1 is the image z direction towards the camera: where
    the visible side's outward normals point. ``confidence`` = |mean outward nz| / mean |nz|:
    0.97 for a frontal face, 0.33 at 60 deg yaw, 0.04 at 85 deg (where the sign becomes unreliable:
    the caller keeps the last confident answer). Every 7th vertex is enough."""
    sub = slice(None, None, 7)
    sx, sy, sz = nx[sub], ny[sub], nz[sub]
    vs = vertices[sub]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.sqrt(sx * sx + sy * sy + sz * sz)
        # sum of (v - centroid) . n / |n| over the known vertices with a normal
        ok = np.isfinite(inv)
        ok &= np.isfinite(vs[:, 0] + vs[:, 1] + vs[:, 2])
    if ok.all():          # the usual case: no selection to copy
        vs = vs.astype(np.float64)
    elif ok.any():
        inv, vs, sx, sy, sz = inv[ok], vs[ok].astype(np.float64), sx[ok], sy[ok], sz[ok]
    else:
        return 1.0, 1.0, 0.0
    sx, sy, sz = sx * inv, sy * inv, sz * inv
    c = vs.mean(0)
    out = 1.0 if (np.dot(vs[:, 0] - c[0], sx) + np.dot(vs[:, 1] - c[1], sy)
                  + np.dot(vs[:, 2] - c[2], sz)) >= 0 else -1.0
    toward = out * float(sz.sum())
    return out, (1.0 if toward >= 0 else -1.0), abs(toward) / max(float(np.abs(sz).sum()), 1e-12)


def shade_normals(vertices: np.ndarray, nx: np.ndarray, ny: np.ndarray, nz: np.ndarray,
                  outward: float, camera: float, light=SHADE_LIGHT) -> tuple:
    """Phong lighting per vertex from its normal (any length; the arrays are changed in place),
    ``outward`` and ``camera`` from ``camera_side``: (intensity (V,) float32 in [0, 1], front (V,)
    bool = facing the camera, depth (V,) float32 = larger is nearer the camera). Orthographic view
    along z, a directional light ``light`` (towards the light; camera frame: x right, y down, z
    towards the camera)."""
    v = vertices
    with np.errstate(divide="ignore", invalid="ignore"):   # a zero normal: NaN, never front-facing
        inv = np.float32(outward) / np.sqrt(nx * nx + ny * ny + nz * nz)
        nx *= inv
        ny *= inv
        nz *= inv * np.float32(camera)                     # camera frame: +z towards the camera
        lx, ly, lz = (np.asarray(light, np.float64) / np.linalg.norm(light)).astype(np.float32)
        cos = nx * lx + ny * ly + nz * lz
        lit = np.clip(cos, 0.0, 1.0)
        # Phong: the reflected light direction r = 2 (n.l) n - l against the view direction (0, 0, 1);
        # the power is taken only where it is not 0 (a quarter of a frontal face's vertices: the
        # power is most of this function's time), the same values as over the whole array
        base = np.clip(2.0 * cos * nz - lz, 0.0, 1.0)
        lit_side = base > 0
        lit_side &= cos > 0
        spec = np.zeros_like(base)
        spec[lit_side] = base[lit_side] ** SHADE_SHININESS
        intensity = np.clip(SHADE_AMBIENT + SHADE_DIFFUSE * lit + SHADE_SPECULAR * spec, 0.0, 1.0)
        front = nz > 0                     # NaN (a degenerate or unknown normal) is not front
    if not np.isfinite(v.sum()):
        front &= np.isfinite(v).all(1)     # its normal may come from known neighbours
    depth = v[:, 2] * np.float32(camera)
    return intensity.astype(np.float32, copy=False), front, depth


# the last confident camera side per mesh topology (see camera_side)
_CAMERA_SIDE: dict = {}
CAMERA_SIDE_CONFIDENT = 0.3


@dataclass
class ShadedLayer:
    """The shaded mesh of one face, ready to blend: image rows y0:y0+h, columns x0:x0+w."""
    x0: int
    y0: int
    grey: np.ndarray      # (h, w) uint8 lit intensity
    mask: np.ndarray      # (h, w) uint8, 255 where the surface covers the pixel
    cell: float           # z-buffer grid cell, image pixels
    holes: float          # fraction of the covered cells that got no vertex (filled)


def shaded_layer(vertices: np.ndarray, triangles: np.ndarray, image_shape,
                 light=SHADE_LIGHT) -> Optional[ShadedLayer]:
    """Z-buffered render of the lit mesh on a grid of SHADE_CELL x the vertex spacing (so each
    cell holds about one visible vertex): every front-facing vertex is splatted into its cell,
    the nearest one wins (one np.maximum.at over depth << 8 | intensity), a farther surface seen
    through a gap of a nearer one is removed, empty cells inside the surface take the mean of
    their neighbours, a 3x3 median removes single cells whose vertex got an outlying normal, then
    the grid is scaled up to image pixels (bilinear, the outline rounded and cut at half). None
    when nothing of it is in the image."""
    v = np.ascontiguousarray(np.asarray(vertices)[:, :3], dtype=np.float32)
    if len(v) == 0:
        return None
    nx, ny, nz = vertex_normals(v, _stencil(triangles, v))
    outward, camera, conf = camera_side(v, nx, ny, nz)
    key = (_topology_key(np.asarray(triangles)), len(v))
    if conf >= CAMERA_SIDE_CONFIDENT:
        if len(_CAMERA_SIDE) > 16:
            _CAMERA_SIDE.clear()
        _CAMERA_SIDE[key] = camera
    else:
        camera = _CAMERA_SIDE.get(key, camera)
    intensity, front, depth = shade_normals(v, nx, ny, nz, outward, camera, light)
    idx = np.flatnonzero(front)
    if len(idx) < 3:
        return None
    h, w = image_shape[:2]
    x, y = v[:, 0].take(idx), v[:, 1].take(idx)
    fx0, fx1, fy0, fy1 = float(x.min()), float(x.max()), float(y.min()), float(y.max())
    cell = max(1.0, SHADE_CELL * math.sqrt(max(fx1 - fx0, 1.0) * max(fy1 - fy0, 1.0) / len(idx)))
    x0, y0 = max(0, math.floor(fx0)), max(0, math.floor(fy0))
    x1, y1 = min(w, math.ceil(fx1) + 1), min(h, math.ceil(fy1) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    gw, gh = math.ceil((x1 - x0) / cell), math.ceil((y1 - y0) / cell)
    gx = np.floor((x - x0) * (1.0 / cell)).astype(np.int32)
    gy = np.floor((y - y0) * (1.0 / cell)).astype(np.int32)
    ok = (gx >= 0) & (gx < gw) & (gy >= 0) & (gy < gh)
    d = depth.take(idx)
    dmin, dptp = float(d.min()), float(np.ptp(d))
    dq = ((d - dmin) * (65534.0 / max(dptp, 1e-6))).astype(np.uint32) + 1
    key = (dq << 8) | (intensity.take(idx) * 255.0 + 0.5).astype(np.uint32)
    buf = np.zeros(gh * gw, np.uint32)
    np.maximum.at(buf, (gy * gw + gx)[ok], key[ok])
    buf = buf.reshape(gh, gw)
    have = (buf > 0).astype(np.uint8)
    # a cell whose winner lies well behind (2 cells' worth of depth) both of its neighbours on
    # two opposite sides shows a farther surface through a gap between the nearer surface's
    # vertices: it is a hole of the nearer surface (an occlusion edge has a nearer neighbour on
    # one side only, a smooth surface at any slope is nearer on one side and farther on the other)
    # (gaps of one or two cells: the neighbours 1 and 2 cells away)
    dep = np.pad((buf >> 8).astype(np.int32), 2)        # 0 = empty, never "nearer"
    mid = dep[2:-2, 2:-2] + int(2.0 * cell * 65534.0 / max(dptp, 1e-6)) + 1
    through = np.zeros((gh, gw), bool)
    for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2), (2, 0)):
        a = dep[2 + dy:2 + dy + gh, 2 + dx:2 + dx + gw]
        b = dep[2 - dy:2 - dy + gh, 2 - dx:2 - dx + gw]
        through |= np.minimum(a, b) > mid
    have[through] = 0
    grey = (buf & 255).astype(np.float32)
    k3 = np.ones((3, 3), np.uint8)
    covered = cv2.morphologyEx(have, cv2.MORPH_CLOSE, k3)
    # empty cells (holes, and one ring outside the surface so that the bilinear scaling does not
    # darken the border) get the mean of their filled neighbours
    hf = have.astype(np.float32)
    s = cv2.blur(grey * hf, (3, 3), borderType=cv2.BORDER_CONSTANT)
    c = cv2.blur(hf, (3, 3), borderType=cv2.BORDER_CONSTANT)
    with np.errstate(divide="ignore", invalid="ignore"):
        grey = np.where((have == 0) & (c > 0), s / c, grey)
    n_cov = int(np.count_nonzero(covered))
    holes = float(np.count_nonzero(covered & (have == 0))) / max(1, n_cov)
    uw, uh = max(x1 - x0, round(gw * cell)), max(y1 - y0, round(gh * cell))
    grey_up = cv2.resize(cv2.medianBlur(grey.astype(np.uint8), 3), (uw, uh), interpolation=cv2.INTER_LINEAR)[:y1 - y0, :x1 - x0]
    # the outline: the covered cells, rounded by a small blur, scaled up and cut at half
    soft = cv2.GaussianBlur(covered * 255, (3, 3), 0.8, borderType=cv2.BORDER_CONSTANT)
    mask_up = cv2.resize(soft, (uw, uh), interpolation=cv2.INTER_LINEAR)[:y1 - y0, :x1 - x0]
    _, mask_up = cv2.threshold(mask_up, 127, 255, cv2.THRESH_BINARY)
    return ShadedLayer(x0, y0, grey_up, mask_up, cell, holes)


def draw_shaded(img: np.ndarray, vertices: np.ndarray, triangles: np.ndarray,
                alpha: float = SHADE_ALPHA, light=SHADE_LIGHT) -> Optional[ShadedLayer]:
    """The lit, z-buffered mesh blended over ``img`` in place at ``alpha`` (3DDFA-V2's demo
    look: a grey plaster face over the video); pixels off the surface are left untouched."""
    lay = shaded_layer(vertices, triangles, img.shape, light)
    if lay is None:
        return None
    hh, ww = lay.grey.shape
    roi = img[lay.y0:lay.y0 + hh, lay.x0:lay.x0 + ww]
    layer = roi.copy()
    cv2.copyTo(cv2.cvtColor(lay.grey, cv2.COLOR_GRAY2BGR), lay.mask, layer)
    cv2.addWeighted(layer, alpha, roi, 1.0 - alpha, 0, dst=roi)
    return lay


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


# plain colour panels by (height, width, colour): the banner's and the gauges' backgrounds have the
# same size and colour frame after frame (filling one took 0.2 ms of the blend's 0.3)
_FILLS: dict = {}


def _fill(h: int, w: int, color) -> np.ndarray:
    key = (h, w, tuple(int(c) for c in color))
    f = _FILLS.get(key)
    if f is None:
        if len(_FILLS) > 32:
            _FILLS.clear()
        f = _FILLS[key] = np.empty((h, w, 3), np.uint8)
        f[:] = key[2]
        f.flags.writeable = False
    return f


def _blend_rect(img, x0, y0, x1, y1, color, alpha):
    h, w = img.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = img[y0:y1, x0:x1]
    cv2.addWeighted(_fill(y1 - y0, x1 - x0, color), alpha, roi, 1 - alpha, 0, dst=roi)


def banner_height(img: np.ndarray) -> int:
    return int(round(44 * _ui_scale(img)))


# what the banner says the monitor cannot see (MonitorState.unavailable: what -> why)
UNAVAILABLE_TEXT = {"eyes": "eyes not visible", "driver": "driver not visible", "camera": "camera lost"}
EMERGENCY_TEXT = "EMERGENCY: DRIVER UNRESPONSIVE"


def limited_text(state: MonitorState) -> Optional[str]:
    """"MONITORING LIMITED — eyes not visible" (and the why when it is not "occluded") while the
    monitor reports it cannot see something (unavailable_start logged), else None."""
    parts = []
    for what, why in (state.unavailable or {}).items():
        t = UNAVAILABLE_TEXT.get(what, f"{what} not visible")
        if why == "too_dark":
            t += " (too dark)"
        parts.append(t)
    return "MONITORING LIMITED — " + ", ".join(parts) if parts else None


def banner_text(state: MonitorState) -> Optional[tuple[str, str]]:
    """(text, level) of the banner: the unresponsive driver ("emergency"), else the most severe
    alert ("critical" / "warning"; what cannot be seen added), else "MONITORING LIMITED — ..."
    ("limited"); None when there is nothing to say. The window shows the same text."""
    limited = limited_text(state)
    if state.emergency is not None:
        # which critical alert went unanswered
        kind = state.emergency.values.get("alert", "")
        why = ALERT_TITLES.get(kind, kind.replace("_", " ").upper())
        if state.emergency.values.get("cause") == "sleep":
            why += " (sleep)"
        return f"{EMERGENCY_TEXT} — {why}", "emergency"
    alert = state.top_alert
    if alert is not None:
        title = ALERT_TITLES.get(alert.kind, alert.kind.replace("_", " ").upper())
        text = f"{alert.level.upper()}: {title}"
        more = len(state.alerts) - 1
        if more > 0:
            text += f"  (+{more})"
        if limited:
            text += "  |  " + limited.split(" — ", 1)[1]
        return text, alert.level
    if limited:
        return limited, "limited"
    return None


def draw_banner(img: np.ndarray, state: MonitorState, s: float) -> None:
    h, w = img.shape[:2]
    bh = banner_height(img)
    said = banner_text(state)
    if said is not None:
        text, level = said
        text = text.replace("—", "-")            # the Hershey fonts are ASCII only
        color = {"emergency": C_EMERGENCY, "critical": C_CRITICAL, "limited": C_LIMITED}.get(level, C_WARNING)
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
def overlay_kind(layers: Layers, triangles: bool) -> str:
    """What a recording of these layers is made of, for its encoder settings
    (app.settings.RECORD_QUALITIES): "lines" when the dense mesh is drawn as lines or dots (the
    wire / points style, or a mesh without ``triangles``: the landmark model's 468-point
    wireframe), else "surface" (the shaded mesh, or no mesh: thin HUD lines only)."""
    if layers.mesh and (layers.mesh_style != "shaded" or not triangles):
        return "lines"
    return "surface"


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
                if layers.mesh_style == "shaded" and obs.triangles is not None and len(obs.triangles):
                    draw_shaded(img, obs.vertices, obs.triangles)
                else:
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


def downscale(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` made smaller, to ``size`` (w, h): pixel-area averaging by the largest whole factor k
    that fits (OpenCV's fast path: the source cut to a multiple of k, at most k - 1 edge pixels),
    then bilinear for the rest, which is then at most 2x. OpenCV's area averaging at a fractional
    factor costs 3.7-7.7 ms per 720x1280 frame on one thread (x0.4 to x0.75) against 0.27 ms at
    x0.5, the two steps 0.56-2.1 ms (docs/benchmarks.md section 18); at a whole factor this is
    exactly that averaging."""
    w, h = int(size[0]), int(size[1])
    src_h, src_w = img.shape[:2]
    k = min(src_w // max(w, 1), src_h // max(h, 1))
    if k >= 2:
        img = cv2.resize(img[:src_h - src_h % k, :src_w - src_w % k], (src_w // k, src_h // k),
                         interpolation=cv2.INTER_AREA)
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def draw_result(result: FrameResult, layers: Optional[Layers] = None, *, inplace: bool = False,
                size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """The annotated image of one Pipeline.process result (its frame with the enabled layers, the
    monitor's banner and gauges, fps / model / provider). ``size`` (w, h): drawn on the frame
    made that small (``downscale``; a smaller recording: --record-scale), the faces scaled to it
    (FaceObservation.resized), so the overlay costs the pixels of the smaller image."""
    image, observations = result.frame.image, result.observations
    h, w = image.shape[:2]
    if size is not None and (int(size[0]), int(size[1])) != (w, h):
        sw, sh = int(size[0]), int(size[1])
        image = downscale(image, (sw, sh))
        observations = [o.resized(sw / w, sh / h) for o in observations]
        inplace = True      # a new image
    return annotate(image, observations, layers=layers, state=result.state,
                    info={"fps": result.fps, "model": result.model, "provider": result.provider}, inplace=inplace)
