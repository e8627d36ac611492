"""Eye gaze (app.core.gaze) and the eyes-off-road rule: geometry on a real face mesh, the
hand-labelled clips of tests/data/gaze_labels.json through the real pipeline, and the monitor's
gaze rule on synthetic glances."""
from __future__ import annotations

import functools
import json
import math
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core import gaze as G
from app.core.geometry import rotation_from_pose_aflw
from app.core.types import FaceObservation, Gaze
from app.monitor import DriverMonitor, MonitorSettings
from conftest import shared

DATA = Path(__file__).resolve().parent / "data"
LABELS = json.loads((DATA / "gaze_labels.json").read_text())["clips"]
FLIP = np.array([1.0, -1.0, -1.0])


# ----------------------------------------------------------------------------- geometry
@functools.lru_cache(maxsize=None)
def portrait_mesh():
    """(478, 3) face-mesh points of shared portrait_large.jpg and its head rotation."""
    from app.detect import FaceDetector
    from app.facemesh import MeshLandmarker, eye_openness, head_rotation, mesh_box_from_detection, to68

    img = cv2.imread(str(shared("media", "portrait_large.jpg")))
    h, w = img.shape[:2]
    # the face nearest the photo's centre (the one a centred square crop holds)
    box = min(FaceDetector()(img), key=lambda d: abs((d.box[0] + d.box[2]) / 2 - w / 2)).box
    r = MeshLandmarker()(img, mesh_box_from_detection(box))
    assert r is not None and r.points.shape == (478, 3)
    pts = r.points
    return pts.astype(np.float64), head_rotation(to68(pts)), eye_openness(pts)


def turned(pts, Q):
    """The mesh turned by the camera-frame rotation Q about its centre (image pixels in and out)."""
    p = pts * FLIP
    c = p.mean(axis=0)
    return ((p - c) @ Q.T + c) * FLIP


def test_iris_indices_belong_to_their_eyes():
    pts, _, _ = portrait_mesh()
    for e, (inner, outer) in enumerate(G.EYE_CORNERS):
        mid = (pts[inner, :2] + pts[outer, :2]) / 2
        other = G.EYE_CORNERS[1 - e]
        mid_other = (pts[other[0], :2] + pts[other[1], :2]) / 2
        iris = pts[G.IRIS_CENTRE[e], :2]
        assert np.linalg.norm(iris - mid) < 0.3 * np.linalg.norm(mid - mid_other)
    # the subject's left eye is on the image's right of a frontal face
    assert pts[G.IRIS_CENTRE[0], 0] > pts[G.IRIS_CENTRE[1], 0]


def test_eye_angles_do_not_change_with_the_head_and_gaze_adds_the_head():
    pts, R, eye_open = portrait_mesh()
    a0 = G.eye_angles(pts, R, eye_open)
    assert np.isfinite(a0).all()
    g0 = G.gaze_from_angles(a0, R, pts)
    for pitch, yaw, roll in [(0, 20, 0), (-15, 0, 0), (10, -25, 8)]:
        Qc = rotation_from_pose_aflw(pitch, yaw, roll)     # a head turn in the camera frame (R's convention)
        p2, R2 = turned(pts, Qc), Qc @ R
        a = G.eye_angles(p2, R2, eye_open)
        np.testing.assert_allclose(a, a0, atol=1e-6)        # eye-in-head: the head turn drops out
        g = G.gaze_from_angles(a, R2, p2)
        np.testing.assert_allclose(g.direction, Qc @ g0.direction, atol=1e-9)


def test_signs_and_counter_rotation():
    R = rotation_from_pose_aflw(0, 0, 0)
    g = G.gaze_from_angles(np.array([[10.0, -5.0], [10.0, -5.0]]), R)
    assert g.yaw == pytest.approx(10.0) and g.pitch == pytest.approx(-5.0)
    assert g.direction[0] < 0 and g.direction[1] < 0          # subject's right = camera -x; down = -y
    R30 = rotation_from_pose_aflw(0, 30, 0)
    from app.model3dmm import pose_deg

    assert pose_deg(R30)[0] == pytest.approx(30.0)
    straight = G.gaze_from_angles(np.zeros((2, 2)), R30)
    assert straight.yaw == pytest.approx(30.0, abs=1e-9) and straight.pitch == pytest.approx(0.0, abs=1e-9)
    back = G.gaze_from_angles(np.full((2, 2), [-30.0, 0.0]), R30)  # eyes counter-rotated onto the camera
    assert back.yaw == pytest.approx(0.0, abs=1e-9) and back.pitch == pytest.approx(0.0, abs=1e-9)
    # the iris moved towards the subject's right (the image's left) reads a positive eye yaw
    pts, Rm, eye_open = portrait_mesh()
    moved = pts.copy()
    w = np.linalg.norm(pts[263] - pts[362])
    moved[list(G.IRIS_CENTRE), 0] -= 0.05 * w
    assert (G.eye_angles(moved, Rm, eye_open)[:, 0] > G.eye_angles(pts, Rm, eye_open)[:, 0] + 5).all()


def test_unknown_eyes_are_nan():
    pts, R, eye_open = portrait_mesh()
    assert np.isnan(G.eye_angles(pts[:468], R, eye_open)).all()                 # no iris points
    a = G.eye_angles(pts, R, (0.05, eye_open[1]))                                # left eye shut
    assert np.isnan(a[0]).all() and np.isfinite(a[1]).all()
    a = G.eye_angles(pts, R, eye_open, head_yaw=G.FAR_EYE_MAX_YAW + 5)           # right eye on the far side
    assert np.isfinite(a[0]).all() and np.isnan(a[1]).all()
    a = G.eye_angles(pts, R, eye_open, head_yaw=-G.FAR_EYE_MAX_YAW - 5)
    assert np.isnan(a[0]).all() and np.isfinite(a[1]).all()
    g = G.gaze_from_angles(np.full((2, 2), np.nan), R, pts)
    assert math.isnan(g.yaw) and math.isnan(g.pitch) and np.isnan(g.direction).all()
    one = G.gaze_from_angles(np.array([[5.0, 1.0], [np.nan, np.nan]]), np.eye(3), pts)
    assert one.eye_yaw == pytest.approx(5.0) and np.isfinite(one.origins).all()


# ----------------------------------------------------------------------------- labelled clips
@functools.lru_cache(maxsize=None)
def clip_series(name):
    from app.eval.gaze_eval import run_clip

    return run_clip(shared("media", "clips", name))


def test_labels_match_the_clips():
    from app.eval.gaze_eval import frames_idx

    for name, lab in LABELS.items():
        cap = cv2.VideoCapture(str(shared("media", "clips", name)))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == lab["frames"] and cap.get(cv2.CAP_PROP_FPS) == pytest.approx(lab["fps"])
        on, away = set(frames_idx(lab["on"])), set(frames_idx(lab["away"]))
        assert not (on & away) and max(on | away) < n
        assert set(frames_idx(lab["head_turned_eyes_on"])) <= on
        assert set(frames_idx(lab["neutral"])) <= on


@pytest.mark.slow
def test_fixation_gain():
    """Eyes held on the camera while the head moves: the eye-in-head angle counter-rotates the head
    one to one (the per-axis radii of app.core.gaze were set from this; measured -1.01 / -1.00)."""
    from app.eval.gaze_eval import frames_idx

    for axis in ("yaw", "pitch"):
        pairs = []
        for name, lab in LABELS.items():
            s = clip_series(name)
            on = frames_idx(lab["on"])
            h, e = s[f"head_{axis}"][on], s[f"eye_{axis}"][on]
            ok = np.isfinite(h) & np.isfinite(e)
            pairs.append(np.stack([h[ok] - np.median(h[ok]), e[ok] - np.median(e[ok])], axis=1))
        a = np.vstack(pairs)
        slope = np.polyfit(a[:, 0], a[:, 1], 1)[0]
        assert -1.25 < slope < -0.8, (axis, slope)


@pytest.mark.slow
def test_accuracy_on_the_labelled_clips():
    """The numbers of docs/driver-monitoring.md ("Eyes off road"), with margins."""
    from app.eval.gaze_eval import score_clip

    s = MonitorSettings()
    res = {name: score_clip(clip_series(name), lab, s) for name, lab in LABELS.items()}
    for name, r in res.items():
        assert r["agreement"] >= 0.93, (name, r)                  # measured 95-100 %
        assert r["labelled"] - r["measured"] <= 0.03 * r["labelled"] + 2, (name, r)   # unknown: 0-4 frames
        assert r["away_by_head"] == 0, (name, r)                   # eyes-only: the head rule sees none
    assert sum(r["hits"] for r in res.values()) >= 8                # of 9 glances (measured 9)
    # measured 2 with the LiteRT landmark model (0 with mediapipe 0.10's legacy face mesh)
    assert sum(r["false_glances"] for r in res.values()) <= 3
    d3 = res["expressions_d3.mp4"]
    assert d3["turned_on_road"] >= 0.9 * d3["turned_frames"] and d3["turned_max_head_yaw_offset"] > 10
    nz = res["expressions_d13.mp4"]["noise"]                        # steady gaze into the camera
    assert nz["frames"] >= 300
    assert nz["yaw_std"] <= 2.0 and nz["pitch_std"] <= 3.0 and nz["angle_p95"] <= 7.0, nz   # 1.1 / 1.9, 4.5


@pytest.mark.slow
def test_recorded_steady_gaze_raises_nothing():
    """d13 (talking into the camera, 11.7 s) through the monitor with the gaze rule: calibrated
    from its first stable seconds, no looking-around or time-sharing, eyes (almost) never off the road."""
    s = clip_series("expressions_d13.mp4")
    mon = DriverMonitor(MonitorSettings(), wall_start=datetime(2024, 5, 1, tzinfo=timezone.utc))
    events, away = [], []
    for i in range(len(s["head_yaw"])):
        face = obs(s["head_yaw"][i], s["head_pitch"][i], s["gaze_yaw"][i], s["gaze_pitch"][i])
        st = mon.update(i / s["fps"], i, face)
        events += mon.last_events
        away.append(st.signals["away_by"])
    assert math.isfinite(mon.neutral_gaze_yaw) and mon.calibrated_by == "stable"
    assert [e for e in events if e.get("kind") in ("looking_around", "time_sharing")] == []
    # measured: one frame (105, the half-shut onset of a blink reads as a look down)
    assert sum(a is not None for a in away) <= 3 and set(away) <= {None, "gaze"}


# ----------------------------------------------------------------------------- the monitor's gaze rule
def obs(yaw=2.0, pitch=-4.0, gyaw=None, gpitch=None, eyes=(0.30, 0.28)):
    """A driver face; gyaw None = no gaze data, NaN = eyes unknown."""
    g = None if gyaw is None else Gaze(yaw=float(gyaw), pitch=float(gpitch))
    return FaceObservation(box=np.array([100, 100, 220, 240.0]), landmarks=np.zeros((68, 3)), model="synthetic",
                           yaw=float(yaw), pitch=float(pitch), eye_open=eyes, mouth_open=0.1, gaze=g)


def drive(fn, dur, fps=30, settings=None):
    mon = DriverMonitor(settings or MonitorSettings(), wall_start=datetime(2024, 5, 1, tzinfo=timezone.utc))
    events, states = [], []
    for i in range(int(round(dur * fps))):
        t = i / fps
        states.append(mon.update(t, i, fn(t)))
        events += mon.last_events
    return mon, events, states


def la(events, what="start"):
    return [e for e in events if e.get("kind") == "looking_around" and e["event"] == what]


@pytest.mark.parametrize("fps", [15, 30, 60])
def test_eyes_only_glance_of_3_s_raises_looking_around_by_gaze(fps):
    rng = np.random.default_rng(3)
    noise = {}

    def fn(t):    # head still at (5, -8); eyes on the road, then 3 s at 35 deg to the side (10-13 s)
        n = noise.setdefault(round(t * 1000), rng.normal(0, [1.1, 1.9]))   # measured steady-gaze sd
        eye = 35.0 if 10.0 <= t <= 13.0 + 1e-9 else 0.0
        return obs(5.0, -8.0, 5.0 + eye + n[0], -6.0 + n[1])

    s = MonitorSettings()
    mon, events, states = drive(fn, 20, fps, s)
    assert mon.neutral_gaze_yaw == pytest.approx(5.0, abs=1.0)
    starts = la(events)
    assert [(e["level"], e["by"]) for e in starts] == [("warning", "gaze"), ("critical", "gaze")]
    assert starts[0]["t"] == pytest.approx(10.0 + s.alert_seconds, abs=1.01 / fps)
    assert starts[1]["t"] == pytest.approx(10.0 + s.critical_seconds, abs=1.01 / fps)
    assert starts[0]["gaze_yaw_offset"] > s.gaze_yaw and abs(starts[0]["yaw_offset"]) < 1e-6
    assert la(events, "end")[0]["t"] == pytest.approx(13.0 + s.clear_seconds, abs=1.01 / fps + 1e-6)
    assert mon.summary()["time_distracted_by_s"]["gaze"] == pytest.approx(3.0 + 1.0 / fps, abs=2e-3)
    # the same glance without gaze data, or with the gaze rule off: the head alone sees nothing
    for f, st in ((lambda t: obs(5.0, -8.0), s), (fn, MonitorSettings(use_gaze=0))):
        assert la(drive(f, 20, fps, st)[1]) == []


def test_eyes_down_glance_counts_and_eyes_up_does_not():
    def fn(t):
        eye = -20.0 if 10.0 <= t <= 13.0 + 1e-9 else (20.0 if 15.0 <= t < 18.5 else 0.0)
        return obs(0.0, -5.0, 0.0, -5.0 + eye)

    _, events, _ = drive(fn, 22)
    assert [(e["level"], e["by"], e["t"]) for e in la(events)] == [("warning", "gaze", pytest.approx(12.0)),
                                                                   ("critical", "gaze", pytest.approx(13.0, abs=0.04))]


def test_head_turn_with_eyes_on_the_road_is_not_gaze_off_road():
    def fn_small(t):   # head 25 deg (under --alert-yaw) for 4 s, the eyes counter-rotated onto the road
        h = 25.0 if 10.0 <= t < 14.0 else 0.0
        return obs(h, -5.0, 0.0, -5.0)

    _, events, states = drive(fn_small, 20)
    assert la(events) == [] and {s.signals["away_by"] for s in states} == {None}

    def fn_big(t):     # head 40 deg, eyes counter-rotated: the head rule fires, the gaze rule does not
        h = 40.0 if 10.0 <= t < 14.0 else 0.0
        return obs(h, -5.0, 1.0, -5.0)

    _, events, states = drive(fn_big, 20)
    assert [e["by"] for e in la(events)] == ["head", "head"]
    assert {s.signals["away_by"] for s in states} == {None, "head"}
    assert all(abs(s.signals["gaze_yaw_offset"]) < 2 for s in states if math.isfinite(s.signals["gaze_yaw_offset"]))

    def fn_follow(t):  # head 40 deg and the eyes with it: both
        h = 40.0 if 10.0 <= t < 14.0 else 0.0
        return obs(h, -5.0, h, -5.0)

    assert [e["by"] for e in la(drive(fn_follow, 20)[1])] == ["both", "both"]


def test_blink_inside_an_eyes_only_glance_is_bridged():
    def fn(t):
        if 11.0 <= t < 11.2:                                    # a 0.2 s blink: eyes unknown
            return obs(0.0, -5.0, math.nan, math.nan, eyes=(0.05, 0.05))
        eye = 35.0 if 10.0 <= t <= 13.0 + 1e-9 else 0.0
        return obs(0.0, -5.0, eye, -5.0)

    _, events, _ = drive(fn, 20)
    assert [(e["level"], e["by"]) for e in la(events)] == [("warning", "gaze"), ("critical", "gaze")]
    assert la(events)[0]["t"] == pytest.approx(12.0, abs=0.04)


def test_time_sharing_by_gaze():
    def fn(t):    # 1.8 s eyes-only glances every 4 s: no looking_around, >= 10 s away in 30 s
        eye = 35.0 if t >= 5.0 and (t - 5.0) % 4.0 < 1.8 else 0.0
        return obs(0.0, -5.0, eye, -5.0)

    _, events, _ = drive(fn, 40)
    assert la(events) == []
    ts = [e for e in events if e.get("kind") == "time_sharing" and e["event"] == "start"]
    assert len(ts) == 1 and ts[0]["by"] == "gaze" and ts[0]["away_s_in_window"] >= 10.0


def test_neutral_gaze_learned_after_a_window_with_closed_eyes_and_reset_by_recalibrate():
    def fn(t):    # eyes shut for the first 4 s (no gaze): the head calibrates, the gaze after,
        # over 3 s of measured gaze with blinks (0.2 s every 1 s) skipped, not restarting it
        if t < 4.0 or (t > 4.5 and (t % 1.0) < 0.2):
            return obs(3.0, -5.0, math.nan, math.nan, eyes=(0.05, 0.05))
        return obs(3.0, -5.0, 8.0, -2.0)

    mon, _, states = drive(fn, 10)
    t_head = next(i for i, s in enumerate(states) if s.calibrated) / 30
    t_gaze = next(i for i, s in enumerate(states) if math.isfinite(s.neutral_gaze_yaw)) / 30
    # 3 s after the first measured gaze (4.0 s): 7.0 s is in a blink, the next measured frame is 7.2 s
    assert t_head == pytest.approx(3.0, abs=0.04) and t_gaze == pytest.approx(7.2, abs=0.04)
    assert (mon.neutral_gaze_yaw, mon.neutral_gaze_pitch) == (8.0, -2.0)
    mon.recalibrate()
    assert math.isnan(mon.neutral_gaze_yaw) and math.isnan(mon.neutral_yaw)
    st = mon.update(10.0, 300, obs(3.0, -5.0, 8.0, -2.0))
    assert math.isnan(st.neutral_gaze_yaw) and st.calibrating


def test_settings_flags_and_validation():
    from app import cli

    s = cli.parse(["--gaze-yaw", "15", "--gaze-pitch", "9", "--use-gaze", "0"])[0].monitor
    assert (s.gaze_yaw, s.gaze_pitch, s.use_gaze) == (15.0, 9.0, 0)
    for bad in (dict(gaze_yaw=0), dict(gaze_pitch=95), dict(use_gaze=2)):
        with pytest.raises(ValueError):
            MonitorSettings(**bad).validate()


def test_pipeline_gives_gaze_and_its_stage_time():
    from app.core.types import Frame
    from app.pipeline import Pipeline
    from app.settings import MESH_MODEL, Settings

    cap = cv2.VideoCapture(str(shared("media", "clips", "expressions_d0.mp4")))
    pipe = Pipeline(Settings(model=MESH_MODEL, monitor=None))
    try:
        for i in range(3):
            ok, img = cap.read()
            res = pipe.process(Frame(img, i / 25, i))
            obs_ = res.observations
    finally:
        pipe.close()
        cap.release()
    g = obs_[0].gaze
    assert g is not None and abs(g.yaw) < 10 and abs(g.pitch) < 15      # frames 0-2 look into the camera
    assert np.isfinite(g.origins).all() and np.linalg.norm(g.direction) == pytest.approx(1.0)
    assert 0 < res.stage_ms["gaze"] < 50


@pytest.mark.slow
def test_dump_line_has_the_gaze(tmp_path):
    """main.py --headless --dump on d0: the gaze follows the labelled glances (eyes to the subject's
    left at frame 20, to the right at 35, into the camera at 5)."""
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "d.jsonl"
    clip = shared("media", "clips", "expressions_d0.mp4")
    p = subprocess.run([sys.executable, str(ROOT / "main.py"), "--video", str(clip),
                        "--headless", "--model", "mesh", "--dump", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    g = {r["frame"]: r["faces"][0]["gaze"] for r in rows if r["faces"]}
    assert set(g[5]) == {"yaw", "pitch", "eye_yaw", "eye_pitch"} and len(g[5]["eye_yaw"]) == 2
    assert abs(g[5]["yaw"]) < 10 and g[20]["yaw"] < -20 and g[35]["yaw"] > 20
    assert all(abs(r["faces"][0]["yaw"]) < 5 for r in rows if r["frame"] in (5, 20, 35))   # head still
    assert g[66]["yaw"] is None and g[66]["eye_yaw"] == [None, None]                         # blink: eyes shut


@pytest.mark.slow
def test_gaze_with_a_3dmm_head_pose(tddfa_onnx):
    """3DMM mode: the iris from the face mesh, the head rotation from 3DDFA-V2; d0's glances are
    found as with the face mesh's own pose (measured: 64/64 frames, 4/4 glances)."""
    from app.eval.gaze_eval import run_clip, score_clip

    r = score_clip(run_clip(shared("media", "clips", "expressions_d0.mp4"), model=str(tddfa_onnx)),
                   LABELS["expressions_d0.mp4"], MonitorSettings())
    assert r["hits"] == 4 and r["false_glances"] == 0 and r["agreement"] >= 0.95, r


def test_gaze_pitch_never_wraps_beyond_90_degrees():
    """A head turned 70 deg with the near eye turned 30 deg further points the gaze away from the
    camera (z < 0); its pitch read atan2(y, z) wrapped to ~180 deg (turn_away_test frame 210
    logged gaze_down 187). Pitch stays within +-90 and keeps the sign of the vertical component."""
    for yaw, eye_yaw, eye_pitch in [(70, 30, 0.0), (70, 30, -4.0), (-75, -35, 5.0), (80, 25, 10.0)]:
        R = rotation_from_pose_aflw(0, yaw, 0)
        g = G.gaze_from_angles(np.array([[eye_yaw, eye_pitch], [np.nan, np.nan]]), R)
        assert g.direction[2] < 0                        # it really points away from the camera
        assert -90.0 <= g.pitch <= 90.0 and -90.0 <= g.yaw <= 90.0
        if not eye_pitch:
            assert g.pitch == pytest.approx(0.0, abs=1e-9)   # a level gaze stays level
        else:
            assert math.copysign(1, g.pitch) == math.copysign(1, eye_pitch)
    # towards the camera the inverse of direction() is unchanged
    for yaw, pitch in [(0, 0), (30, -20), (-60, 45), (89, -10), (10, 89)]:
        assert G.angles_of(G.direction(yaw, pitch)) == pytest.approx((yaw, pitch), abs=1e-9)
    # continuous across z = 0
    a = G.angles_of(np.array([-1.0, 0.2, 1e-9]))
    b = G.angles_of(np.array([-1.0, 0.2, -1e-9]))
    assert a == pytest.approx(b, abs=1e-6)
