"""3DMM geometry over numpy: P -> (s, R, t), Euler conventions, crop policies and transforms.

Conventions (all checked against the official-code vectors in ../shared/fixtures):
- A 62-vector of de-normalised 3DMM parameters is [P (3x4 row-major, = [s*R | t]), 40 shape,
  10 expression] over the BFM of ../shared/bfm/3dmm_data.
- "roi box" [sx, sy, ex, ey] is the square image region the 120x120 crop was taken from.
- Model outputs in crop pixels map back to the image with the official formula
  x * (ex - sx) / 120 + sx (same for y), z * mean scale.
"""
from __future__ import annotations

import math

import numpy as np

STD_SIZE = 120


# ---------------------------------------------------------------- P -> s, R, t
def P2sRt(P: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Official decomposition (3DDFA / SynergyNet): rows 1, 2 normalised, row 3 their cross product."""
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    t3d = P[:, 3].copy()
    R1, R2 = P[0, :3], P[1, :3]
    n1, n2 = np.linalg.norm(R1), np.linalg.norm(R2)
    s = (n1 + n2) / 2.0
    r1, r2 = R1 / n1, R2 / n2
    R = np.stack([r1, r2, np.cross(r1, r2)])
    return float(s), R, t3d


def matrix2angle_synergynet(R: np.ndarray) -> np.ndarray:
    """SynergyNet's matrix2angle, degrees, returned as [x, y, z] (labelled yaw, pitch, roll there)."""
    R = np.asarray(R, dtype=np.float64)
    x = math.asin(max(-1.0, min(1.0, R[2, 0])))
    c = math.cos(x)
    y = math.atan2(R[1, 2] / c, R[2, 2] / c)
    z = math.atan2(R[0, 1] / c, R[0, 0] / c)
    return np.degrees([x, y, z])


def matrix2angle_3ddfa_v2(R: np.ndarray) -> np.ndarray:
    """3DDFA-V2's matrix2angle, degrees, [yaw, pitch, roll] as that code labels them."""
    R = np.asarray(R, dtype=np.float64)
    if R[2, 0] > 0.998:
        z = 0.0
        x = math.pi / 2
        y = z + math.atan2(-R[0, 1], -R[0, 2])
    elif R[2, 0] < -0.998:
        z = 0.0
        x = -math.pi / 2
        y = -z + math.atan2(R[0, 1], R[0, 2])
    else:
        x = math.asin(R[2, 0])
        y = math.atan2(R[2, 1] / math.cos(x), R[2, 2] / math.cos(x))
        z = math.atan2(R[1, 0] / math.cos(x), R[0, 0] / math.cos(x))
    return np.degrees([x, y, z])


# ---------------------------------------------------------------- crop policies
def roi_box_from_bbox(bbox) -> np.ndarray:
    """3DDFA-V2 policy for a detector box [l, t, r, b]: side int(1.58 * mean(w, h)), centre 0.14 * size lower."""
    left, top, right, bottom = [float(v) for v in bbox[:4]]
    old_size = (right - left + bottom - top) / 2.0
    cx = right - (right - left) / 2.0
    cy = bottom - (bottom - top) / 2.0 + old_size * 0.14
    size = int(old_size * 1.58)
    sx, sy = cx - size / 2.0, cy - size / 2.0
    return np.array([sx, sy, sx + size, sy + size], dtype=np.float64)


def roi_box_from_landmarks(pts) -> np.ndarray:
    """3DDFA-V2 policy for tracking from the previous frame's landmarks, points as rows (N, 2+)."""
    pts = np.asarray(pts, dtype=np.float64)
    x0, y0 = pts[:, 0].min(), pts[:, 1].min()
    x1, y1 = pts[:, 0].max(), pts[:, 1].max()
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    radius = max(x1 - x0, y1 - y0) / 2.0
    llength = math.sqrt((2 * radius) ** 2 * 2)
    sx, sy = cx - llength / 2.0, cy - llength / 2.0
    return np.array([sx, sy, sx + llength, sy + llength], dtype=np.float64)


def scale_roi(roi_box, factor: float) -> np.ndarray:
    """A square box [sx, sy, ex, ey] scaled by ``factor`` about its centre."""
    r = np.asarray(roi_box[:4], dtype=np.float64)
    c, h = (r[:2] + r[2:]) / 2.0, (r[2:] - r[:2]) / 2.0 * float(factor)
    return np.concatenate([c - h, c + h])


# ---------------------------------------------------------------- crop transforms
def crop_affine(roi_box, size: int = STD_SIZE) -> np.ndarray:
    """2x3 affine image -> crop for cv2.warpAffine.

    It reproduces the official crop (cut the roi box, then cv2.resize INTER_LINEAR to size x size):
    crop pixel u samples image x = sx + (u + 0.5) * k - 0.5 with k = (ex - sx) / size.
    """
    sx, sy, ex, ey = [float(v) for v in roi_box[:4]]
    kx, ky = (ex - sx) / size, (ey - sy) / size
    # inverse: u = (x - sx + 0.5 - 0.5 k) / k
    return np.array([[1.0 / kx, 0.0, (-sx + 0.5 - 0.5 * kx) / kx],
                     [0.0, 1.0 / ky, (-sy + 0.5 - 0.5 * ky) / ky]], dtype=np.float64)


def warp_source_box(M: np.ndarray, size: int, shape) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the pixels of an image of ``shape`` that cv2.warpAffine(image, M,
    (size, size)) reads with bilinear interpolation (the output square's corners mapped back,
    one pixel of margin for the interpolation's neighbours), clipped to the image; empty (x1 <= x0
    or y1 <= y0) when the square lies outside it."""
    A = np.asarray(M, np.float64)[:, :2]
    Ai = np.linalg.inv(A)
    b = -Ai @ np.asarray(M, np.float64)[:, 2]
    c = np.array([[0.0, 0.0], [size, 0.0], [0.0, size], [size, size]]) @ Ai.T + b
    h, w = shape[:2]
    x0, y0 = (max(0, int(math.floor(v)) - 1) for v in c.min(axis=0))
    x1, y1 = (min(n, int(math.ceil(v)) + 2) for v, n in zip(c.max(axis=0), (w, h)))
    return x0, y0, x1, y1


def prefetch_rows(image: np.ndarray, box) -> None:
    """Reads one byte of every 64 (a cache line) of ``image``'s pixels in ``box`` (x0, y0, x1, y1),
    row by row in memory order. A warp of a frame that another thread decoded (not in this
    core's caches) reads its source lines in the warp's own order, which the CPU's prefetcher
    does not follow: the landmark model's 256 x 256 crop of expressions_d13's face took 0.99-1.10
    ms of CPU inside the pipeline, this read and the warp 0.74-0.91 ms (offline, on frames in
    memory: 1.18 vs 0.40 ms; docs/benchmarks.md section 20). The pixels are only read."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    region = image[y0:y1, x0:x1]
    region.reshape(y1 - y0, -1)[:, ::64].max()


def crop_to_image(points: np.ndarray, roi_box, size: int = STD_SIZE) -> np.ndarray:
    """Map model outputs (..., 3) in crop pixels to image pixels with the official formula."""
    sx, sy, ex, ey = [float(v) for v in roi_box[:4]]
    kx, ky = (ex - sx) / size, (ey - sy) / size
    out = np.array(points, dtype=np.float32, copy=True)
    out[..., 0] = out[..., 0] * kx + sx
    out[..., 1] = out[..., 1] * ky + sy
    out[..., 2] = out[..., 2] * ((kx + ky) / 2.0)
    return out


# ---------------------------------------------------------------- AFLW2000 Pose_Para convention
def rotation_from_pose_aflw(pitch: float, yaw: float, roll: float, degrees: bool = True) -> np.ndarray:
    """Rotation R of the model (rows as from P2sRt) for AFLW2000 ``Pose_Para`` angles.

    3DDFA's Matlab ``RotationMatrix(phi, gamma, theta) = Rx'(phi) @ Ry'(gamma) @ Rz'(theta)`` with
    Rx' = [1 0 0; 0 c s; 0 -s c], Ry' = [c 0 -s; 0 1 0; s 0 c], Rz' = [c s 0; -s c 0; 0 0 1]
    (each the transpose of the textbook rotation) and (phi, gamma, theta) = Pose_Para[0:3] =
    (pitch, yaw, roll). On the 8 shared AFLW2000-3D images the real 3DDFA-V2 x0.5 model's R (after
    P2sRt) is closest to exactly this matrix (Frobenius 0.04-0.27), not its transpose or a y-flipped
    variant (0.24-3.4): the networks were trained on parameters built this way in the model's y-up frame.
    """
    if degrees:
        pitch, yaw, roll = np.radians([pitch, yaw, roll])
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    cr, sr = math.cos(roll), math.sin(roll)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    ry = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])
    rz = np.array([[cr, sr, 0.0], [-sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return rx @ ry @ rz


def pose_aflw_deg(R: np.ndarray) -> np.ndarray:
    """[pitch, yaw, roll] in degrees, AFLW2000 ``Pose_Para`` convention, from the model rotation R.

    Exact inverse of :func:`rotation_from_pose_aflw`. Expanding Rx'(p) Ry'(y) Rz'(r):
    R[0] = [cy cr, cy sr, -sy], R[1, 2] = sp cy, R[2, 2] = cp cy, hence
    yaw = asin(-R[0,2]), pitch = atan2(R[1,2], R[2,2]), roll = atan2(R[0,1], R[0,0]).
    At the gimbal lock (|R[0,2]| > 1 - 1e-9, yaw within ~0.003 deg of +-90; atan2 needs no
    division by cos(yaw), so the regular formulas stay exact up to there) roll is set to 0 and pitch is read from
    R[1] = [sp sy, cp, sp cy]-style terms: pitch = atan2(-R[2,1], R[1,1]).

    Meaning (checked on the shared AFLW2000-3D images and with the BFM mean face in
    tests/test_geometry.py), for the person in the image:
    - yaw > 0: face turned towards the image's LEFT (the subject's right; image02420, +71 deg,
      profile facing left); yaw < 0: towards the image's right (image00251, -55 deg).
    - pitch > 0: looking UP, chin raised (image00430, +34 deg); pitch < 0: looking down (image02545, -31 deg).
    - roll > 0: head tilted clockwise as seen in the image (the image-right side of the face
      lower, i.e. towards the subject's left shoulder).
    Compared with 3DDFA-V2's ``matrix2angle`` (a Z-Y-X reading of the same matrix), yaw has the
    same sign and pitch/roll the opposite sign for small angles, but the values differ at large
    angles because the axis order differs (XYZ here): use this function for Pose_Para errors.
    """
    R = np.asarray(R, dtype=np.float64)
    sy = -R[0, 2]
    if abs(sy) > 1.0 - 1e-9:
        yaw = math.copysign(math.pi / 2, sy)
        roll = 0.0
        pitch = math.atan2(-R[2, 1], R[1, 1])
    else:
        yaw = math.asin(sy)
        pitch = math.atan2(R[1, 2], R[2, 2])
        roll = math.atan2(R[0, 1], R[0, 0])
    return np.degrees([pitch, yaw, roll])


# ---------------------------------------------------------------- horizontal-flip averaging
# iBUG 68-point layout: the index of each point's mirror image (the face's left <-> right): jaw
# 0-16 reversed, brows 17-21 <-> 26-22, nose bridge 27-30 kept, nostrils 31-35 reversed, eyes
# 36-41 <-> 45,44,43,42,47,46, outer lips 48-54 reversed and 55-59 reversed, inner lips 60-64
# reversed and 65-67 reversed.
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
                     + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])

# x -> -x in the model frame (the image's x axis): the rotation of a mirrored face is F R F
_FLIP_X = np.diag([-1.0, 1.0, 1.0])


def orthonormal(M: np.ndarray) -> np.ndarray:
    """The rotation nearest to M (Frobenius; SVD, determinant +1)."""
    u, _, vt = np.linalg.svd(np.asarray(M, dtype=np.float64))
    R = u @ vt
    if np.linalg.det(R) < 0:
        u[:, -1] *= -1
        R = u @ vt
    return R


def unflip_landmarks(lm_flipped: np.ndarray, size: int = STD_SIZE) -> np.ndarray:
    """68 points (68, 3) a model gave for a horizontally flipped crop, as points of the unflipped
    crop: x -> size - x (the official crop -> image mapping x * k + sx counts crop x from the
    crop's left edge, 0, to its right edge, size; 119 - x instead measured 0.04 % worse NME on the
    even-indexed AFLW2000-3D images) and each point renamed to its mirror (MIRROR_68)."""
    out = np.array(lm_flipped, dtype=np.float64)[MIRROR_68]
    out[:, 0] = size - out[:, 0]
    return out


def unflip_rotation(R_flipped: np.ndarray) -> np.ndarray:
    """The rotation of the unflipped face from the one a model gave for the flipped crop (F R F:
    yaw and roll change sign, pitch stays)."""
    return _FLIP_X @ np.asarray(R_flipped, dtype=np.float64) @ _FLIP_X


def flip_average(lm: np.ndarray, R: np.ndarray, lm_flipped: np.ndarray, R_flipped: np.ndarray,
                 size: int = STD_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal-flip test-time averaging of one face: the mean of the 68 points (crop pixels) of
    the crop and of its mirror image mapped back, and the rotation nearest to the mean of the two
    rotations. The model sees each face twice, as it was trained to see faces of either side."""
    lm_avg = (np.asarray(lm, dtype=np.float64) + unflip_landmarks(lm_flipped, size)) / 2.0
    R_avg = orthonormal(np.asarray(R, dtype=np.float64) + unflip_rotation(R_flipped))
    return lm_avg, R_avg


# ---------------------------------------------------------------- mesh decimation
def decimate_mesh(points: np.ndarray, triangles: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """A coarser mesh with about ``fraction`` of the vertices of (``points``, ``triangles``), by
    vertex clustering (Rossignac & Borrel 1993) on a cubic grid: the grid's cell is the one that
    leaves at most ``fraction`` x V clusters (bisection), each cluster is kept as its vertex
    nearest to the cluster's mean, and each triangle is re-pointed at the kept vertices; those
    that collapse (two corners in one cluster) are dropped, as are repeats of a corner set (the
    first keeps its winding). Returns (keep (V',) int64 indices into ``points``, ascending;
    triangles (T', 3) int32 indices into ``keep``). ``fraction`` >= 1: the mesh as it is."""
    pts = np.asarray(points, dtype=np.float64)[:, :3]
    tri = np.asarray(triangles, dtype=np.int64)
    n = len(pts)
    if fraction >= 1.0 or n == 0:
        return np.arange(n, dtype=np.int64), tri.astype(np.int32)
    if not fraction > 0.0:
        raise ValueError(f"fraction must be > 0, got {fraction}")
    lo_pt = pts.min(0)
    span = np.maximum(pts.max(0) - lo_pt, 1e-12)
    want = max(1, int(fraction * n))

    def labels(cell: float) -> np.ndarray:
        q = np.floor((pts - lo_pt) / cell).astype(np.int64)
        dims = q.max(0) + 1
        _, lab = np.unique((q[:, 2] * dims[1] + q[:, 1]) * dims[0] + q[:, 0], return_inverse=True)
        return lab.reshape(-1)

    # cell sizes from a millionth of the extent (every vertex alone) to twice it (one cluster)
    lo, hi = float(span.max()) * 1e-6, float(span.max()) * 2.0
    lab = labels(hi)
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        m = labels(mid)
        if m.max() + 1 > want:
            lo = mid
        else:
            hi, lab = mid, m
        if hi / lo < 1.001:
            break
    k = int(lab.max()) + 1
    count = np.bincount(lab, minlength=k).astype(np.float64)
    mean = np.stack([np.bincount(lab, pts[:, j], k) for j in range(3)], 1) / count[:, None]
    dist = ((pts - mean[lab]) ** 2).sum(1)
    order = np.lexsort((np.arange(n), dist, lab))       # per cluster: nearest first, ties by index
    first = order[np.r_[0, np.flatnonzero(np.diff(lab[order])) + 1]]
    keep = np.sort(first)
    new_index = np.empty(k, np.int64)
    new_index[lab[keep]] = np.arange(k)
    t = new_index[lab[tri]]
    t = t[(t[:, 0] != t[:, 1]) & (t[:, 1] != t[:, 2]) & (t[:, 0] != t[:, 2])]
    s = np.sort(t, axis=1)
    _, idx = np.unique((s[:, 0] * k + s[:, 1]) * k + s[:, 2], return_index=True)
    return keep, t[np.sort(idx)].astype(np.int32)
