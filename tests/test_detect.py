"""BlazeFace detection (mediapipe's bundled models) on real photos, and the IoU used for tracking."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from app.detect import FaceDetector, iou, model_path
from tests.conftest import shared


def test_bundled_models_exist():
    for kind in ("short", "full"):
        p = model_path(kind)
        assert os.path.getsize(p) > 100_000, p


@pytest.mark.parametrize("kind", ["short", "full"])
def test_two_faces(kind):
    img = cv2.imread(str(shared("media", "two_faces.jpg")))
    det = FaceDetector(kind)
    faces = det(img)
    det.close()
    assert len(faces) == 2
    h, w = img.shape[:2]
    xs = sorted((f.box[0] + f.box[2]) / 2 for f in faces)
    # one person in each half of the photo (checked by eye: faces at x ~ 0.2 w and ~ 0.73 w)
    assert xs[0] < w / 2 < xs[1]
    for f in faces:
        bw, bh = f.box[2] - f.box[0], f.box[3] - f.box[1]
        assert f.score > 0.8
        assert 0.1 * w < bw < 0.3 * w and 0.25 * h < bh < 0.5 * h


def test_max_faces_keeps_best():
    img = cv2.imread(str(shared("media", "two_faces.jpg")))
    det = FaceDetector("short")
    both = det(img)
    one = det(img, max_faces=1)
    assert len(one) == 1 and one[0].score == max(f.score for f in both)


def test_box_inside_annotated_face():
    """The detector box on a portrait contains the annotated landmarks' centre (official fixture box)."""
    img = cv2.imread(str(shared("media", "portrait_glasses.jpg")))
    ref = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))["face_box"]
    faces = FaceDetector("short")(img)
    assert len(faces) == 1
    assert iou(faces[0].box, ref) > 0.5


def test_blank_image_no_face():
    assert FaceDetector("short")(np.zeros((240, 320, 3), np.uint8)) == []


def test_iou():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(1.0)
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0
