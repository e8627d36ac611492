"""BlazeFace detection (the shipped face_landmarker.task's detector, mediapipe Tasks) on real photos,
and the IoU used for tracking."""
from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from app import assets
from app.detect import DETECTOR_MODEL, FaceDetector, iou
from tests.conftest import shared


def test_shipped_bundle_is_the_official_one():
    """The shipped face_landmarker.task has the official bytes (sha256 of ../shared's SHA256SUMS)."""
    data = assets.FACE_LANDMARKER_TASK.read_bytes()
    assert hashlib.sha256(data).hexdigest() == assets.FACE_LANDMARKER_SHA256
    sums = shared("models", "mediapipe", "SHA256SUMS").read_text().split()
    assert sums[sums.index("face_landmarker.task") - 1] == assets.FACE_LANDMARKER_SHA256
    assert len(assets.task_member(DETECTOR_MODEL)) > 100_000


def test_missing_bundle_is_one_clear_error(tmp_path):
    with pytest.raises(assets.AssetError, match="missing"):
        assets.task_member(DETECTOR_MODEL, str(tmp_path / "none.task"))
    bad = tmp_path / "bad.task"
    bad.write_bytes(b"not a zip")
    with pytest.raises(assets.AssetError, match="unreadable"):
        assets.task_member(DETECTOR_MODEL, str(bad))


def test_two_faces():
    img = cv2.imread(str(shared("media", "two_faces.jpg")))
    det = FaceDetector()
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
    det = FaceDetector()
    both = det(img)
    one = det(img, max_faces=1)
    assert len(one) == 1 and one[0].score == max(f.score for f in both)


def test_box_inside_annotated_face():
    """The detector box on a portrait contains the annotated landmarks' centre (official fixture box)."""
    img = cv2.imread(str(shared("media", "portrait_glasses.jpg")))
    ref = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))["face_box"]
    faces = FaceDetector()(img)
    assert len(faces) == 1
    assert iou(faces[0].box, ref) > 0.5


def test_blank_image_no_face():
    assert FaceDetector()(np.zeros((240, 320, 3), np.uint8)) == []


def test_iou():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(1.0)
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0


@pytest.mark.parametrize("name", ["portrait_glasses.jpg", "two_faces.jpg", "aflw2000/image00050.jpg",
                                  "aflw2000/image00251.jpg"])
def test_boxes_match_mediapipe_tasks_detector(name):
    """The app's decoding of face_detector.tflite gives the boxes of mediapipe's own Tasks
    FaceDetector on the same model: measured IoU 0.94-0.99 (two_faces 0.94 / 0.96), scores within 0.02."""
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import BaseOptions, vision

    img = cv2.imread(str(shared("media", name)))
    ref_det = vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_buffer=assets.task_member(DETECTOR_MODEL))))
    try:
        r = ref_det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=cv2.cvtColor(img, cv2.COLOR_BGR2RGB)))
    finally:
        ref_det.close()   # closed here: a Tasks object collected later can deadlock its dispatcher
    ref = [(np.array([d.bounding_box.origin_x, d.bounding_box.origin_y, d.bounding_box.origin_x + d.bounding_box.width,
                      d.bounding_box.origin_y + d.bounding_box.height], float), d.categories[0].score)
           for d in r.detections]
    got = FaceDetector()(img)
    assert len(got) == len(ref) >= 1
    for g in got:
        j = int(np.argmax([iou(g.box, b) for b, _ in ref]))
        assert iou(g.box, ref[j][0]) > 0.9
        assert abs(g.score - ref[j][1]) < 0.03
