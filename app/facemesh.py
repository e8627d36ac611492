"""MediaPipe face landmarks (478 points) on a face crop: 68-point subset, eyes, mouth, head pose, blendshapes.

The landmark model of the shipped face_landmarker.task (``face_landmarks_detector.tflite``, the
attention mesh with iris: 468 mesh points + 10 iris points) runs with LiteRT (``ai-edge-litert``)
on one square crop per face (the same roi box the 3DMM uses, turned by the face's roll), resized to
``CROP_SIZE`` by one affine warp; its blendshape model (``face_blendshapes.tflite``) runs on 146 of
the points. Running the bare models on the tracker's crops skips the Tasks FaceLandmarker's own
detector and ROI steps (docs/benchmarks.md section 10: 4.6 ms vs 9.9 ms per face, same crops, 2 threads).

- The dense overlay draws the 468 points with mediapipe's FACEMESH_TESSELATION edges
  (app.render, from ``FaceObservation.mesh_points``).
- 468 -> 68: the correspondence table of Peizhi Yan, "Mediapipe_2_Dlib_Landmarks"
  (github.com/PeizhiYan/Mediapipe_2_Dlib_Landmarks), where some iBUG points are the mean of two
  mesh points. Checked against the human 68-point annotations of shared/media/dlib_faces in
  tests/test_facemesh.py.
- Eyes: EAR-like opening = mean of two eyelid gaps / eye width (3D, so head turns matter less);
  ``eye_open = (left, right)`` is the subject's own left / right eye.
- Mouth: inner-lip gap (13-14) / inner mouth width (78-308).
- Head pose: the face's left-right axis is the sum of the vectors between 29 mirrored 68-point
  pairs; its up axis is the eyes-minus-mouth-corners vector, tilted back by the angle that vector
  makes in the Basel Face Model mean face (``BFM_EYE_MOUTH_TILT_DEG``, the frame AFLW2000-3D poses
  are given in). Mesh coordinates (x right, y down, z away) are turned into the 3DMM frame
  (x right, y up, z towards the camera) first, so R has the same meaning as the 3DMM's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from app.assets import task_member
from app.core import geometry
from app.core.types import FaceEstimate

LANDMARK_MODEL = "face_landmarks_detector.tflite"
BLENDSHAPE_MODEL = "face_blendshapes.tflite"

CROP_SIZE = 256   # the landmark model's input side

# The 146 of the 478 points the blendshape model reads, in its order (mediapipe
# tasks/cc/vision/face_landmarker/face_blendshapes_graph.cc, kLandmarksSubsetIdxs).
BLENDSHAPE_POINTS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66,
    67, 70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145,
    146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178,
    181, 185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291,
    293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356,
    361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397,
    398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477])
# The blendshape model's 52 output names, in order (same source, kBlendshapeNames).
BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight")


@dataclass
class MeshResult:
    points: np.ndarray                  # (478, 3) float32 image pixels: 468 mesh + 10 iris points
    presence: float                     # face presence probability of the crop (0..1)
    blendshapes: Optional[np.ndarray]   # (52,) float32 scores in BLENDSHAPE_NAMES order, or None
    eye_stats: Optional[np.ndarray] = None  # (2, 4) per eye (left, right): see eye_patch_stats

# iBUG-68 point i = mean of these face-mesh indices (Peizhi Yan's table, see module docstring)
MESH_TO_68: list[tuple[int, ...]] = [
    # jaw 0-16
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,),
    (365,), (397, 288), (361,), (323,), (454,), (356,),
    # right brow 17-21, left brow 22-26
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),
    # nose bridge 27-30, lower nose 31-35
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),
    # right eye 36-41, left eye 42-47
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),
    # outer lips 48-59
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),
    # inner lips 60-67
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),
]
_IDX_A = np.array([t[0] for t in MESH_TO_68])
_IDX_B = np.array([t[-1] for t in MESH_TO_68])

# eyes: (corner, corner, (upper, lower), (upper, lower)) mesh indices
RIGHT_EYE = (33, 133, (160, 144), (158, 153))   # subject's right eye (image left, frontal camera)
LEFT_EYE = (362, 263, (385, 380), (387, 373))
MOUTH = (78, 308, 13, 14)                        # inner corners, inner upper / lower lip

# mirrored iBUG pairs (image-left point, image-right point) on a frontal face
MIRROR_PAIRS = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [
    (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46), (31, 35), (32, 34),
    (48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)]

# Angle (deg) by which the vector (mean of the outer eye corners 36, 45) - (mean of the mouth
# corners 48, 54) leans back from the face's up axis in the Basel Face Model mean face
# (u_shp + u_exp of shared/bfm/3dmm_data at the 68 keypoints): atan2(v_z, v_y) = -10.04 deg
# (the eyes sit 1.19 model-cm behind the mouth corners). Recomputed from the BFM in
# tests/test_facemesh.py::test_bfm_tilt_constant.
BFM_EYE_MOUTH_TILT_DEG = -10.04


def to68(mesh: np.ndarray) -> np.ndarray:
    """(468+, D) face-mesh points -> (68, D) iBUG points."""
    return (mesh[_IDX_A] + mesh[_IDX_B]) * 0.5


def _d(p, a, b) -> float:
    return float(np.linalg.norm(p[a] - p[b]))


def eye_openness(mesh: np.ndarray) -> tuple[float, float]:
    """(left, right) eyelid gap / eye width of the subject's left / right eye (~0.25-0.35 open, < 0.1 shut)."""
    out = []
    for c0, c1, (u1, l1), (u2, l2) in (LEFT_EYE, RIGHT_EYE):
        w = _d(mesh, c0, c1)
        out.append((_d(mesh, u1, l1) + _d(mesh, u2, l2)) / (2.0 * w) if w > 1e-6 else float("nan"))
    return out[0], out[1]


# 16-point eye contours (subject's left, right) of the face mesh
EYE_CONTOUR = (
    (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398),
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
)
EYE_CORNER_PAIRS = ((362, 263), (133, 33))


def eye_patch_stats(gray: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(2, 4) per eye (left, right) [eye mean, eye spread, cheek mean, cheek spread] of the
    upright landmark crop ``gray`` (uint8) around ``pts`` (crop pixel coordinates): the eye patch
    is the eye contour's box (at least 0.5 eye widths tall, centred on the eye), the cheek patch
    the same columns 0.6-1.0 eye widths below the eye centre; mean = mean grey level, spread =
    95th - 5th percentile."""
    out = np.full((2, 4), np.nan)
    h, w = gray.shape[:2]
    c = pts[_CONTOUR_IDX, :2]                       # (2, 16, 2), both eyes at once
    d = pts[_CORNER_IDX[:, 1], :2] - pts[_CORNER_IDX[:, 0], :2]
    ew = np.sqrt((d * d).sum(axis=1)).tolist()
    lo, hi, mid = c.min(axis=1).tolist(), c.max(axis=1).tolist(), c.mean(axis=1).tolist()
    for e in (0, 1):
        if not ew[e] > 2:
            continue
        cy = mid[e][1]
        x0, x1 = int(max(0, lo[e][0])), int(min(w, hi[e][0] + 1))
        half = max(0.25 * ew[e], 0.5 * (hi[e][1] - lo[e][1]))
        y0, y1 = int(max(0, cy - half)), int(min(h, cy + half + 1))
        s0, s1 = int(max(0, cy + 0.6 * ew[e])), int(min(h, cy + 1.0 * ew[e] + 1))
        if x1 - x0 < 2 or y1 - y0 < 2 or s1 - s0 < 2:
            continue
        out[e, :2] = _mean_spread(gray[y0:y1, x0:x1])
        out[e, 2:] = _mean_spread(gray[s0:s1, x0:x1])
    return out


_CONTOUR_IDX = np.array(EYE_CONTOUR)
_CORNER_IDX = np.array(EYE_CORNER_PAIRS)
_LEVELS = np.arange(256, dtype=np.float64)


def _mean_spread(patch: np.ndarray) -> tuple[float, float]:
    """(mean, 95th - 5th percentile) of a uint8 patch, from its histogram: the percentiles with
    numpy's default linear interpolation (the k-th sorted value is the first level whose
    cumulative count exceeds k), exactly np.percentile's, at a fraction of its cost (4 calls of
    np.percentile took 0.28 ms per face)."""
    h = np.bincount(patch.ravel(), minlength=256)
    n = patch.size
    c = np.cumsum(h)
    ks = []
    for q in (0.05, 0.95):
        pos = (n - 1) * q
        i = int(pos)
        ks += [i, min(i + 1, n - 1)]
    v = np.searchsorted(c, np.array(ks), side="right").astype(np.float64)
    f5, f95 = (n - 1) * 0.05 % 1.0, (n - 1) * 0.95 % 1.0
    p5 = v[0] + (v[1] - v[0]) * f5
    p95 = v[2] + (v[3] - v[2]) * f95
    return float(h @ _LEVELS) / n, p95 - p5


# An eye is visible when its patch's grey-level spread (95th - 5th percentile) is at least this
# fraction of the cheek's mean grey level below it (eye_patch_stats): an open eye (sclera, iris,
# lashes) or a closed one (lash line, lid crease) has structure, a dark lens, a cap brim or a hand
# has little. Measured with python -m app.eval.eye_visibility_eval (docs/driver-monitoring.md,
# "Eye availability"): visible eyes of the shared clips read 0.23-1.04 (labelled closed frames of
# d0 / d14: 0.49-0.68), painted sunglasses (93 % opaque) 0.04-0.08, a cap brim 0.00-0.01 (p95).
# 0.15 sits between. [measured]
EYE_MIN_SPREAD = 0.15
# An eye patch brighter on average than the cheek below it is washed out (glare on glasses, a
# reflection): unavailable too. Its structure can stay high (a white blob edged by lashes and
# the frame: spread 0.45-0.80 on painted glare), and the landmark model reads such an eye as
# closed (painted glare on d13 gave a false eyes_closed critical and an unresponsive event).
# Eye mean / cheek mean: visible eyes of the shared clips 0.26-0.83 (labelled closed frames
# 0.66-0.83), painted glare 1.16-1.64. [measured]
EYE_MAX_BRIGHTNESS = 1.0
# Below this mean grey level (0-255) of the cheek patch the crop is too dark to tell an eye from
# a shadow: the eye is unavailable, "too_dark". The darkest cheek of the shared clips reads 75
# (d3); a dark, noisy night-time version of d13 (x0.3, noise sd 4) ~41-51 (its cheeks 138-171 x 0.3). [MINE, measured]
EYE_DARK_LEVEL = 15.0


def eye_visibility(stats: np.ndarray) -> tuple[tuple[float, float], tuple, Optional[str]]:
    """From eye_patch_stats: (spread / cheek mean per eye, available per eye (True / False / None
    when not measured), why ("occluded" / "too_dark" / None)). Unavailable: the cheek darker
    than EYE_DARK_LEVEL ("too_dark"), the spread below EYE_MIN_SPREAD (a lens, a brim, a hand) or
    the eye patch brighter than EYE_MAX_BRIGHTNESS x the cheek (glare) ("occluded")."""
    vis, avail, why = [], [], None
    for e in (0, 1):
        m, sp, cm, _ = (float(v) for v in stats[e])
        if not (math.isfinite(m) and math.isfinite(cm)):
            vis.append(math.nan)
            avail.append(None)
            continue
        v = sp / max(cm, 1.0)
        vis.append(v)
        if cm < EYE_DARK_LEVEL:
            avail.append(False)
            why = "too_dark"
        elif v < EYE_MIN_SPREAD or m > EYE_MAX_BRIGHTNESS * cm:
            avail.append(False)
            why = why or "occluded"
        else:
            avail.append(True)
    return (vis[0], vis[1]), (avail[0], avail[1]), why


def mouth_openness(mesh: np.ndarray) -> float:
    c0, c1, up, lo = MOUTH
    w = _d(mesh, c0, c1)
    return _d(mesh, up, lo) / w if w > 1e-6 else float("nan")


def head_rotation(lm68_image: np.ndarray, tilt_deg: float = BFM_EYE_MOUTH_TILT_DEG) -> np.ndarray:
    """3x3 R (columns = the face's x right, y up, z forward axes in the 3DMM camera frame) from
    68 points in image pixels (x right, y down, z away from the camera, same scale as x)."""
    p = np.asarray(lm68_image, dtype=np.float64)[:, :3] * np.array([1.0, -1.0, -1.0])
    xa = np.zeros(3)
    for i, j in MIRROR_PAIRS:
        xa += p[j] - p[i]
    xa /= np.linalg.norm(xa)
    v = (p[36] + p[45]) / 2.0 - (p[48] + p[54]) / 2.0
    ya0 = v - xa * float(v @ xa)
    ya0 /= np.linalg.norm(ya0)
    za0 = np.cross(xa, ya0)
    th = math.radians(-tilt_deg)   # v leans back by |tilt|: rotate forward to the face's up axis
    ya = math.cos(th) * ya0 + math.sin(th) * za0
    za = np.cross(xa, ya)
    return np.stack([xa, ya, za], axis=1)


class MeshLandmarker:
    """The 478-point landmark model and the blendshape model of the shipped face_landmarker.task,
    run with LiteRT on one square crop per face (the tracker's roi box, turned by the face's roll
    so that the eyes are level, as mediapipe's own landmark ROI is). Stateless: one instance serves
    every face; the caller keeps each face's roll (``roll_of``) for its next crop.

    The landmark model takes 256x256 RGB in [0, 1] (the range mediapipe's image-to-tensor step
    uses for it; checked against the Tasks FaceLandmarker on the same crop in tests) and gives 478
    points (x, y in crop pixels, z in the x scale) and a face-presence logit. The blendshape model
    takes 146 of the points (x, y; it normalises position and scale itself) and gives 52 scores.
    """

    def __init__(self, threads: int = 2, blendshapes: bool = True, min_presence: float = 0.5):
        from ai_edge_litert.interpreter import Interpreter

        self._lm = Interpreter(model_content=task_member(LANDMARK_MODEL), num_threads=max(1, int(threads)))
        self._lm.allocate_tensors()
        self._lm_in = self._lm.get_input_details()[0]["index"]
        outs = self._lm.get_output_details()
        self._lm_pts = next(d["index"] for d in outs if int(np.prod(d["shape"])) == 478 * 3)
        self._lm_score = next(d["index"] for d in outs if list(d["shape"]) == [1, 1, 1, 1])
        self._bs = None
        if blendshapes:
            self._bs = Interpreter(model_content=task_member(BLENDSHAPE_MODEL), num_threads=1)
            self._bs.allocate_tensors()
            self._bs_in = self._bs.get_input_details()[0]["index"]
            self._bs_out = self._bs.get_output_details()[0]["index"]
        # presence logit threshold: sigmoid(logit) >= min_presence
        self._min_logit = math.log(min_presence / (1.0 - min_presence))
        self._buf = np.empty((CROP_SIZE, CROP_SIZE, 3), np.uint8)
        self._rgb = np.empty((CROP_SIZE, CROP_SIZE, 3), np.uint8)
        self._gray = np.empty((CROP_SIZE, CROP_SIZE), np.uint8)
        self.visibility_s = 0.0   # seconds spent in the eye-visibility measure (the caller resets it)

    def __call__(self, image_bgr: np.ndarray, roi_box, roll: float = 0.0, retry: bool = True,
                 blendshapes: bool = True) -> Optional[MeshResult]:
        """Points in image pixels (z in the x scale, relative) and blendshapes, or None when the
        crop holds no face. ``roll``: radians the face is turned in the image (``roll_of``).
        ``blendshapes=False``: the blendshape model does not run (MeshResult.blendshapes None).
        A crop the model rejects is tried once more on the box of the points it gave (``retry``):
        a detector box a little off the face (portrait_large.jpg's middle face: presence 0.016 on
        its first crop) is then found (0.999), at the cost of a second run only on misses."""
        M = crop_affine_rotated(roi_box, roll, CROP_SIZE)
        # the frame was decoded on another thread: its face region is read in memory order first,
        # which the warp then finds in the caches (geometry.prefetch_rows)
        geometry.prefetch_rows(image_bgr, geometry.warp_source_box(M, CROP_SIZE, image_bgr.shape))
        cv2.warpAffine(image_bgr, M, (CROP_SIZE, CROP_SIZE), dst=self._buf, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT)
        # BGR -> RGB, then to [0, 1] floats (5x faster than one multiply through a reversed view)
        cv2.cvtColor(self._buf, cv2.COLOR_BGR2RGB, dst=self._rgb)
        # written straight into the model's input tensor (set_tensor would copy its 786 KB again);
        # the view is dropped before invoke, which refuses to run while one is held
        x = self._lm.tensor(self._lm_in)()
        np.multiply(self._rgb, np.float32(1.0 / 255.0), out=x[0], casting="unsafe")
        del x
        self._lm.invoke()
        logit = float(self._lm.get_tensor(self._lm_score).ravel()[0])
        pts = self._lm.get_tensor(self._lm_pts).reshape(478, 3).astype(np.float64)
        # crop -> image: invert the 2x3 affine
        A = M[:, :2]
        Ai = np.linalg.inv(A)
        out = np.empty((478, 3), np.float32)
        # the model's x, y are continuous crop coordinates (pixel i spans [i, i+1)): - 0.5 -> pixel index
        out[:, :2] = (pts[:, :2] - 0.5 - M[:, 2]) @ Ai.T
        out[:, 2] = pts[:, 2] / math.sqrt(abs(np.linalg.det(A)))
        if not logit >= self._min_logit:
            if retry and np.all(np.isfinite(out)):
                return self(image_bgr, *mesh_crop(out), retry=False, blendshapes=blendshapes)
            return None
        bs = None
        if self._bs is not None and blendshapes:
            self._bs.set_tensor(self._bs_in, pts[None, BLENDSHAPE_POINTS, :2].astype(np.float32))
            self._bs.invoke()
            bs = self._bs.get_tensor(self._bs_out).ravel().astype(np.float32).copy()
        tv = time.perf_counter()
        cv2.cvtColor(self._buf, cv2.COLOR_BGR2GRAY, dst=self._gray)
        stats = eye_patch_stats(self._gray, pts[:, :2] - 0.5)
        self.visibility_s += time.perf_counter() - tv
        return MeshResult(points=out, presence=1.0 / (1.0 + math.exp(-logit)), blendshapes=bs, eye_stats=stats)

    def close(self) -> None:
        self._lm = self._bs = None


def crop_affine_rotated(roi_box, roll: float, size: int = CROP_SIZE) -> np.ndarray:
    """2x3 affine image -> crop: the square roi box (centre and side), turned by ``roll`` radians
    about its centre so that a face rolled by ``roll`` comes out upright. roll = 0 is exactly
    geometry.crop_affine."""
    if roll == 0.0:
        return geometry.crop_affine(roi_box, size)
    sx, sy, ex, ey = [float(v) for v in roi_box[:4]]
    k = (ex - sx) / size                       # image pixels per crop pixel
    cx, cy = (sx + ex) / 2.0, (sy + ey) / 2.0  # continuous centre
    c, s = math.cos(roll), math.sin(roll)
    # crop pixel u (centre at u + 0.5) <- image point c + R(roll) (u + 0.5 - size/2) k, minus the
    # half-pixel of image pixel centres; inverted here for warpAffine
    A = np.array([[c, s], [-s, c]]) / k
    b = np.array([size / 2.0 - 0.5, size / 2.0 - 0.5]) - A @ np.array([cx - 0.5, cy - 0.5])
    return np.hstack([A, b[:, None]])


# side of the square landmark crop / the longer side of the face's rotated point box: the 1.5 of
# mediapipe's face_landmarks_to_roi (RectTransformationCalculator scale_x = scale_y = 1.5, square_long)
MESH_ROI_SCALE = 1.5


def mesh_crop(points: np.ndarray) -> tuple[np.ndarray, float]:
    """(square box [sx, sy, ex, ey], roll) for the next frame's landmark crop from this frame's
    478 points: the points' box in the face's own rolled frame, centred, scaled by MESH_ROI_SCALE."""
    roll = roll_of(points)
    c, s = math.cos(roll), math.sin(roll)
    p = np.asarray(points[:, :2], np.float64)
    u = p @ np.array([[c, -s], [s, c]])            # into the face frame (turned by -roll)
    lo, hi = u.min(axis=0), u.max(axis=0)
    mid = (lo + hi) / 2.0
    centre = np.array([mid[0] * c - mid[1] * s, mid[0] * s + mid[1] * c])   # back to the image
    half = MESH_ROI_SCALE * float(max(hi - lo)) / 2.0
    return np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half]), roll


def mesh_box_from_detection(box) -> np.ndarray:
    """Square landmark crop for a face the landmark model has not seen yet: centred on the detector
    box, MESH_ROI_SCALE x its longer side (mediapipe's detection-to-ROI rule). The 3DDFA-V2 crop of
    the same box (1.58 x, shifted 0.14 down) leaves the forehead out: on talking_head_720p frame 0
    the model's face presence is 0.18 there vs 0.99998 on this box."""
    x0, y0, x1, y1 = [float(v) for v in box[:4]]
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    half = MESH_ROI_SCALE * max(x1 - x0, y1 - y0) / 2.0
    return np.array([cx - half, cy - half, cx + half, cy + half])


def roll_of(points: np.ndarray) -> float:
    """Radians the face is rolled in the image: the angle of the line from the subject's right
    outer eye corner (33) to the left one (263), 0 when level (mediapipe's landmark ROI rule)."""
    d = points[263, :2] - points[33, :2]
    return float(math.atan2(float(d[1]), float(d[0])))


class MeshBackend:
    """The FaceBackend of the landmark model: per face, the 478 points, eyes, mouth, blendshapes,
    and (from the points) 68 landmarks and a head rotation, so that it can also be the only model."""

    name = "mediapipe_face_mesh"
    provider = "mediapipe LiteRT CPU"
    triangles = None

    def __init__(self, threads: int = 2, blendshapes: bool = True):
        self.landmarker = MeshLandmarker(threads=threads, blendshapes=blendshapes)

    def estimate(self, image_bgr: np.ndarray, crops, vertices: bool = True,
                 blendshapes: bool = True, pose: bool = True) -> tuple[list[Optional[FaceEstimate]], dict]:
        """Per face, on the box from its previous points when it has one (mediapipe's tracking
        ROI), else on the tracker's roi box. (``vertices``: this model has no dense mesh beyond
        its 478 points, which it always gives; ``blendshapes=False``: no blendshape scores;
        ``pose=False``: no 68 landmarks, head rotation nor angles, for a caller that takes them from
        a 3DMM and only the eyes, mouth and points from here: 0.25 ms per face.)"""
        t0 = time.perf_counter()
        self.landmarker.visibility_s = 0.0
        out = []
        for c in crops:
            r = self.landmarker(image_bgr, c.roi if c.mesh_box is None else c.mesh_box, c.roll,
                                blendshapes=blendshapes)
            out.append(None if r is None else estimate_from_mesh(r, pose=pose))
        vis_ms = self.landmarker.visibility_s * 1e3
        # "eye vis": the eye-visibility measure (eye_patch_stats), a part of mesh/eyes
        return out, {"mesh/eyes": (time.perf_counter() - t0) * 1e3, "eye vis": vis_ms}

    def close(self) -> None:
        self.landmarker.close()


def estimate_from_mesh(r: MeshResult, pose: bool = True) -> FaceEstimate:
    """The FaceEstimate of one face's points; ``pose=False``: without the 68 landmarks, the head
    rotation and its angles (None / NaN)."""
    pts = r.points
    lm = R = None
    pitch = yaw = roll = math.nan
    if pose:
        lm = to68(pts)
        R = head_rotation(lm)
        pitch, yaw, roll = [float(v) for v in geometry.pose_aflw_deg(R)]
    bs = None if r.blendshapes is None else dict(zip(BLENDSHAPE_NAMES, map(float, r.blendshapes)))
    eye_open = eye_openness(pts)
    vis, avail, why = (((math.nan, math.nan), (None, None), None) if r.eye_stats is None
                       else eye_visibility(r.eye_stats))
    # an eye that is not seen has no openness (nor, from it, a gaze): unknown, not a guess
    eye_open = tuple(math.nan if a is False else v for v, a in zip(eye_open, avail))
    return FaceEstimate(landmarks=lm, rotation=R, yaw=yaw, pitch=pitch, roll=roll, mesh_points=pts,
                        eye_open=eye_open, mouth_open=mouth_openness(pts), blendshapes=bs,
                        eye_visibility=vis, eye_available=avail, eye_unavailable_why=why)
