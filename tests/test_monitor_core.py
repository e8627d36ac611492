"""Driver-monitoring rules on synthetic time series: exact event times at 15/30/60 fps, with
jitter and dropped frames, hysteresis, cooldown, calibration, VATS, PERCLOS arithmetic, blinks,
yawns, nods, no driver, NaN handling, driver selection."""
from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from app.core.types import FaceObservation, MonitorState
from app.monitor import DriverMonitor, MonitorSettings, select_driver

OPEN = (0.30, 0.28)      # eyelid ratio of open eyes (app.facemesh scale: ~0.25-0.35 open)
SHUT = (0.02, 0.02)


def face(yaw=2.0, pitch=-4.0, eyes=OPEN, mouth=0.1, box=(100, 100, 220, 240)):
    return FaceObservation(box=np.array(box, float), landmarks=np.zeros((68, 3)), model="synthetic",
                           yaw=yaw, pitch=pitch, eye_open=eyes, mouth_open=mouth)


def samples(fps, dur, jitter=0.0, drop=0.0, seed=0):
    """(frame index, timestamp) pairs: nominal i/fps, +- jitter x period uniform noise, a random
    fraction ``drop`` of frames left out (the first is always kept)."""
    rng = np.random.default_rng(seed)
    n = int(round(dur * fps))
    t = np.arange(n) / fps
    if jitter:
        t = t + rng.uniform(-jitter, jitter, n) / fps
        t[0] = 0.0
    keep = rng.random(n) >= drop
    keep[0] = True
    return [(i, float(t[i])) for i in range(n) if keep[i]]


def run(fn, fps=30, dur=20.0, settings=None, jitter=0.0, drop=0.0, seed=0, mon=None, hook=None):
    """Feed fn(t) -> FaceObservation | None; return (monitor, events, states, timestamps)."""
    mon = mon or DriverMonitor(settings or MonitorSettings(),
                               wall_start=datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc))
    events, states, ts = [], [], []
    for i, t in samples(fps, dur, jitter, drop, seed):
        if hook is not None:
            hook(mon, t)
        st = mon.update(t, i, fn(t))
        events.extend(mon.last_events)
        states.append(st)
        ts.append(t)
    return mon, events, states, ts


def evs(events, kind, what=None, level=None):
    return [e for e in events if e["kind"] == kind and (what is None or e["event"] == what)
            and (level is None or e["level"] == level)]


def one(events, kind, what, level=None):
    got = evs(events, kind, what, level)
    assert len(got) == 1, f"expected one {kind} {what} {level}, got {got}\nall: {events}"
    return got[0]


def first_at_or_after(ts, x):
    return next(t for t in ts if t >= x - 1e-6)


# ----------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("fps", [15, 30, 60])
def test_calibration_learns_neutral_in_3_s(fps):
    rng = np.random.default_rng(1)
    noise = {}

    def fn(t):   # driver sits turned 12 deg, head 6 deg down, +-1 deg tremor
        noise.setdefault(t, rng.normal(0, 1.0, 2))
        return face(yaw=12 + noise[t][0], pitch=-6 + noise[t][1])

    mon, events, states, ts = run(fn, fps=fps, dur=5)
    done = next(t for t, s in zip(ts, states) if not s.calibrating)
    assert abs(done - 3.0) <= 1.0 / fps + 1e-9
    assert all(s.calibrating and not s.calibrated for t, s in zip(ts, states) if t < 3.0 - 1e-6)
    assert abs(states[-1].neutral_yaw - 12) < 0.6 and abs(states[-1].neutral_pitch + 6) < 0.6
    assert states[-1].calibrated and events == []


def test_calibration_waits_for_a_stable_face_and_no_alerts_meanwhile():
    # 0-6 s: head sweeps +-45 deg (checking mirrors; would be "away" from any neutral), then steady
    def fn(t):
        return face(yaw=45 * math.sin(2 * math.pi * t / 2.0) if t < 6 else 5.0, pitch=0)

    mon, events, states, ts = run(fn, fps=30, dur=12)
    done = next(t for t, s in zip(ts, states) if not s.calibrating)
    # 90 % of the last 3 s steady: 2.7 s after 6 s, less the sweep samples that pass near 5 deg
    assert 8.5 <= done <= 9.0 + 1 / 30
    assert states[-1].neutral_yaw == pytest.approx(5.0)
    assert evs(events, "looking_around") == [] and evs(events, "time_sharing") == []
    assert math.isnan(states[100].signals["yaw_offset"])


@pytest.mark.parametrize("fps", [15, 30, 60])
def test_fidgety_driver_gets_the_fallback_neutral_after_20_s_of_face(fps):
    """A head that never holds still for 3 s (+-12 deg sway around yaw 8, pitch -5): no stable
    window, so after --calib-fallback-seconds (20) of face the neutral is their median, and the pose
    rules arm: a turn to +45 deg from t=30 gives the looking-around warning at 32 s."""
    def fn(t):
        if t >= 30:
            return face(yaw=45.0, pitch=-5.0)
        return face(yaw=8 + 12 * math.sin(2 * math.pi * t / 1.7), pitch=-5 + 4 * math.sin(2 * math.pi * t / 2.3))

    mon, events, states, ts = run(fn, fps=fps, dur=34)
    done = next(t for t, s in zip(ts, states) if not s.calibrating)
    assert abs(done - 20.0) <= 1.0 / fps + 1e-9
    assert all(s.calibrating for t, s in zip(ts, states) if t < 20.0 - 1e-6)
    assert states[-1].neutral_yaw == pytest.approx(8.0, abs=1.0)
    assert states[-1].neutral_pitch == pytest.approx(-5.0, abs=1.0)
    assert mon.summary()["calibrated_by"] == "fallback"
    assert evs(events, "looking_around", "start")[0]["t"] == pytest.approx(first_at_or_after(ts, 32.0), abs=1e-6)
    assert [e for e in events if e["kind"] == "looking_around" and e["t"] < 30] == []


def test_fallback_counts_face_time_and_can_be_turned_off():
    # the same sway, but the face is gone 5 s (t 8-13): 20 s of face are reached at 25 s, not 20
    def fn(t):
        return None if 8 <= t < 13 else face(yaw=12 * math.sin(2 * math.pi * t / 1.7), pitch=0)

    mon, _, states, ts = run(fn, fps=30, dur=27)
    done = next(t for t, s in zip(ts, states) if not s.calibrating)
    assert abs(done - (25.0 + 1 / 30)) <= 1 / 30 + 1e-9, done     # 8 s of face before, 12 s after
    assert mon.summary()["calibrated_by"] == "fallback"
    off = MonitorSettings(calib_fallback_seconds=0)
    mon, _, states, _ = run(fn, fps=30, dur=27, settings=off)
    assert all(s.calibrating for s in states) and mon.summary()["calibrated_by"] is None
    # a steady driver is still calibrated by the stable window
    mon, _, _, _ = run(lambda t: face(yaw=3), fps=30, dur=5)
    assert mon.summary()["calibrated_by"] == "stable"


def test_calibration_needs_a_continuous_face():
    # face missing 1 s at t=2 (> max_gap): the learnt seconds restart after it
    mon, events, states, ts = run(lambda t: None if 2.0 <= t < 3.0 else face(yaw=0), fps=30, dur=8)
    done = next(t for t, s in zip(ts, states) if not s.calibrating)
    assert abs(done - 6.0) <= 1 / 30 + 1e-9


def test_recalibrate_on_request_ends_alerts_and_learns_the_new_pose():
    # calibrated at yaw 0; from t=5 the driver (or the camera) settles at yaw 35 for good
    def hook(mon, t):
        if abs(t - 10.0) < 1e-9:
            mon.recalibrate()

    mon, events, states, ts = run(lambda t: face(yaw=0 if t < 5 else 35, pitch=0), fps=30, dur=16, hook=hook)
    assert one(events, "looking_around", "start", "warning")["t"] == pytest.approx(7.0, abs=1e-6)
    end = one(events, "looking_around", "end")
    assert end["reason"] == "recalibrate" and end["t"] == pytest.approx(10 - 1 / 30, abs=1e-6)
    after = [s for t, s in zip(ts, states) if t >= 10.0]
    done = next(t for t, s in zip(ts, states) if t >= 10 and not s.calibrating)
    assert abs(done - 13.0) <= 1 / 30 + 1e-9
    assert after[-1].neutral_yaw == pytest.approx(35.0) and after[-1].alerts == []
    assert all(s.alerts == [] for s in after)
    assert mon.summary()["calibrations"] == 2


def test_recalibrate_after_relearns_but_only_from_looking_ahead_samples():
    s = MonitorSettings(recalibrate_after=10.0)
    # neutral 0 at 3 s; the driver settles 8 deg to the right at t=5 (posture drift);
    # re-learning starts at 13 s; from 13 to 14.5 s the driver looks at the phone (down 30 deg)
    def fn(t):
        if 13.0 <= t < 14.5:
            return face(yaw=8, pitch=-30)
        return face(yaw=0 if t < 5 else 8, pitch=0)

    mon, events, states, ts = run(fn, fps=30, dur=20, settings=s)
    neutral = [(t, st.neutral_yaw) for t, st in zip(ts, states)]
    changed = next(t for t, n in neutral if n == pytest.approx(8.0))
    assert abs(changed - 17.5) <= 1 / 30 + 1e-9      # 3 s of "ahead" samples after the glance
    assert all(n == pytest.approx(0.0) for t, n in neutral if 3.0 <= t < 17.4)
    assert states[-1].neutral_pitch == pytest.approx(0.0)   # the phone glance did not count
    # meanwhile the old neutral stays in use: not shown as "calibrating", alerts still possible
    relearn = [st for t, st in zip(ts, states) if 13.0 <= t < 17.4]
    assert all(not st.calibrating and st.counters["relearning_neutral"] for st in relearn)
    assert not states[-1].counters["relearning_neutral"]
    assert mon.summary()["calibrations"] == 2


# ----------------------------------------------------------------------------- looking around
def away_fn(intervals, yaw=40.0, pitch=0.0, base_yaw=0.0, base_pitch=0.0):
    def fn(t):
        if any(a <= t < b for a, b in intervals):
            return face(yaw=yaw, pitch=pitch)
        return face(yaw=base_yaw, pitch=base_pitch)
    return fn


@pytest.mark.parametrize("fps", [15, 30, 60])
@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_looking_around_event_times(fps, jitter):
    mon, events, states, ts = run(away_fn([(5.0, 9.0)]), fps=fps, dur=14, jitter=jitter, seed=fps)
    # the onset frame and the firing frame are each at most one (jittered) frame late
    tol = 2 * (1 + 2 * jitter) / fps + 1e-9
    w = one(events, "looking_around", "start", "warning")
    c = one(events, "looking_around", "start", "critical")
    e = one(events, "looking_around", "end")
    assert abs(w["t"] - 7.0) <= tol and abs(c["t"] - 8.0) <= tol and abs(e["t"] - 10.0) <= tol
    # exactly the first frame at/after the dwell (first away frame + 2 s)
    s0 = first_at_or_after(ts, 5.0)
    assert w["t"] == pytest.approx(first_at_or_after(ts, s0 + 2.0), abs=1e-6)
    assert c["escalated_from"] == "warning" and e["level"] == "critical"
    assert w["yaw_offset"] == pytest.approx(40.0) and w["away_s"] >= 2.0 - 1e-6
    # the MonitorState shows the alert exactly between start and end
    for t, st in zip(ts, states):
        kinds = [a.kind for a in st.alerts]
        assert ("looking_around" in kinds) == (w["t"] - 1e-6 <= t < e["t"] - 1e-6), t
        if "looking_around" in kinds:
            assert st.alerts[0].level == ("critical" if t >= c["t"] - 1e-6 else "warning")
            assert st.alerts[0].since == pytest.approx(w["t"], abs=1e-6)
    assert evs(events, "time_sharing") == []


def test_looking_around_with_dropped_frames_and_jitter():
    mon, events, states, ts = run(away_fn([(5.0, 9.0)]), fps=30, dur=14, jitter=0.3, drop=0.25, seed=3)
    gap = max(np.diff(ts))
    assert gap > 2.5 / 30      # really dropped frames
    w = one(events, "looking_around", "start", "warning")
    c = one(events, "looking_around", "start", "critical")
    e = one(events, "looking_around", "end")
    for ev, want in ((w, 7.0), (c, 8.0), (e, 10.0)):
        assert want - 1e-6 <= ev["t"] <= want + 2 * gap, (ev, want)


def test_same_events_at_15_30_60_fps():
    def summary(fps):
        fn = away_fn([(5.0, 7.5), (20.0, 24.0)])
        _, events, _, _ = run(fn, fps=fps, dur=30)
        return [(e["kind"], e["event"], e["level"], e["t"]) for e in events]

    a, b, c = summary(15), summary(30), summary(60)
    assert [x[:3] for x in a] == [x[:3] for x in b] == [x[:3] for x in c] and len(a) == 5
    for x, y, z in zip(a, b, c):
        assert abs(x[3] - z[3]) <= 1 / 15 + 1e-9 and abs(y[3] - z[3]) <= 1 / 15 + 1e-9


def test_pitch_down_counts_and_up_does_not():
    # AFLW Pose_Para: head down = negative pitch. neutral pitch -5.
    down = away_fn([(5.0, 9.0)], yaw=0, pitch=-5 - 25, base_pitch=-5)
    up = away_fn([(5.0, 9.0)], yaw=0, pitch=-5 + 25, base_pitch=-5)
    _, e_down, _, _ = run(down, dur=12)
    _, e_up, _, _ = run(up, dur=12)
    assert one(e_down, "looking_around", "start", "warning")["pitch_down"] == pytest.approx(25.0)
    assert e_up == []
    # a source whose "down" is positive pitch: flip the documented sign
    _, e_up_flipped, _, _ = run(up, dur=12, settings=MonitorSettings(pitch_down_sign=1.0))
    assert len(evs(e_up_flipped, "looking_around", "start")) == 2    # warning + critical


def test_mirror_glances_under_2_s_do_not_alert():
    # 1.8 s glances at 45 deg every 9 s for a minute: no looking_around, and 6-8 s per 30 s < VATS 10 s
    glances = [(5 + 9 * k, 6.8 + 9 * k) for k in range(7)]
    mon, events, states, ts = run(away_fn(glances, yaw=45), fps=30, dur=66)
    assert events == []
    assert mon.summary()["time_distracted_s"] == pytest.approx(7 * 1.8, abs=7 / 30 + 1e-6)


def test_yaw_just_inside_threshold_is_not_away():
    mon, events, _, _ = run(away_fn([(5.0, 12.0)], yaw=29.5), dur=14)
    assert events == []


def test_hysteresis_alert_clears_only_after_1_s_back():
    # away 5-9, back 9.0-9.6, away 9.6-10.0 (short), back from 10.0 -> end at 11.0, not 10.0
    mon, events, _, _ = run(away_fn([(5.0, 9.0), (9.6, 10.0)]), dur=14)
    assert one(events, "looking_around", "end")["t"] == pytest.approx(11.0, abs=1e-6)
    assert len(evs(events, "looking_around", "start")) == 2      # warning + critical, once


def test_cooldown_delays_a_repeat():
    # away 5-8 (warning at 7, end at 9); away again 9.5-16: dwell 2 s at 11.5 and 3 s at 12.5,
    # but the cooldown (5 s after the end at 9) holds it until 14.0, when it starts critical
    mon, events, _, _ = run(away_fn([(5.0, 8.0), (9.5, 16.0)]), dur=20)
    starts = evs(events, "looking_around", "start")
    assert [(e["level"], round(e["t"], 4)) for e in starts] == [("warning", 7.0), ("critical", 14.0)]
    ends = evs(events, "looking_around", "end")
    assert [round(e["t"], 4) for e in ends] == [9.0, 17.0]
    # without a cooldown the repeat starts on time
    _, events0, _, _ = run(away_fn([(5.0, 8.0), (9.5, 16.0)]), dur=20,
                           settings=MonitorSettings(cooldown_seconds=0))
    assert [round(e["t"], 4) for e in evs(events0, "looking_around", "start")] == [7.0, 11.5, 12.5]


def test_gap_longer_than_max_gap_restarts_the_dwell():
    # frames missing from 6.0 to 6.8 s (camera stall) while looking away from 5 s
    def fn(t):
        return face(yaw=40 if 5 <= t < 12 else 0)

    mon = DriverMonitor()
    events = []
    for i, t in samples(30, 14):
        if 6.0 <= t < 6.8:
            continue
        mon.update(t, i, fn(t))
        events.extend(mon.last_events)
    assert one(events, "looking_around", "start", "warning")["t"] == pytest.approx(8.8, abs=1e-6)


# ----------------------------------------------------------------------------- time sharing
@pytest.mark.parametrize("fps", [15, 30])
def test_vats_accumulates_glances(fps):
    # 1.6 s glances (a whole number of frames at 15 and 30 fps) every 3 s from t=5: 9.6 s
    # accumulated after the 6th glance (ends 21.6); the 7th starts at 23 -> 10 s at 23.4.
    # No single glance reaches 2 s.
    glances = [(5 + 3 * k, 6.6 + 3 * k) for k in range(8)]
    mon, events, states, ts = run(away_fn(glances), fps=fps, dur=60)
    s = one(events, "time_sharing", "start", "warning")
    assert abs(s["t"] - 23.4) <= 1 / fps + 1e-9
    assert s["away_s_in_window"] == pytest.approx(10.0, abs=1 / fps + 1e-6)
    # the last glance ends at 27.6 (8 x 1.6 = 12.8 s away); window [T-30, T] keeps >= 10 s until
    # the first 1.6 s glance [5, 6.6) has left it and 1.2 s of the second [8, 9.6):
    # 12.8 - 1.6 - 1.2 = 10 at T - 30 = 9.2, so < 10 from T = 39.2 on; the alert ends 1 s later.
    below = next(t for t, st in zip(ts, states) if t > s["t"] and st.counters["vats_away_s"] < 10 - 1e-6)
    assert abs(below - 39.2) <= 1 / fps + 1e-9
    e = one(events, "time_sharing", "end")
    below = next(t for t, st in zip(ts, states) if t > s["t"] and st.counters["vats_away_s"] < 10 - 1e-6)
    assert abs(e["t"] - (below + 1.0)) <= 1 / fps + 1e-9
    assert evs(events, "looking_around") == []


def test_vats_window_arithmetic():
    # one 4 s look away (5-9): the vats counter at t is the away time inside [t-30, t]
    mon, events, states, ts = run(away_fn([(5.0, 9.0)]), fps=30, dur=40)
    by_t = dict(zip(ts, states))
    for t, want in ((7.0, 2.0), (9.0, 4.0), (20.0, 4.0), (36.0, 3.0), (39.0, 0.0)):
        t_s = min(ts, key=lambda x: abs(x - t))
        assert by_t[t_s].counters["vats_away_s"] == pytest.approx(want, abs=1e-6), t


# ----------------------------------------------------------------------------- eyes
def eyes_fn(closed_intervals, yaw=0.0, unknown=()):
    def fn(t):
        if any(a <= t < b for a, b in unknown):
            return face(yaw=yaw, eyes=(math.nan, math.nan))
        return face(yaw=yaw, eyes=SHUT if any(a <= t < b for a, b in closed_intervals) else OPEN)
    return fn


@pytest.mark.parametrize("fps", [15, 30, pytest.param(60, marks=pytest.mark.slow)])   # 60 fps: ~5 s
def test_ordinary_blinks_counted_no_alert(fps):
    # blinks of 0.2-0.4 s every 4 s for 90 s (10 s of eyes open first for the baseline)
    rng = np.random.default_rng(0)
    blinks = [(10 + 4 * k, 10 + 4 * k + d) for k, d in enumerate(rng.uniform(0.2, 0.4, 20))]
    mon, events, states, ts = run(eyes_fn(blinks), fps=fps, dur=91)
    assert events == []
    c = states[-1].counters
    assert c["blinks"] == 20 and c["closures"] == 0
    assert 0.2 - 1 / fps <= c["longest_closure_s"] <= 0.4 + 1 / fps
    t_last = states[-1].timestamp
    # blinks are counted when the eyes open again; those in the last 60 s
    n_last = sum(1 for a, b in blinks if b >= t_last - 60)
    assert c["blink_rate_per_min"] == pytest.approx(n_last, abs=1e-9)
    closed = sum(b - a for a, b in blinks if b > t_last - 60)
    assert c["perclos"] == pytest.approx(closed / 60, abs=n_last / fps / 60)
    assert c["perclos_max"] < 0.15


@pytest.mark.parametrize("fps", [15, 30, 60])
def test_eyes_closed_warning_critical_and_end(fps):
    mon, events, states, ts = run(eyes_fn([(20.0, 21.5), (40.0, 44.0)]), fps=fps, dur=50)
    tol = 1 / fps + 1e-9
    w = evs(events, "eyes_closed", "start", "warning")
    c = one(events, "eyes_closed", "start", "critical")
    e = evs(events, "eyes_closed", "end")
    assert [round(x["t"], 6) for x in w] == pytest.approx([21.0, 41.0], abs=tol)
    assert c["t"] == pytest.approx(43.0, abs=tol)
    assert [x["t"] for x in e] == pytest.approx([22.5, 45.0], abs=tol)
    assert e[1]["level"] == "critical"
    # below the shut level (0.08): relative openness 0
    assert w[0]["eye_open_rel"] == 0.0
    cnt = states[-1].counters
    assert cnt["blinks"] == 0 and cnt["closures"] == 2
    assert cnt["longest_closure_s"] == pytest.approx(4.0, abs=tol)


def test_closure_shorter_than_1_s_is_no_alert_and_no_blink():
    mon, events, states, _ = run(eyes_fn([(20.0, 20.8)]), dur=25)
    assert events == []
    assert states[-1].counters["closures"] == 1 and states[-1].counters["blinks"] == 0


def test_wink_is_not_a_closure():
    def fn(t):
        return face(eyes=(0.02, 0.3) if 10 <= t < 14 else OPEN)
    mon, events, states, _ = run(fn, dur=16)
    assert events == [] and states[-1].counters["longest_closure_s"] == 0


def test_baseline_is_per_driver():
    # narrow eyes (0.21 open; d14 reads 0.42): a fixed threshold at half of d14's openness would
    # call them closed all the time; relative to the driver's own baseline only the real closure
    # counts, and a half-open 0.15 is not "closed" for them (rel 0.54) though it is below 0.2
    def fn(t):
        if 20 <= t < 22:
            return face(eyes=(0.07, 0.075))
        return face(eyes=(0.15, 0.15) if 25 <= t < 28 else (0.21, 0.20))
    mon, events, states, ts = run(fn, dur=30)
    assert [(e["event"], e["level"], round(e["t"], 3)) for e in events] == [
        ("start", "warning", 21.0), ("end", "warning", 23.0)]


def test_started_with_eyes_shut_the_eye_state_is_unknown_until_seen_open():
    # asleep when the monitor starts: the baseline would be the shut level. Unknown, not "open".
    def fn(t):
        return face(eyes=(0.09, 0.095) if t < 10 else OPEN)
    mon, events, states, ts = run(fn, dur=16)
    early = [st for t, st in zip(ts, states) if 2.1 < t < 10]
    assert all(math.isnan(st.signals["eye_open_rel"]) for st in early)
    assert states[-1].signals["eye_open_rel"] == pytest.approx(1.0, abs=0.05)
    assert events == []


def test_long_closure_does_not_drag_the_baseline_down():
    # eyes shut for 70 s (longer than the 60 s baseline window): the alert stays critical
    mon, events, states, ts = run(eyes_fn([(10.0, 80.0)]), fps=15, dur=85)
    st = [s for t, s in zip(ts, states) if 13.0 < t < 80.0]
    assert all(s.alerts and s.alerts[0].kind == "eyes_closed" and s.alerts[0].level == "critical" for s in st)
    assert one(events, "eyes_closed", "end")["t"] == pytest.approx(81.0, abs=1 / 15 + 1e-9)


# ----------------------------------------------------------------------------- PERCLOS
def test_perclos_window_arithmetic_hand_computed():
    # 10 s window, 5 s minimum: eyes open 0-12 s, closed 12.0-12.45 (a blink), open, closed 15-16
    s = MonitorSettings(perclos_window=10.0, perclos_min_seconds=5.0)
    mon, events, states, ts = run(eyes_fn([(12.0, 12.45), (15.0, 16.0)]), fps=20, dur=30, settings=s)
    by_t = {round(t, 6): st for t, st in zip(ts, states)}
    # t=14: window [4, 14]: closed 12.0-12.45 -> hold per frame: 12.00..12.40 = 9 frames x 0.05 = 0.45 s
    assert by_t[14.0].counters["perclos"] == pytest.approx(0.45 / 10)
    # t=20: window [10, 20]: 0.45 + 1.0 closed
    assert by_t[20.0].counters["perclos"] == pytest.approx(1.45 / 10)
    # t=25: window [15, 25]: only the 1 s closure
    assert by_t[25.0].counters["perclos"] == pytest.approx(1.0 / 10)
    # t=22.2: window [12.2, 22.2] clips the blink: 12.2..12.45 = 0.25 s + 1.0
    assert by_t[22.2].counters["perclos"] == pytest.approx(1.25 / 10)
    assert states[-1].counters["perclos_max"] == pytest.approx(1.45 / 10)
    # eye state is known from the first frame after the open-eye baseline has 2 s (t=2.05);
    # PERCLOS needs 5 s of known eyes
    assert math.isnan(by_t[7.0].counters["perclos"]) and by_t[7.05].counters["perclos"] == 0.0


def test_perclos_excludes_unknown_time():
    s = MonitorSettings(perclos_window=10.0, perclos_min_seconds=5.0)
    # eyes unknown (NaN) 12-16 s: window [10, 20] at t=20 has 6 s known, 0.5 closed (18.0-18.5)
    mon, events, states, ts = run(eyes_fn([(18.0, 18.5)], unknown=[(12.0, 16.0)]), fps=20, dur=21, settings=s)
    by_t = {round(t, 6): st for t, st in zip(ts, states)}
    assert by_t[20.0].counters["perclos"] == pytest.approx(0.5 / 6.0)
    # t=18: window [8, 18] known 6 s, nothing closed yet (the 18.0 frame's state counts from 18.0 on)
    assert by_t[18.0].counters["perclos"] == 0.0
    assert states[-1].counters["unknown_eye_frames"] == 80


def test_perclos_drowsy_warning():
    # after 30 s of open eyes, 0.4 s closures every 2 s (20 % closed, each a blink; 12 frames)
    closures = [(30 + 2 * k, 30.4 + 2 * k) for k in range(60)]
    mon, events, states, ts = run(eyes_fn(closures), fps=30, dur=100)
    # PERCLOS(T) over [T-60, T]: closed = 0.45 per started 2 s period since 30, open is the rest.
    # the eye state is known from the frame after 2 s (open-eye baseline): window [max(T-60, 2+1/30), T]
    def perclos(T):
        lo = max(T - 60, 2.0 + 1 / 30)
        if T <= lo:
            return math.nan
        c = sum(max(0.0, min(b, T) - max(a, lo)) for a, b in closures)
        return c / (T - lo)
    ts_arr = np.array(ts)
    ref = np.array([perclos(t) for t in ts])
    got = np.array([s.counters["perclos"] for s in states])
    ok = ts_arr >= 32
    assert np.nanmax(np.abs(got[ok] - ref[ok])) < 1 / 30 / 60 * 2 + 1e-9
    start = one(events, "drowsy", "start", "warning")
    # first T where the hand formula >= 0.15 (within a frame)
    t_ref = next(t for t, r in zip(ts, ref) if r >= 0.15 - 1e-9)
    assert abs(start["t"] - t_ref) <= 2 / 30 + 1e-9
    assert start["perclos"] == pytest.approx(0.15, abs=0.01)
    assert states[-1].counters["blinks"] == 35      # closures starting before 100 s
    assert states[-1].counters["perclos_max"] == pytest.approx(np.nanmax(ref[ok]), abs=1e-3)
    assert evs(events, "eyes_closed") == []


# ----------------------------------------------------------------------------- yawns / nods / no driver
def test_yawns_counted_and_warning():
    yawn_at = (10.0, 40.0, 70.0)
    def fn(t):
        if any(a <= t < a + 2.0 for a in yawn_at):
            return face(mouth=0.8)
        if 50 <= t < 51.0:    # speaking: 1 s openings do not count
            return face(mouth=0.8)
        return face(mouth=0.1)
    mon, events, states, ts = run(fn, fps=30, dur=75)
    assert states[-1].counters["yawns"] == 3
    w = one(events, "yawning", "start", "warning")
    assert w["t"] == pytest.approx(71.5, abs=1 / 30 + 1e-9) and w["yawns_in_window"] == 3
    assert [k for k in ("looking_around", "eyes_closed") if evs(events, k)] == []


def test_nods_counted_and_warning_and_slow_drop_is_not_a_nod():
    # AFLW: down = negative pitch. Nods: 20 deg down for 0.8 s at 10 s and 20 s.
    # 30 s: head stays 18 deg down for 1.9 s (no nod, no looking_around either: < 20 deg)
    def fn(t):
        if 10 <= t < 10.8 or 20 <= t < 20.8:
            return face(yaw=0, pitch=-20)
        if 30 <= t < 31.9:
            return face(yaw=0, pitch=-18)
        return face(yaw=0, pitch=0)
    mon, events, states, ts = run(fn, fps=30, dur=35)
    assert states[-1].counters["nods"] == 2
    w = one(events, "nodding", "start", "warning")
    assert w["t"] == pytest.approx(20.8, abs=1 / 30 + 1e-9) and w["nods_in_window"] == 2
    assert evs(events, "looking_around") == []


@pytest.mark.parametrize("fps", [15, 60])
def test_no_driver(fps):
    fn = lambda t: None if (10.0 <= t < 15.0 or 20.0 <= t < 22.5) else face()
    mon, events, states, ts = run(fn, fps=fps, dur=30)
    s = one(events, "no_driver", "start", "warning")
    e = one(events, "no_driver", "end")
    assert abs(s["t"] - 13.0) <= 1 / fps + 1e-9 and abs(e["t"] - 16.0) <= 1 / fps + 1e-9
    assert s["missing_s"] == pytest.approx(3.0, abs=1 / fps + 1e-6)
    assert [k for k in {e["kind"] for e in events}] == ["no_driver"]
    assert states[-1].counters["unknown_no_face_frames"] == pytest.approx(7.5 * fps, abs=2)


# ----------------------------------------------------------------------------- unknown / NaN
def test_nan_everything_never_alerts_never_crashes():
    nanf = face(yaw=math.nan, pitch=math.nan, eyes=(math.nan, math.nan), mouth=math.nan)
    mon, events, states, ts = run(lambda t: nanf, fps=30, dur=20)
    # no alert ever; the log says, once per signal, that the face's readings are unknown
    assert [e for e in events if e["event"] in ("start", "end")] == []
    assert sorted((e["event"], e["signal"], e["t"]) for e in events) == [
        ("unknown_start", s, 1.0) for s in ("eyes", "mouth", "pose")]
    c = states[-1].counters
    assert c["unknown_pose_frames"] == c["unknown_eye_frames"] == c["unknown_mouth_frames"] == 600
    assert states[-1].calibrating and not states[-1].calibrated
    assert math.isnan(states[-1].signals["yaw_offset"]) and math.isnan(c["perclos"])
    summ = mon.summary()
    assert summ["signal_unknown"]["pose_frames"] == 600
    assert summ["signal_unknown"]["logged"] == {"pose": 1, "eyes": 1, "mouth": 1}
    assert sorted(summ["signal_unknown"]["open"]) == ["eyes", "mouth", "pose"]   # never measured
    json.dumps(summ, allow_nan=False)    # summary is valid JSON as is


def unknown_events(events):
    return [e for e in events if e["kind"] == "signal_unknown"]


@pytest.mark.parametrize("fps", [15, 30, 60])
def test_unknown_eyes_on_a_present_face_are_logged_start_and_end(fps):
    # a profile face: pose known, eyes NaN 10.0-13.0 s, one eye-flicker frame at 20 s
    def fn(t):
        if 10.0 <= t < 13.0 or abs(t - 20.0) < 1e-6:
            return face(eyes=(math.nan, math.nan))
        return face()
    mon, events, states, ts = run(fn, fps=fps, dur=25)
    tol = 1 / fps + 1e-9
    assert [e for e in events if e["event"] in ("start", "end")] == []   # unknown raises no alert
    got = unknown_events(events)
    assert [(e["event"], e["signal"]) for e in got] == [("unknown_start", "eyes"), ("unknown_end", "eyes")]
    s, e = got
    assert s["t"] == pytest.approx(11.0, abs=tol) and s["since_t"] == pytest.approx(10.0, abs=tol)
    assert s["unknown_s"] >= 1.0 - 1e-6 and "NaN" in s["reason"] and "level" not in s
    assert e["t"] == pytest.approx(13.0, abs=tol)                        # first measured frame
    assert e["duration_s"] == pytest.approx(3.0, abs=tol) and e["unknown_frames"] == pytest.approx(3 * fps, abs=1)
    for ev in got:
        assert ts[ev["frame"]] == pytest.approx(ev["t"], abs=1e-6)
        datetime.fromisoformat(ev["time"])
    assert states[-1].counters["unknown_eye_frames"] == pytest.approx(3 * fps + 1, abs=1)   # + the flicker
    assert mon.summary()["signal_unknown"]["logged"] == {"pose": 0, "eyes": 1, "mouth": 0}
    assert mon.summary()["signal_unknown"]["open"] == []
    assert not any(st.alerts for st in states)


def test_unknown_shorter_than_unknown_seconds_is_only_counted():
    def fn(t):   # NaN pose / mouth for 0.9 s every 5 s
        return face(yaw=math.nan, mouth=math.nan) if (t % 5.0) < 0.9 else face()
    mon, events, states, _ = run(fn, fps=30, dur=20)
    assert unknown_events(events) == []
    assert states[-1].counters["unknown_pose_frames"] == 4 * 27
    # the same with --unknown-seconds 0.5: four logged stretches of each signal
    mon, events, _, _ = run(fn, fps=30, dur=20, settings=MonitorSettings(unknown_seconds=0.5))
    got = unknown_events(events)
    assert sum(e["event"] == "unknown_start" and e["signal"] == "pose" for e in got) == 4
    assert sum(e["event"] == "unknown_end" and e["signal"] == "mouth" for e in got) == 4
    assert mon.summary()["signal_unknown"]["logged"] == {"pose": 4, "eyes": 0, "mouth": 4}


def test_unknown_stretch_continues_while_the_face_is_lost_and_no_face_alone_is_not_unknown():
    # eyes NaN 10.0-10.5 s, then no face until 12.5 s (profile face lost), then a normal face
    def fn(t):
        if 10.0 <= t < 10.5:
            return face(eyes=(math.nan, math.nan))
        return None if 10.5 <= t < 12.5 else face()
    mon, events, _, _ = run(fn, fps=30, dur=16)
    got = unknown_events(events)
    assert [(e["event"], e["signal"]) for e in got] == [("unknown_start", "eyes"), ("unknown_end", "eyes")]
    assert got[0]["t"] == pytest.approx(11.0, abs=1 / 30 + 1e-9)
    assert got[1]["t"] == pytest.approx(12.5, abs=1 / 30 + 1e-9)
    # no face for 2 s with nothing unknown before it: counted, not a signal_unknown stretch
    mon, events, states, _ = run(lambda t: None if 10.0 <= t < 12.0 else face(), fps=30, dur=16)
    assert events == [] and states[-1].counters["unknown_no_face_frames"] == 60


@pytest.mark.parametrize("fps", [15, 30])
def test_unknown_frames_inside_a_looking_around_run(fps):
    # away 5-12 s; the pose unknown (NaN / no face) 6.0-6.2 s: bridged like dropped frames, the
    # warning comes 2 s after 5.0; unknown 6.0-6.6 s (> --max-gap 0.5 s): the run restarts at 6.6
    tol = 1 / fps + 1e-9
    for unknown, t_warn in (((6.0, 6.2), 7.0), ((6.0, 6.6), 8.6)):
        for missing in (face(yaw=math.nan, pitch=math.nan), None):
            def fn(t):
                if unknown[0] <= t < unknown[1] - 1e-9:
                    return missing
                return face(yaw=40 if 5 <= t < 12 else 0)
            mon, events, states, ts = run(fn, fps=fps, dur=16)
            w = one(events, "looking_around", "start", "warning")
            assert w["t"] == pytest.approx(t_warn, abs=tol), (unknown, missing)
            assert {e["kind"] for e in events if e["event"] == "start"} == {"looking_around"}
    # a head the detector finds only every other frame (a profile face), turned 55 deg for 4 s:
    # still a looking-around warning 2 s after the turn
    def flicker(t):
        i = int(round(t * fps))
        if 5 <= t < 9:
            return face(yaw=-55) if i % 2 else None
        return face(yaw=0)
    _, events, _, _ = run(flicker, fps=fps, dur=14)
    w = one(events, "looking_around", "start", "warning")
    assert 7.0 - 1e-9 <= w["t"] <= 7.0 + 2 * tol
    assert evs(events, "no_driver") == []


def test_nan_inside_a_run_is_logged_as_unknown():
    # NaN frames during an active alert neither end it nor extend the clearing
    def fn2(t):
        if 9.0 <= t < 9.5:
            return face(yaw=math.nan, pitch=math.nan)
        return face(yaw=40 if 5 <= t < 9 else 0)
    _, events2, _, _ = run(fn2, fps=30, dur=16)
    e = one(events2, "looking_around", "end")
    assert e["t"] == pytest.approx(10.5, abs=1e-6) and e["unknown_frames"] == 15


def test_nan_eyes_during_closure_never_raise_eyes_closed():
    # the eyes go unknown every 0.5 s of a 4 s closure: no continuous 1 s of known closure
    def fn(t):
        if 20 <= t < 24:
            return face(eyes=(math.nan, math.nan) if (t - 20) % 0.5 < 0.1 else SHUT)
        return face()
    mon, events, states, _ = run(fn, dur=30)
    assert evs(events, "eyes_closed") == []
    # 7 closures cut by an unknown frame; the last (23.6-24.0) ends with open eyes: a blink
    assert mon.summary()["signal_unknown"]["closures_ended_unknown"] == 7
    assert states[-1].counters["blinks"] == 1


def test_bad_timestamps_do_not_crash():
    mon = DriverMonitor()
    for i, t in enumerate([0.0, 0.1, 0.2, 0.15, math.nan, 0.3, None, 0.4]):
        st = mon.update(t, i, face())
        assert isinstance(st, MonitorState)
    assert st.timestamp >= 0.4 - 1e-9   # never went backwards
    # a looping file: timestamps restart at 0, the internal clock keeps running
    mon = DriverMonitor()
    for i in range(300):
        mon.update((i % 150) / 30.0, i, face())
    assert mon.t_prev == pytest.approx(299 / 30.0 - 1 / 30.0, abs=1e-6)


# ----------------------------------------------------------------------------- outputs
def test_state_signals_counters_and_event_fields():
    mon, events, states, ts = run(away_fn([(5.0, 9.0)], yaw=-40), dur=12)
    st = states[int(6 * 30)]
    assert st.calibrated and not st.calibrating
    for k in ("yaw_offset", "pitch_offset", "yaw_threshold", "eye_open_rel", "perclos", "mouth_open"):
        assert k in st.signals
    assert st.signals["yaw_offset"] == pytest.approx(-40.0) and st.signals["yaw_threshold"] == 30.0
    for k in ("blinks", "yawns", "nods", "blink_rate_per_min", "perclos", "perclos_max",
              "longest_closure_s", "time_distracted_s"):
        assert k in st.counters
    assert st.counters["time_distracted_s"] == pytest.approx(1.0, abs=1e-6)
    for e in events:
        assert set(e) >= {"time", "t", "frame", "event", "kind", "level"}
        datetime.fromisoformat(e["time"])
        json.dumps(e, allow_nan=False)
    w = events[0]
    assert w["time"] == "2024-05-01T12:00:07.000+00:00" and w["frame"] == 210
    summ = mon.summary()
    assert summ["event"] == "summary" and summ["alerts"] == {"looking_around": {"warning": 1, "critical": 1}}
    assert summ["time_distracted_s"] == pytest.approx(4.0, abs=1e-6)
    assert summ["frames"] == 360


def test_alerts_sorted_most_severe_first():
    # looking away (critical after 3 s) while the eyes are shut 1.5 s (warning)
    def fn(t):
        return face(yaw=40 if t >= 10 else 0, eyes=SHUT if 13.5 <= t < 15 else OPEN)
    mon, events, states, ts = run(fn, dur=16)
    st = states[int(14.6 * 30)]
    assert [(a.kind, a.level) for a in st.alerts] == [("looking_around", "critical"), ("eyes_closed", "warning")]
    assert st.top_alert.kind == "looking_around"


def test_update_settings_keeps_calibration():
    mon, _, _, _ = run(lambda t: face(yaw=10), dur=4)
    mon.update_settings(MonitorSettings(alert_yaw=5.0))
    assert mon.neutral_yaw == pytest.approx(10.0)
    events = []
    for i in range(120, 240):
        mon.update(i / 30, i, face(yaw=16))
        events += mon.last_events
    assert one(events, "looking_around", "start", "warning")["t"] == pytest.approx(6.0, abs=1e-6)


# ----------------------------------------------------------------------------- driver selection
def test_select_driver():
    big = face(box=(300, 100, 500, 330))
    small = face(box=(40, 60, 120, 150))
    assert select_driver([], None) is None
    assert select_driver([small, big], None) is big
    # follows the last driver box, even when another face is larger
    assert select_driver([big, small], last_box=np.array([45, 62, 122, 150.])) is small
    # the last driver is gone (nearest face is far away): largest again
    assert select_driver([big, small], last_box=np.array([900, 500, 960, 560.])) is big
    assert select_driver([small], last_box=[np.nan] * 4) is small


def test_relative_openness_above_the_shut_level():
    # baseline 0.30 (P90 of open samples), shut level 0.08: 0.19 -> (0.19-0.08)/(0.30-0.08) = 0.5;
    # 0.12 -> 0.1818 (closed, < 0.2); 0.13 -> 0.2273 (open)
    vals = {10.0: 0.19, 10.5: 0.12, 11.0: 0.13}
    def fn(t):
        v = next((x for k, x in vals.items() if k <= t < k + 0.2), 0.30)
        return face(eyes=(v, v))
    mon, events, states, ts = run(fn, dur=12)
    by_t = {round(t, 6): st for t, st in zip(ts, states)}
    assert by_t[10.0].signals["eye_open_rel"] == pytest.approx(0.5)
    assert by_t[10.5].signals["eye_open_rel"] == pytest.approx(0.04 / 0.22)
    assert by_t[11.0].signals["eye_open_rel"] == pytest.approx(0.05 / 0.22)
    assert states[-1].counters["blinks"] == 1        # the 0.12 stretch (0.2 s) only


def test_blinks_and_closures_with_dropped_frames_and_jitter():
    blinks = [(10 + 3 * k, 10.3 + 3 * k) for k in range(10)]
    closures = blinks + [(45.0, 46.5)]
    mon, events, states, ts = run(eyes_fn(closures), fps=30, dur=50, jitter=0.3, drop=0.2, seed=7)
    gap = max(np.diff(ts))
    assert gap < 0.5                               # no gap long enough to break a closure
    c = states[-1].counters
    assert c["blinks"] == 10 and c["closures"] == 1
    s = one(events, "eyes_closed", "start", "warning")
    e = one(events, "eyes_closed", "end")
    assert 46.0 - 1e-6 <= s["t"] <= 46.0 + 2 * gap and 47.5 - 1e-6 <= e["t"] <= 47.5 + 2 * gap
    assert len(events) == 2


def test_recalibrate_before_any_frame_and_summary_of_an_empty_run():
    mon = DriverMonitor()
    mon.recalibrate()
    summ = mon.summary()
    assert summ["frames"] == 0 and summ["event"] == "summary" and summ["alerts"] == {}
    st = mon.update(0.0, 0, face())
    assert st.calibrating and mon.last_events == []
