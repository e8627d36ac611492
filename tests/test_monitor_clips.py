"""Eye / mouth rules on real faces: the hand labels in tests/data against the driver monitor fed with
the mediapipe face-mesh openness (app.facemesh) of shared/media/clips."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.types import FaceObservation
from app.monitor import DriverMonitor, MonitorSettings
from conftest import shared

DATA = Path(__file__).resolve().parent / "data"
EYES = json.loads((DATA / "eye_closure_labels.json").read_text())["clips"]
MOUTH = json.loads((DATA / "mouth_labels.json").read_text())["clips"]


def frames_of(name):
    cap = cv2.VideoCapture(str(shared("media", "clips", name)))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    fps = cap.get(cv2.CAP_PROP_FPS)
    cap.release()
    return out, fps


def idx(ranges):
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges])


@pytest.mark.parametrize("name, labels", [*EYES.items(), *MOUTH.items()])
def test_labels_match_the_clips(name, labels):
    frames, fps = frames_of(name)
    assert len(frames) == labels["frames"] and fps == pytest.approx(labels["fps"])
    assert list(frames[0].shape[:2]) == labels["size"][::-1]
    a, b = set(idx(labels["closed"])), set(idx(labels["open"]))
    assert not (a & b) and max(a | b) < len(frames) and min(a | b) >= 0
    for ranges in (labels["closed"], labels["open"]):
        assert all(lo <= hi for lo, hi in ranges)


def mesh_openness(name):
    from app.facemesh import FaceMesh, eye_openness, mouth_openness

    frames, fps = frames_of(name)
    fm = FaceMesh(static=False)
    out = []
    try:
        for f in frames:
            h, w = f.shape[:2]
            m = fm(f, np.array([0, 0, w, h], float))
            out.append((np.nan, np.nan, np.nan) if m is None else (*eye_openness(m), mouth_openness(m)))
    finally:
        fm.close()
    return np.array(out), fps


def monitor_eye_states(vals, fps):
    mon = DriverMonitor(MonitorSettings())
    rel, blinks = [], []
    for i, (l, r, mouth) in enumerate(vals):
        f = FaceObservation(box=np.array([0, 0, 100, 100.]), landmarks=np.zeros((68, 3)), model="mesh",
                            yaw=0.0, pitch=0.0, eye_open=(l, r), mouth_open=mouth)
        st = mon.update(i / fps, i, f)
        rel.append(st.signals["eye_open_rel"])
    return np.array(rel), mon


@pytest.mark.parametrize("name", list(EYES))
def test_eye_closure_rule_on_labelled_frames(name):
    pytest.importorskip("mediapipe")
    lab = EYES[name]
    vals, fps = mesh_openness(name)
    rel, mon = monitor_eye_states(vals, fps)
    ratio = mon.settings.eye_closed_ratio
    ready = np.isfinite(rel)                     # after the 2 s open-eye baseline
    closed_i = [i for i in idx(lab["closed"]) if ready[i]]
    open_i = [i for i in idx(lab["open"]) if ready[i]]
    assert closed_i and open_i
    hit = np.mean(rel[closed_i] < ratio)
    false = np.mean(rel[open_i] < ratio)
    print(f"{name}: closed frames detected {hit:.0%} of {len(closed_i)}, open frames called closed "
          f"{false:.1%} of {len(open_i)}; blinks counted {mon.blinks}")
    assert hit >= 0.9 and false == 0.0


@pytest.mark.parametrize("name", list(MOUTH))
def test_mouth_threshold_on_labelled_frames(name):
    pytest.importorskip("mediapipe")
    lab = MOUTH[name]
    vals, fps = mesh_openness(name)
    thr = MonitorSettings().mouth_threshold
    mouth = vals[:, 2]
    assert np.all(mouth[idx(lab["open"])] > thr)
    assert np.all(mouth[idx(lab["closed"])] < thr / 4)
