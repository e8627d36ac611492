"""Face detection with mediapipe's bundled BlazeFace models (no download).

``mediapipe.solutions.face_detection.FaceDetection(model_selection=0|1)`` loads
``mediapipe/modules/face_detection/face_detection_short_range.tflite`` (faces within ~2 m) or
``face_detection_full_range_sparse.tflite`` (~5 m) from the installed wheel, offline.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

MODEL_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range_sparse.tflite"}


@dataclass
class Detection:
    box: np.ndarray   # (4,) float64 x0, y0, x1, y1 in image pixels
    score: float


def model_path(kind: str) -> str:
    """The .tflite file mediapipe loads for ``kind`` (short | full), checked to exist."""
    import mediapipe as mp

    p = os.path.join(os.path.dirname(mp.__file__), "modules", "face_detection", MODEL_FILES[kind])
    if not os.path.isfile(p):
        raise RuntimeError(f"mediapipe's bundled face detector {p} is missing: reinstall mediapipe==0.10.21")
    return p


def iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = [float(v) for v in a[:4]]
    bx0, by0, bx1, by1 = [float(v) for v in b[:4]]
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


class FaceDetector:
    """BlazeFace on a BGR frame -> list of Detection, highest score first."""

    def __init__(self, kind: str = "short", min_confidence: float = 0.5):
        if kind not in MODEL_FILES:
            raise ValueError(f"detector must be one of {sorted(MODEL_FILES)}, got {kind!r}")
        import mediapipe as mp

        self.kind = kind
        self.path = model_path(kind)
        self._fd = mp.solutions.face_detection.FaceDetection(
            model_selection=0 if kind == "short" else 1, min_detection_confidence=float(min_confidence))
        self.name = f"blazeface_{kind}"

    def __call__(self, image_bgr: np.ndarray, max_faces: int = 0) -> list[Detection]:
        h, w = image_bgr.shape[:2]
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        res = self._fd.process(rgb)
        out = []
        for d in res.detections or []:
            rb = d.location_data.relative_bounding_box
            x0, y0 = rb.xmin * w, rb.ymin * h
            box = np.array([x0, y0, x0 + rb.width * w, y0 + rb.height * h], dtype=np.float64)
            # keep boxes that touch the image (BlazeFace may extend a box past the border)
            if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h or rb.width <= 0 or rb.height <= 0:
                continue
            out.append(Detection(box=box, score=float(d.score[0]) if d.score else float("nan")))
        out.sort(key=lambda d: -d.score)
        return out[:max_faces] if max_faces else out

    def close(self) -> None:
        try:
            self._fd.close()
        except Exception:  # mediapipe raises when closed twice
            pass
