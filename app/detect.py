"""Face detection: BlazeFace short range, the ``face_detector.tflite`` of the shipped
face_landmarker.task, run with LiteRT (``ai-edge-litert``) and decoded here as mediapipe's
face detector graph does (SSD anchors, sigmoid scores, weighted non-maximum suppression).

The model bytes come from the bundle; nothing is downloaded. The bundle holds only the short-range
model (faces within ~2 m of the camera, what a driver-facing camera sees): there is no full-range
option. mediapipe's Tasks ``FaceDetector`` runs the same model, but its Python wrapper deadlocks
when an unclosed detector is garbage-collected during another Tasks call (its serial dispatcher
re-enters its own thread pool), so the app runs the model itself; tests/test_detect.py holds the
boxes to the Tasks detector's on the shared photos.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from app.assets import task_member

log = logging.getLogger(__name__)

DETECTOR_MODEL = "face_detector.tflite"
INPUT_SIZE = 128
# mediapipe face_detection_short_range.pbtxt: SsdAnchorsCalculator (4 layers, strides 8, 16, 16,
# 16, anchor offset 0.5, fixed anchor size, 2 anchors per cell and layer) and
# TensorsToDetectionsCalculator (16 coords: box cx, cy, w, h + 6 keypoints, scale 128, sigmoid
# scores clipped at +-100), NonMaxSuppression (weighted, IoU 0.3)
STRIDES = (8, 16, 16, 16)
SCORE_CLIP = 100.0
NMS_IOU = 0.3


@dataclass
class Detection:
    box: np.ndarray   # (4,) float64 x0, y0, x1, y1 in image pixels
    score: float


def iou(a, b) -> float:
    ax0, ay0, ax1, ay1 = [float(v) for v in a[:4]]
    bx0, by0, bx1, by1 = [float(v) for v in b[:4]]
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def ssd_anchors(size: int = INPUT_SIZE, strides=STRIDES) -> np.ndarray:
    """(896, 2) anchor centres in [0, 1] (x, y), in the model's output order: layers of the same
    stride share one grid, 2 anchors per layer at each cell."""
    out, i = [], 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        n = (j - i) * 2
        g = int(np.ceil(size / strides[i]))
        ys, xs = np.mgrid[0:g, 0:g]
        c = np.stack([(xs + 0.5) / g, (ys + 0.5) / g], axis=-1).reshape(-1, 1, 2)
        out.append(np.repeat(c, n, axis=1).reshape(-1, 2))
        i = j
    return np.concatenate(out)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, thr: float = NMS_IOU) -> list[tuple[np.ndarray, float]]:
    """mediapipe's weighted NMS: the best remaining box and every box overlapping it by more than
    ``thr`` IoU are merged (score-weighted mean); the best score is kept."""
    order = list(np.argsort(-scores))
    out = []
    while order:
        best = order[0]
        b = boxes[best]
        ov = np.array([iou(b, boxes[k]) for k in order])
        group = [k for k, o in zip(order, ov) if o > thr]
        w = scores[group]
        out.append(((boxes[group] * w[:, None]).sum(0) / w.sum(), float(scores[best])))
        order = [k for k, o in zip(order, ov) if o <= thr]
    return out


class FaceDetector:
    """BlazeFace on a BGR frame -> list of Detection, highest score first."""

    name = "blazeface_short"

    def __init__(self, min_confidence: float = 0.5, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.min_confidence = float(min_confidence)
        self._it = Interpreter(model_content=task_member(DETECTOR_MODEL), num_threads=max(1, int(threads)))
        self._it.allocate_tensors()
        self._in = self._it.get_input_details()[0]["index"]
        outs = {tuple(d["shape"][-1:]): d["index"] for d in self._it.get_output_details()}
        self._reg, self._cls = outs[(16,)], outs[(1,)]
        self._anchors = ssd_anchors()
        self._x = np.empty((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)

    def __call__(self, image_bgr: np.ndarray, max_faces: int = 0) -> list[Detection]:
        h, w = image_bgr.shape[:2]
        # letterbox into 128 x 128 (aspect kept, centred, black borders), RGB in [-1, 1]
        k = INPUT_SIZE / max(h, w)
        nw, nh = max(1, round(w * k)), max(1, round(h * k))
        px, py = (INPUT_SIZE - nw) / 2.0, (INPUT_SIZE - nh) / 2.0
        # mediapipe's image-to-tensor mapping (corner to corner, no half-pixel shift): letterbox
        # pixel = k * image pixel + pad. The model is sensitive to where the 10x-subsampling warp
        # samples: the half-pixel-centred mapping gives a 4 % larger, 11 px shifted box on
        # talking_head_720p frame 0, this one the Tasks detector's box within 2 px
        M = np.array([[k, 0.0, px], [0.0, k, py]])
        lb = cv2.warpAffine(image_bgr, M, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
        np.multiply(lb[None, :, :, ::-1], 1.0 / 127.5, out=self._x, casting="unsafe")
        self._x -= 1.0
        self._it.set_tensor(self._in, self._x)
        self._it.invoke()
        raw = self._it.get_tensor(self._reg)[0]
        logit = np.clip(self._it.get_tensor(self._cls)[0, :, 0], -SCORE_CLIP, SCORE_CLIP)
        score = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
        keep = np.nonzero(score >= self.min_confidence)[0]
        if not len(keep):
            return []
        a = self._anchors[keep]
        r = raw[keep, :4] / INPUT_SIZE
        cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
        bw, bh = r[:, 2], r[:, 3]
        # letterboxed [0, 1] -> image pixels (continuous coordinates, as mediapipe's relative boxes)
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1) * INPUT_SIZE
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - px) / k
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - py) / k
        out = []
        for box, s in weighted_nms(boxes.astype(np.float64), score[keep].astype(np.float64)):
            # keep boxes that touch the image (BlazeFace may extend a box past the border)
            if box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h or box[2] <= box[0] or box[3] <= box[1]:
                continue
            out.append(Detection(box=box, score=s))
        out.sort(key=lambda d: -d.score)
        return out[:max_faces] if max_faces else out

    def close(self) -> None:
        self._it = None
