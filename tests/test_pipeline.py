"""Pipeline on real data: tracking, official-crop parity, batching, pose vs AFLW2000, smoothing."""
from __future__ import annotations

import math
import os

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import scipy.io as sio

from app.core import geometry
from app.core.types import Frame
from app.io.capture import open_source
from app.pipeline import MESH_MODEL_NAME, Pipeline
from app.render import draw_result
from app.settings import MESH_MODEL, Settings
from tests.conftest import shared

CLIP = ("media", "talking_head_720p.mp4")


def official_crop(img, roi, size=120):
    """3DDFA-V2's crop_img (roi rounded, zero padding outside the image) + cv2.resize."""
    h, w = img.shape[:2]
    sx, sy, ex, ey = [int(round(v)) for v in roi[:4]]
    out = np.zeros((ey - sy, ex - sx, 3), np.uint8)
    x0, y0, x1, y1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    out[y0 - sy:y1 - sy, x0 - sx:x1 - sx] = img[y0:y1, x0:x1]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_LINEAR)


def clip_frames():
    src = open_source(str(shared(*CLIP)))
    frames = list(src)
    assert len(frames) == 55
    return frames


@pytest.fixture(scope="module")
def onnx_run(tddfa_onnx):
    """The clip through the pipeline with the real 3DDFA-V2 x0.5 model, smoothing off."""
    frames = clip_frames()
    p = Pipeline(Settings(model=str(tddfa_onnx), device="cpu", smoothing=False))
    results = []
    for f in frames:
        n0 = p.tracker.detections
        res = p.process(f)
        results.append((res.observations, p.tracker.detections > n0))
        ann = draw_result(res, p.layers)
        assert ann.shape == f.image.shape and ann is not f.image
        assert res.frame is f and res.model == p.model_name and "3dmm" in res.stage_ms
    p.close()
    return frames, results, p


@pytest.mark.slow
def test_face_found_and_tracked(onnx_run):
    frames, results, p = onnx_run
    assert sum(bool(o) for o, _ in results) >= 0.95 * len(frames)
    # detection every 5th frame only (nothing was lost on this clip)
    assert [i for i, (_, d) in enumerate(results) if d] == list(range(0, 55, 5))
    assert p.model_name == "3ddfa_v2_mb05" and p.provider == "CPU"
    o = results[10][0][0]
    assert o.vertices.shape == (53215, 3) and o.triangles is not None
    assert all(0 < v < 1 for v in o.eye_open) and 0 <= o.mouth_open < 1


@pytest.mark.slow
def test_matches_official_crop(onnx_run, tddfa_onnx):
    """Every frame: the pipeline's landmarks = the ONNX model run directly on the official crop of
    the roi the crop policy gives (detector box on detection frames, the previous landmarks between,
    scaled by the default Settings.landmark_crop_scale)."""
    from app.detect import FaceDetector

    frames, results, _ = onnx_run
    det = FaceDetector()
    sess = ort.InferenceSession(str(tddfa_onnx), providers=["CPUExecutionProvider"])
    prev = None
    worst = 0.0
    for f, (obs, detected) in zip(frames, results):
        assert len(obs) == 1
        o = obs[0]
        if detected:
            roi = geometry.roi_box_from_bbox(det(f.image, 1)[0].box)
        else:
            # 3DDFA-V2's landmark box scaled by Settings.landmark_crop_scale (0.9 by default)
            roi = geometry.scale_roi(geometry.roi_box_from_landmarks(prev), Settings().landmark_crop_scale)
        np.testing.assert_allclose(o.roi_box, roi, atol=1e-6)
        lm = sess.run(["landmarks"], {"image": official_crop(f.image, roi)[None]})[0][0]
        lm = geometry.crop_to_image(lm, roi)
        worst = max(worst, float(np.abs(lm[:, :2] - o.landmarks[:, :2]).max()))
        prev = o.landmarks
    print(f"pipeline vs official crop: max {worst:.3f} px")
    assert worst < 1.0, worst   # measured: max 0.33 px over the 55 frames (OpenCV warp vs resize rounding)


def test_two_faces_one_batched_run(tddfa_onnx):
    img = cv2.imread(str(shared("media", "two_faces.jpg")))
    p = Pipeline(Settings(model=str(tddfa_onnx), device="cpu"))
    res = p.process(Frame(img, 0.0, 0))
    obs = res.observations
    assert len(obs) == 2 and any(res.driver is o for o in obs)
    assert p.model.runs == 1 and p.model.last_batch == 2
    xs = sorted(o.center[0] for o in obs)
    assert xs[0] < img.shape[1] / 2 < xs[1]
    assert all(o.mesh_points is not None and math.isfinite(o.eye_open[0]) for o in obs)
    # the mesh on each face crop found the same face as the 3DMM (nose tips within 10 % of the box)
    for o in obs:
        size = o.box[2] - o.box[0]
        assert np.linalg.norm(o.mesh_points[4, :2] - o.landmarks[30, :2]) < 0.1 * size
    p.close()


def _aflw_yaw_errors(settings):
    errs = []
    p = Pipeline(settings)
    for im in sorted(shared("media", "aflw2000").glob("*.jpg")):
        gt_yaw = math.degrees(float(sio.loadmat(str(im.with_suffix(".mat")))["Pose_Para"][0, 1]))
        p.tracker.reset()
        obs = p.process(Frame(cv2.imread(str(im)), 0.0, 0)).observations
        if abs(gt_yaw) < 60:
            assert len(obs) == 1, im.name
            errs.append((im.name, gt_yaw, obs[0].yaw))
    p.close()
    return errs


@pytest.mark.slow
def test_yaw_vs_aflw_onnx(tddfa_onnx):
    errs = _aflw_yaw_errors(Settings(model=str(tddfa_onnx), device="cpu", smoothing=False))
    assert len(errs) == 7
    for name, gt, est in errs:
        assert abs(est - gt) < 15, (name, gt, est)
        assert abs(gt) < 5 or np.sign(est) == np.sign(gt), (name, gt, est)


def test_yaw_vs_aflw_face_mesh():
    s = Settings(smoothing=False, model=MESH_MODEL)
    p = Pipeline(s)
    assert p.model_name == MESH_MODEL_NAME
    p.close()
    errs = _aflw_yaw_errors(s)
    assert len(errs) == 7
    for name, gt, est in errs:   # measured: |error| <= 8.5 deg (image00516: -35.7 vs -27.4)
        assert abs(est - gt) < 15, (name, gt, est)
        assert abs(gt) < 5 or np.sign(est) == np.sign(gt), (name, gt, est)


@pytest.mark.slow
def test_smoothing_reduces_jitter_without_lag(tddfa_onnx):
    frames = clip_frames()
    out = {}
    for on in (False, True):
        p = Pipeline(Settings(model=str(tddfa_onnx), device="cpu", smoothing=on, detect_every=1))
        out[on] = np.stack([p.process(f).observations[0].landmarks[:, :2] for f in frames])
        p.close()
    raw, smooth = out[False], out[True]
    jitter = lambda a: np.abs(np.diff(a, n=2, axis=0)).mean()  # noqa: E731  frame-to-frame acceleration
    print(f"jitter raw {jitter(raw):.3f} smooth {jitter(smooth):.3f} px/frame^2, mean |smooth-raw| "
          f"{np.abs(smooth - raw).mean():.2f} px")
    assert jitter(smooth) < 0.7 * jitter(raw), (jitter(smooth), jitter(raw))
    # no visible lag: the smoothed points stay within ~2 px of the raw ones on average
    # (measured: jitter 2.63 -> 1.45 px/frame^2, mean |smooth - raw| 1.63 px on a 220 px face)
    assert np.abs(smooth - raw).mean() < 2.5


def test_tracker_ids_matching_and_loss():
    """Made-up detections: IDs follow IoU, detection every K frames, a lost track forces detection."""
    from app.detect import Detection
    from app.tracker import Tracker

    def square_lm(box):   # 68 points spread over a box (a stand-in for model landmarks)
        x = np.linspace(box[0], box[2], 68)
        y = np.linspace(box[1], box[3], 68)
        return np.stack([x, y, np.zeros(68)], 1)

    script = {0: [[100, 100, 200, 200]], 3: [[105, 100, 205, 200], [400, 100, 500, 200]],
              6: [[400, 100, 500, 200]]}
    calls = []

    def detect(img, n):
        calls.append(frame_i)
        boxes = script.get(frame_i, script[max(k for k in script if k <= frame_i)])
        return [Detection(np.array(b, float), 0.9) for b in boxes][:n]

    ended = []
    tr = Tracker(detect_every=3, max_faces=4, on_end=lambda t: ended.append(t.id))
    img = np.zeros((480, 640, 3), np.uint8)
    ids = {}
    for frame_i in range(8):
        tracks = tr.step(img, detect)
        ids[frame_i] = [t.id for t in tracks]
        for t in tracks:
            box = t.box if t.detected else t.box + np.array([1, 0, 1, 0])
            tr.update(t, square_lm(box), ok=True)
    assert calls == [0, 3, 6]
    assert ids[0] == [0] and ids[2] == [0]
    assert ids[3] == [0, 1]            # the first face keeps its id, the new one gets 1
    assert ids[6] == [1] and ended == [0]
    # between detections the crop comes from the landmarks (3DDFA-V2 policy)
    np.testing.assert_allclose(tracks[0].roi, geometry.roi_box_from_landmarks(tr.tracks[0].landmarks
                                                                              - np.array([1, 0, 0])), atol=1e-9)
    # a lost face ends its track and forces a detection on the next frame
    tr.lose(tr.tracks[0])
    frame_i = 8
    tr.step(img, detect)
    assert calls[-1] == 8


def test_face_leaving_is_dropped_quickly(tddfa_onnx):
    """3DMM mode, detector only every 30 frames: when the face disappears (real portrait, then a
    blank frame) the face mesh misses it, the detector is asked at once, and the track ends."""
    img = cv2.imread(str(shared("media", "portrait_glasses.jpg")))
    blank = np.full_like(img, 90)
    p = Pipeline(Settings(model=str(tddfa_onnx), device="cpu", detect_every=30))
    counts = [len(p.process(Frame(img if i < 3 else blank, i / 25.0, i)).observations) for i in range(8)]
    p.close()
    assert counts[:3] == [1, 1, 1]
    assert counts[4:] == [0, 0, 0, 0]   # at most one frame (3) with a stale face


def test_monitor_wired_by_default():
    """Settings() runs the driver monitor on the selected driver; monitor=None turns it off."""
    from app.core.types import MonitorState

    frames = clip_frames()[:30]
    p = Pipeline(Settings())
    results = [p.process(f) for f in frames]
    states = [r.state for r in results]
    p.close()
    assert all(isinstance(s, MonitorState) for s in states)
    assert states[-1].timestamp == pytest.approx(frames[-1].timestamp)
    assert states[0].calibrating   # learning the neutral pose during the first seconds
    assert all(isinstance(r.events, list) for r in results)
    assert all(r.driver is r.observations[0] for r in results if r.observations)
    q = Pipeline(Settings(monitor=None))
    assert q.process(frames[0]).state is None and q.monitor is None
    q.close()


def test_mesh_value_runs_the_built_in_face_mesh_although_models_holds_an_onnx(tddfa_onnx, tmp_path, monkeypatch):
    """Settings.model = None runs the first models/*.onnx; MESH_MODEL ("mesh", --model mesh) always
    the built-in face mesh; --model mesh parses to it."""
    from app import cli, pipeline
    from app.settings import MESH_MODEL

    models = tmp_path / "models"
    models.mkdir()
    (models / "3ddfa_v2_mb05.onnx").symlink_to(tddfa_onnx)
    monkeypatch.setattr(pipeline, "MODELS_DIR", models)
    assert pipeline.default_model_path() == str(models / "3ddfa_v2_mb05.onnx")
    assert pipeline.resolve_model_path(None) == str(models / "3ddfa_v2_mb05.onnx")
    assert pipeline.resolve_model_path(MESH_MODEL) is None
    assert pipeline.resolve_model_path("x.onnx") == "x.onnx"
    # no user model: the shipped 3DDFA-V2; neither: None (the face mesh)
    monkeypatch.setattr(pipeline, "MODELS_DIR", tmp_path / "empty")
    assert pipeline.default_model_path() == str(pipeline.assets.DEFAULT_3DMM)
    monkeypatch.setattr(pipeline, "SHIPPED_MODEL", tmp_path / "none.onnx")
    assert pipeline.default_model_path() is None and pipeline.resolve_model_path(None) is None
    monkeypatch.setattr(pipeline, "MODELS_DIR", models)
    p = Pipeline(Settings(device="cpu"))
    try:
        assert p.model is not None and p.model_name == "3ddfa_v2_mb05"
    finally:
        p.close()
    s = cli.settings_from_args(cli.build_parser().parse_args(["--model", "mesh", "--device", "cpu"]))
    assert s.model == MESH_MODEL
    p = Pipeline(s)
    try:
        assert p.model is None and p.model_name == MESH_MODEL_NAME
        frame = clip_frames()[0]
        obs = p.process(frame).observations
        assert obs and obs[0].vertices is None and obs[0].mesh_points is not None
        assert obs[0].model == MESH_MODEL_NAME
    finally:
        p.close()
    assert "mesh" in cli.build_parser().format_help().split("--model", 1)[1].split("--device", 1)[0]


def test_pipeline_runs_opencv_on_the_calling_threads():
    """A Pipeline turns OpenCV's worker pool off (its threads cost more CPU than they save beside
    the pipeline's own): cv2.getNumThreads() is 1 once one exists."""
    cv2.setNumThreads(-1)
    assert cv2.getNumThreads() > 1 or os.cpu_count() == 1
    p = Pipeline(Settings(model=MESH_MODEL, monitor=None))
    try:
        assert cv2.getNumThreads() == 1
    finally:
        p.close()
