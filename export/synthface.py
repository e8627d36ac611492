"""A built-in face crop for export verification: the BFM mean face, rendered and shaded.

Noise and gradient crops (convert.builtin_check_crops) are far from any face, where a network is
most sensitive to fp16 rounding, so an fp16 export can only be held to a loose bound on them. The
mean shape of the export's own BFM, rendered frontal at the scale and place of a 3DDFA-style
120x120 crop (Lambertian shading from a depth map of splatted vertices), is a face the networks
recognise: the real 3DDFA-V2 x0.5 model reads it as a frontal face (|yaw|, |pitch| < 4 deg) and its
fp16 export moves the landmarks by 0.09 px on it, like on real face crops (0.04-0.24 px), so it is
held to the fp16 tolerance for faces. Pure numpy + OpenCV, no I/O.
"""
from __future__ import annotations

import cv2
import numpy as np

SIZE = 120
# scale and translation of the model-space mean face in a 3DDFA-style crop (from the real 3DDFA-V2
# x0.5 output on a real face: s ~ 4.1e-4, t ~ (60, 73)); y is flipped into image rows below
_SCALE = 4.1e-4
_T = (60.5, 70.5)
_SKIN_BGR = (120.0, 150.0, 200.0)
_BACKGROUND_BGR = (70.0, 75.0, 85.0)
_LIGHT = (0.3, 0.4, 1.0)


def rendered_face_crop(mean_shape: np.ndarray, supersample: int = 4) -> np.ndarray:
    """uint8 (120,120,3) BGR crop of the mean face; ``mean_shape``: (V,3) or (3V,) model-space BFM."""
    u = np.asarray(mean_shape, dtype=np.float64).reshape(-1, 3)
    ss = int(supersample)
    w = SIZE * ss
    x = (_SCALE * u[:, 0] + _T[0] - 1.0) * ss
    y = (SIZE - (_SCALE * u[:, 1] + _T[1])) * ss
    z = _SCALE * u[:, 2] * ss
    xi, yi = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
    ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < w)
    depth = np.full((w, w), -np.inf)
    np.maximum.at(depth, (yi[ok], xi[ok]), z[ok])          # z-buffer: the nearest vertex per pixel
    hit = np.isfinite(depth)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    d = np.where(hit, depth, -1e9).astype(np.float32)
    d = np.where(hit, d, cv2.dilate(d, k))                  # close the gaps between splatted vertices
    face = cv2.erode(cv2.dilate(hit.astype(np.uint8), k), k).astype(bool)
    d = cv2.GaussianBlur(np.where(face, d, 0).astype(np.float32), (0, 0), 2)
    gy, gx = np.gradient(d)
    n = np.stack([-gx, gy, np.ones_like(d)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    light = np.asarray(_LIGHT) / np.linalg.norm(_LIGHT)
    shade = np.clip(n @ light, 0, 1) * 0.8 + 0.2
    img = np.empty((w, w, 3), np.float32)
    img[:] = _BACKGROUND_BGR
    img[face] = np.asarray(_SKIN_BGR, np.float32) * shade[face, None]
    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
