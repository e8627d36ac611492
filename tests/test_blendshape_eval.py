"""MediaPipe's blendshapes against the app's own measures: eye openness (eyelids vs 1 - eyeBlink,
app.eval.eye_eval, on tests/data/eye_closure_labels.json) and eye-in-head gaze (iris vs the
eyeLook* blendshapes, app.eval.gaze_eval, on tests/data/gaze_labels.json). The slow tests hold
the numbers of docs/driver-monitoring.md ("Eyelids or blendshapes", "Iris or eyeLook*
blendshapes") with margins."""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from app.core import gaze as G
from app.eval import eye_eval as EE
from app.eval import gaze_eval as GE
from conftest import shared

DATA = Path(__file__).resolve().parent / "data"
EYE_LABELS = json.loads((DATA / "eye_closure_labels.json").read_text())["clips"]
GAZE_LABELS = json.loads((DATA / "gaze_labels.json").read_text())["clips"]


def looks(**kw):
    names = [n for pair in G.LOOK_BLENDSHAPES for axis in pair for n in axis]
    return {n: kw.get(n, 0.0) for n in names}


# ----------------------------------------------------------------------------- small, made data
def test_look_signals_signs_and_gating():
    # both eyes towards the subject's right: the left eye looks in, the right one out -> yaw > 0
    right = G.look_signals(looks(eyeLookInLeft=0.8, eyeLookOutRight=0.6))
    np.testing.assert_allclose(right[:, 0], [0.8, 0.6])
    left = G.look_signals(looks(eyeLookOutLeft=0.5, eyeLookInRight=0.7))
    np.testing.assert_allclose(left[:, 0], [-0.5, -0.7])
    down = G.look_signals(looks(eyeLookDownLeft=0.3, eyeLookDownRight=0.4, eyeLookUpRight=0.1))
    np.testing.assert_allclose(down[:, 1], [-0.3, -0.3])
    assert np.isnan(G.look_signals(None)).all()
    bs = looks(eyeLookInLeft=0.5, eyeLookOutRight=0.5, eyeLookUpLeft=0.2)
    a = G.blendshape_eye_angles(bs, 30.0, 100.0, (0.3, 0.3))
    np.testing.assert_allclose(a, [[15.0, 20.0], [15.0, 0.0]])
    a = G.blendshape_eye_angles(bs, 30.0, 100.0, (0.3, G.MIN_EYE_OPEN - 0.01))      # right eye shut
    assert np.isfinite(a[0]).all() and np.isnan(a[1]).all()
    a = G.blendshape_eye_angles(bs, 30.0, 100.0, (0.3, 0.3), head_yaw=G.FAR_EYE_MAX_YAW + 1)
    assert np.isfinite(a[0]).all() and np.isnan(a[1]).all()                          # far (right) eye
    assert np.isnan(G.blendshape_eye_angles(bs, 30.0, 100.0)).all()                  # openness unknown


def test_fixation_gain_recovers_a_made_gain():
    """Eyes held on the camera while the head turns: signal = -head / gain (+ noise) per eye."""
    rng = np.random.default_rng(0)
    series, labels = {}, {}
    for c in range(2):
        n = 200
        hy, hp = rng.uniform(-15, 15, n), rng.uniform(-8, 8, n)
        look = np.stack([np.stack([-hy / 32.0, -hp / 90.0], 1)] * 2, 1) + rng.normal(0, 0.01, (n, 2, 2))
        look[::7, 1] = np.nan                                       # the right eye unmeasured on some frames
        series[f"c{c}"] = {"head_yaw": hy + 3.0, "head_pitch": hp - 2.0, "look": look + 0.1}
        labels[f"c{c}"] = {"on": [[0, n - 1]]}
    g = GE.fixation_gains(series, labels)
    assert g["yaw"] == pytest.approx(32.0, rel=0.03) and g["pitch"] == pytest.approx(90.0, rel=0.08)
    assert g["yaw_frames"] == 400


def test_blendshape_series_turns_eye_angles_with_the_head():
    from app.core.geometry import rotation_from_pose_aflw

    n = 5
    R = np.stack([rotation_from_pose_aflw(0.0, 20.0, 0.0)] * n)
    look = np.zeros((n, 2, 2))
    look[:, :, 0] = -20.0 / 30.0                                   # eyes counter-rotated by 20 deg
    iris = np.full((n, 2, 2), 7.0)
    s = {"fps": 30.0, "head_yaw": np.full(n, 20.0), "head_pitch": np.zeros(n), "rotation": R,
         "look": look, "iris_eyes": iris}
    out = GE.blendshape_series(s, {"yaw": 30.0, "pitch": 100.0})
    np.testing.assert_allclose(out["gaze_yaw"], 0.0, atol=1e-9)    # back on the camera
    np.testing.assert_allclose(out["eye_yaw"], -20.0)
    mixed = GE.blendshape_series(s, {"yaw": 30.0, "pitch": 100.0}, iris_pitch=True)
    np.testing.assert_allclose(mixed["eye_pitch"], 7.0)


def test_eye_scoring_on_a_made_blink():
    """A 30 fps openness series: open 0.30, one 4-frame closure (0.08) at 100-103: through the
    monitor it is one blink on frame 104, the closed frames are detected, nothing else fires."""
    n = 200
    eyes = np.full((n, 2), 0.30)
    eyes[100:104] = 0.08
    mouth = np.zeros(n)
    lab = {"closed": [[100, 103]], "open": [[70, 98], [106, 199]],
           "blinks": {"scored": [[70, 199]], "episodes": [[100, 103]]}}
    r = EE.score_clip(eyes, mouth, 30.0, lab, EE.settings_for("eyelid"))
    assert (r["closed_hit"], r["closed_frames"], r["open_false"], r["matched"], r["extra"]) == (4, 4, 0, 1, 0)
    assert r["events"] == [] and r["blinks_total"] == 1
    # a ratio too low to see the closure (0.08 is the shut level: relative openness 0, never < 0)
    r0 = EE.score_clip(eyes, mouth, 30.0, lab, EE.settings_for("eyelid", ratio=0.0001))
    assert r0["closed_hit"] == 4                                   # 0 < 0.0001
    eyes[100:104] = 0.20                                           # half-closed: rel 0.55
    r1 = EE.score_clip(eyes, mouth, 30.0, lab, EE.settings_for("eyelid"))
    assert r1["closed_hit"] == 0 and r1["matched"] == 0
    with pytest.raises(ValueError):
        EE.settings_for("pupil")


def test_best_ratio_is_the_middle_of_the_clean_best_range():
    def t(hit, false=0):
        return {"closed_hit": hit, "open_false": false, "matched": 1, "episodes": 1, "extra": 0,
                "closures": 0, "events": 0}

    sweep = {0.1: t(3), 0.12: t(5), 0.14: t(5), 0.16: t(5), 0.18: t(6, false=1)}
    assert EE.best_ratio(sweep) == {"ratio": 0.14, "low": 0.12, "high": 0.16, "closed_hit": 5}
    assert math.isnan(EE.best_ratio({0.1: t(3, false=2)})["ratio"])


def test_eye_eval_cli_bad_input(tmp_path, capsys):
    assert EE.main(["--labels", str(tmp_path / "none.json")]) == 2
    assert "labels file" in capsys.readouterr().err
    lab = tmp_path / "l.json"
    lab.write_text(json.dumps({"clips": {"missing.mp4": EYE_LABELS["expressions_d0.mp4"]}}))
    assert EE.main(["--labels", str(lab), "--clips", str(tmp_path)]) == 2
    assert "missing.mp4" in capsys.readouterr().err


# ----------------------------------------------------------------------------- labelled clips
@functools.lru_cache(maxsize=None)
def eye_results():
    pytest.importorskip("ai_edge_litert")
    series = {name: EE.run_clip(shared("media", "clips", name)) for name in EYE_LABELS}
    return EE.evaluate(series=series)


@pytest.mark.slow
def test_eyelid_and_blendshape_openness_on_the_labelled_clips():
    """Measured: the eyelid measure at the monitor's ratio 0.2: 39/39 closed frames, 0/253 open
    frames closed, 10/10 blink episodes; clean for ratios 0.12-0.26. 1 - eyeBlink at 0.2: 30/39
    closed, 8/10 episodes; at its best ratio 0.46 (clean 0.40-0.50) 39/39, 0/253, 10/10."""
    res = eye_results()
    lid, bs = res["eyelid"], res["blendshape"]
    t = lid["default"]["total"]
    assert t["closed_hit"] >= 0.95 * t["closed_frames"] and t["open_false"] == 0
    assert t["matched"] == t["episodes"] == 10 and t["extra"] == 0 and t["events"] == 0
    assert t["closed_frames"] == 39 and t["open_frames"] == 253
    b = lid["best"]
    assert b["low"] <= 0.2 <= b["high"] and b["high"] - b["low"] >= 0.10       # measured 0.12-0.26
    # the blendshape measure under the monitor's ratio misses closures ...
    tb = bs["default"]["total"]
    assert tb["closed_hit"] <= 0.9 * tb["closed_frames"] and tb["matched"] < tb["episodes"]   # 30/39, 8/10
    # ... and at its own best ratio does as well as the eyelids, in a narrower clean range
    bb = bs["best"]
    assert 0.36 <= bb["ratio"] <= 0.56 and bb["closed_hit"] >= 37                          # 0.46, 39
    assert bb["high"] - bb["low"] <= b["high"] - b["low"]                                   # 0.10 vs 0.14
    at = bs["at_best"]["total"]
    assert at["open_false"] == 0 and at["matched"] == 10 and at["extra"] == 0


@functools.lru_cache(maxsize=None)
def gaze_results(holdout=False):
    pytest.importorskip("ai_edge_litert")
    return GE.evaluate(series=gaze_series(), holdout=holdout)


@functools.lru_cache(maxsize=None)
def gaze_series():
    return {name: GE.run_clip(shared("media", "clips", name)) for name in GAZE_LABELS}


@pytest.mark.slow
def test_iris_vs_blendshape_gaze_on_the_labelled_clips():
    """Measured (docs/driver-monitoring.md): gains by fixation yaw 30.7, pitch 117 deg per unit;
    iris: 9/9 glances, 2 false, d13 noise 1.2 / 2.7 deg; blendshapes: 9/9, 16 false, d13 noise
    1.0 / 8.2 deg; mixed (blendshape yaw, iris pitch): 9/9, 1 false, 0.9 / 2.7 deg."""
    res = gaze_results()
    g = res["gains"]["all"]
    assert 26 <= g["yaw"] <= 36 and g["pitch"] >= 60, g
    tot = {src: {k: sum(r[k] for r in res[src].values()) for k in ("hits", "misses", "false_glances")}
           for src in GE.SOURCES}
    nz = {src: res[src]["expressions_d13.mp4"]["noise"] for src in GE.SOURCES}
    assert tot["iris"]["hits"] >= 8 and tot["iris"]["false_glances"] <= 3
    for name, r in res["iris"].items():
        assert r["agreement"] >= 0.93, (name, r)                   # measured 95-100 %
    # blendshapes: the yaw is steadier than the iris, the pitch much noisier (false looks down)
    assert tot["blendshape"]["hits"] >= 8 and tot["blendshape"]["false_glances"] >= 8
    assert nz["blendshape"]["yaw_std"] <= nz["iris"]["yaw_std"] + 0.2
    assert nz["blendshape"]["pitch_std"] >= 2 * nz["iris"]["pitch_std"]
    assert res["blendshape"]["expressions_d13.mp4"]["agreement"] <= 0.8                      # 53 %
    # mixed: the iris' glances, no more false ones, the steadier yaw
    assert tot["mixed"]["hits"] >= 8 and tot["mixed"]["false_glances"] <= tot["iris"]["false_glances"]
    assert nz["mixed"]["yaw_std"] <= nz["iris"]["yaw_std"] + 0.1
    for name, r in res["mixed"].items():
        assert r["agreement"] >= 0.88, (name, r)                   # measured 91-100 %
    d3 = res["mixed"]["expressions_d3.mp4"]
    assert d3["turned_on_road"] >= 0.9 * d3["turned_frames"]


@pytest.mark.slow
def test_blendshape_gains_held_out():
    """Each clip scored with gains fitted on the other clips: the yaw gain is stable (measured
    30.2-34.0), the pitch gain is not (76-227), so the mixed source keeps its numbers."""
    res = gaze_results(holdout=True)
    gains = {k: v for k, v in res["gains"].items() if k not in ("all", "holdout")}
    yaw = [v["yaw"] for v in gains.values()]
    pitch = [v["pitch"] for v in gains.values()]
    assert max(yaw) - min(yaw) <= 8 and max(pitch) / min(pitch) >= 1.5, gains
    assert sum(r["hits"] for r in res["mixed"].values()) >= 8
    assert sum(r["false_glances"] for r in res["mixed"].values()) <= 3
