"""mediapipe face mesh (468 points) on a face crop: 68-point subset, eyes, mouth and head pose.

The mesh runs on one square crop per face (the same roi box the 3DMM uses), resized to
``CROP_SIZE`` by one affine warp, with mediapipe's bundled ``face_landmark_with_attention.tflite``
(``mediapipe.solutions.face_mesh`` with refine_landmarks=True, offline: 478 points, the first 468
being the standard mesh). The attention model's eyelids close: on expressions_d14 (eyes shut, frame
110) eye opening is 0.07 shut vs 0.34 open, where the plain face_landmark.tflite gives 0.15 vs 0.31
(its eyelids never meet, so a "closed = 20 % of open" rule would never fire); it costs ~1 ms more. One ``FaceMesh`` graph per tracked face (tracking
mode: it re-detects inside the crop only when it loses the face).

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
from typing import Optional

import cv2
import numpy as np

from app.core import geometry

CROP_SIZE = 256   # crop side fed to mediapipe (its landmark model works at 192x192 internally)

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


class FaceMesh:
    """One mediapipe face-mesh graph for one tracked face."""

    def __init__(self, static: bool = False, min_confidence: float = 0.5):
        import mediapipe as mp

        self._fm = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        self._buf = np.empty((CROP_SIZE, CROP_SIZE, 3), np.uint8)

    def __call__(self, image_bgr: np.ndarray, roi_box) -> Optional[np.ndarray]:
        """(478, 3) points in image pixels (z in the x scale, relative), or None when no face."""
        M = geometry.crop_affine(roi_box, CROP_SIZE)
        cv2.warpAffine(image_bgr, M, (CROP_SIZE, CROP_SIZE), dst=self._buf, flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT)
        rgb = cv2.cvtColor(self._buf, cv2.COLOR_BGR2RGB)
        res = self._fm.process(rgb)
        if not res.multi_face_landmarks:
            return None
        lms = res.multi_face_landmarks[0].landmark
        pts = np.array([(q.x, q.y, q.z) for q in lms], dtype=np.float64) * CROP_SIZE
        sx, sy, ex, ey = [float(v) for v in roi_box[:4]]
        k = (ex - sx) / CROP_SIZE
        # crop continuous coordinate u (pixel i spans [i, i+1)) -> image pixel index coordinate
        out = np.empty_like(pts, dtype=np.float32)
        out[:, 0] = pts[:, 0] * k + sx - 0.5
        out[:, 1] = pts[:, 1] * ((ey - sy) / CROP_SIZE) + sy - 0.5
        out[:, 2] = pts[:, 2] * k
        return out

    def close(self) -> None:
        try:
            self._fm.close()
        except Exception:
            pass
