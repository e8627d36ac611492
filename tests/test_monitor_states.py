"""The monitor's state classes (app/monitor/states.py) on their own, on small synthetic series:
each ``step`` is fed timestamps and readings directly, no DriverMonitor around it."""
from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from app.core.types import FaceObservation, Gaze
from app.monitor import DriverMonitor, MonitorSettings
from app.monitor.states import (Calibration, Closures, EyeBaseline, EyeState, Glance, NoDriver, Nods, Perclos,
                                Reading, TimeSharing, UnknownSignals, Window, Yawns)

S = MonitorSettings()
NAN = math.nan


def rd(yaw=0.0, pitch=0.0, gaze=None, eyes=(0.3, 0.3), mouth=0.1, gap=False, face=True):
    """A Reading as Reading.of makes it from a face (gaze: (yaw, pitch) or None = no gaze data)."""
    if not face:
        return Reading.of(None, gap=gap)
    f = FaceObservation(box=np.array([0, 0, 10, 10.]), landmarks=np.zeros((68, 3)), model="t", yaw=yaw,
                        pitch=pitch, eye_open=eyes, mouth_open=mouth,
                        gaze=None if gaze is None else Gaze(yaw=gaze[0], pitch=gaze[1]))
    return Reading.of(f, True, gap)


def ticks(t0, t1, fps=10):
    n = int(round((t1 - t0) * fps))
    return [t0 + i / fps for i in range(n)]


# ------------------------------------------------------------------------------ Reading
def test_reading_marks_what_is_unknown():
    r = Reading.of(None)
    assert not r.face and not (r.pose_known or r.eyes_known or r.mouth_known or r.gaze)
    r = rd(yaw=NAN, eyes=(NAN, -1.0), mouth=NAN, gaze=(NAN, NAN))
    assert r.face and r.gaze and not (r.pose_known or r.eyes_known or r.mouth_known or r.gaze_known)
    assert math.isnan(r.eye_open[1])                        # a negative openness is unknown
    r = rd(eyes=(0.3, NAN), gaze=(4.0, -2.0))
    assert r.eyes_known and r.gaze_known and (r.gaze_yaw, r.gaze_pitch) == (4.0, -2.0)
    f = FaceObservation(box=np.zeros(4), landmarks=np.zeros((68, 3)), model="t", yaw=1.0, pitch=2.0,
                        eye_open=None, gaze=Gaze(yaw=5.0, pitch=1.0))
    r = Reading.of(f, use_gaze=False)
    assert r.pose_known and not r.eyes_known and not r.gaze and math.isnan(r.gaze_yaw)


# ------------------------------------------------------------------------------ Window
def test_window_holds_and_totals():
    w = Window()
    w.hold(0.0, 1.0, 0.5, "a")           # 0.5 s known as "a", the rest of the gap unknown
    w.hold(1.0, 1.0, 1.0, "b")
    assert w.totals(0.0) == {"a": 0.5, None: 0.5, "b": 1.0}
    assert w.totals(0.25) == {"a": 0.25, None: 0.5, "b": 1.0}    # a partly left interval
    assert w.totals(1.5) == {"a": 0.0, None: 0.0, "b": 0.5}
    w.hold(2.0, 0.0, 0.0, "a")           # no time passed: nothing held
    assert len(w.q) == 1


# ------------------------------------------------------------------------------ Calibration
def test_calibration_learns_a_stable_pose_and_its_gaze():
    c = Calibration()
    rng = np.random.default_rng(1)
    offs = []
    for t in ticks(0.0, 3.1):
        offs.append(c.step(t, rd(10 + rng.uniform(-1, 1), -5 + rng.uniform(-1, 1), gaze=(12.0, -6.0)), S))
    # 3 s (calib_seconds) after the first sample, at t = 3.0 (frame 30), the window is complete
    assert c.count == 1 and c.by == "stable" and c.at == pytest.approx(3.0) and not c.calibrating
    assert all(o.away is None and math.isnan(o.yaw) for o in offs[:30])
    assert offs[30].away is False and math.isfinite(offs[30].yaw)         # judged by the new neutral
    assert c.yaw == pytest.approx(10, abs=0.5) and c.pitch == pytest.approx(-5, abs=0.5)
    assert (c.gaze_yaw, c.gaze_pitch) == (12.0, -6.0)
    o = c.step(3.1, rd(c.yaw + 31, c.pitch, gaze=(12.0, -6.0)), S)
    assert o.away == "head" and o.yaw == pytest.approx(31)
    o = c.step(3.2, rd(c.yaw, c.pitch - 21, gaze=(12.0, -6.0)), S)
    assert o.away == "head" and o.down == pytest.approx(21)              # pitch_down_sign -1
    assert c.step(3.3, rd(c.yaw, c.pitch + 25, gaze=(12.0, -6.0)), S).away is False   # looking up
    assert c.step(3.4, rd(c.yaw, c.pitch, gaze=(12.0 - 21, -6.0)), S).away == "gaze"
    assert c.step(3.5, rd(c.yaw, c.pitch, gaze=(12.0, -6.0 - 13)), S).away == "gaze"
    assert c.step(3.6, rd(c.yaw + 40, c.pitch, gaze=(12.0 + 40, -6.0)), S).away == "both"
    # eyes unknown while the head is on the road: unknown; a face without gaze data: the head alone
    assert c.step(3.7, rd(c.yaw, c.pitch, gaze=(NAN, NAN)), S).away is None
    assert c.step(3.8, rd(c.yaw, c.pitch, gaze=None), S).away is False
    assert c.step(3.9, rd(NAN, c.pitch, gaze=(12.0, -6.0)), S).away is None


def test_calibration_falls_back_to_the_median_of_a_restless_head():
    c = Calibration()
    for i, t in enumerate(ticks(0.0, 20.1)):
        c.step(t, rd(8.0 + (10.0 if i % 2 else -10.0), 0.0), S)   # spread 10 > calib_max_spread 6
        if t < 20.0 - 1e-6:
            assert c.calibrating and math.isnan(c.yaw)
    assert c.by == "fallback" and c.count == 1 and c.at == pytest.approx(20.0)
    # the median of the 201 samples over [0, 20] s: 101 at -2, 100 at 18; no gaze data, no neutral gaze
    assert c.yaw == -2.0 and c.pitch == 0.0 and math.isnan(c.gaze_yaw)


def test_neutral_gaze_learned_after_the_pose_when_the_eyes_were_shut():
    c = Calibration()
    for t in ticks(0.0, 3.1):
        c.step(t, rd(0.0, 0.0, gaze=(NAN, NAN)), S)             # eyes closed: no gaze samples
    assert c.count == 1 and math.isnan(c.gaze_yaw)
    for t in ticks(3.1, 4.6):
        c.step(t, rd(0.0, 0.0, gaze=(5.0, 1.0)), S)
    c.step(4.6, rd(45.0, 0.0, gaze=(50.0, 1.0)), S)             # head off the road: starts again
    for t in ticks(4.7, 7.7):
        assert math.isnan(c.gaze_yaw)
        c.step(t, rd(0.0, 0.0, gaze=(6.0, 2.0)), S)
    c.step(7.7, rd(0.0, 0.0, gaze=(6.0, 2.0)), S)               # 3 s after 4.7
    assert (c.gaze_yaw, c.gaze_pitch) == (6.0, 2.0)


def test_periodic_relearning_keeps_the_old_neutral_and_skips_glances():
    s = dataclasses.replace(S, recalibrate_after=10.0)
    c = Calibration()
    for t in ticks(0.0, 3.1):
        c.step(t, rd(0.0, 0.0), s)
    assert c.count == 1 and c.at == pytest.approx(3.0)
    for t in ticks(3.1, 13.0):
        c.step(t, rd(0.0, 0.0), s)
    o = c.step(13.0, rd(50.0, 0.0), s)                          # due: re-learning, a glance is skipped
    assert c.calibrating and c.yaw == 0.0 and o.away == "head"
    for t in ticks(13.1, 16.2):
        c.step(t, rd(4.0, 0.0), s)
    assert c.count == 2 and not c.calibrating and c.yaw == pytest.approx(4.0)
    assert c.at == pytest.approx(16.1)                           # 3 s after the first sample, 13.1


def test_restart_forgets_the_neutral():
    c = Calibration()
    for t in ticks(0.0, 3.1):
        c.step(t, rd(0.0, 0.0, gaze=(1.0, 1.0)), S)
    c.restart()
    assert c.calibrating and math.isnan(c.yaw) and math.isnan(c.gaze_yaw) and c.count == 1
    assert not c.first                                           # a re-learn, not the first one


# ------------------------------------------------------------------------------ Glance, TimeSharing
def test_glance_counts_continuous_away_and_bridges_unknown_frames():
    g = Glance()
    assert g.step(0.0, False, S) == 0.0
    assert g.step(0.1, "head", S) == 0.0
    assert g.step(0.3, "gaze", S) == pytest.approx(0.2) and g.by == {"head", "gaze"}
    assert g.step(0.6, None, S) == pytest.approx(0.5)        # unknown, last away 0.3 s ago: bridged
    assert g.step(0.9, None, S) == 0.0 and g.start is None   # 0.6 s > max_gap: the glance is over
    assert g.step(1.0, "both", S) == 0.0 and g.by == {"head", "gaze"}
    assert g.step(1.6, "head", S) == 0.0                     # a 0.6 s gap: a new glance
    assert g.step(1.7, False, S) == 0.0 and g.by == set()


def test_time_sharing_holds_each_frame_until_the_next():
    ts = TimeSharing()
    secs = []
    for t in ticks(0.0, 4.0):
        away = "head" if t < 1.0 - 1e-9 else ("gaze" if t < 2.0 - 1e-9 else False)
        secs.append(ts.step(t, away, True, S)[0])
    assert secs[10] == pytest.approx(1.0) and secs[-1] == pytest.approx(2.0)
    assert ts.distracted == pytest.approx(2.0)
    assert ts.distracted_by["head"] == pytest.approx(1.0) and ts.distracted_by["gaze"] == pytest.approx(1.0)
    ts.step(4.0, "both", True, S)
    s2, by = ts.step(6.0, False, True, S)                     # a 2 s gap: max_gap 0.5 s held
    assert s2 == pytest.approx(2.5) and by == {"head", "gaze"}
    assert ts.distracted_by["both"] == pytest.approx(0.5)
    assert ts.step(40.0, False, True, S)[0] == pytest.approx(0.0, abs=1e-9)   # the window moved past them
    secs, by = ts.step(40.1, "head", False, S)
    assert math.isnan(secs) and by == set()                   # not armed


# ------------------------------------------------------------------------------ Nods
def test_nods_need_a_quick_recovery():
    n = Nods()
    series = [(0.0, 0.0), (0.5, 16.0), (1.0, 16.0), (1.5, 5.0),   # down 1.0 s, back: one nod
              (2.0, 20.0), (3.0, 20.0), (4.0, 20.0), (4.2, 2.0),  # down 2.2 s > nod_seconds: none
              (5.0, 16.0), (5.2, NAN), (5.4, 2.0)]                # an unknown frame drops it
    got = [n.step(t, d, False, S) for t, d in series]
    assert got == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1] and n.count == 1
    n.step(6.0, 16.0, False, S)
    assert n.step(6.8, 0.0, True, S) == 1                          # after a gap: no nod
    n.step(7.0, 16.0, False, S)
    assert n.step(7.5, 0.0, False, S) == 2
    assert n.step(61.4, 0.0, False, S) == 2
    assert n.step(61.6, 0.0, False, S) == 1                        # the first (1.5) left nod_window (60 s)
    n.restart()
    assert n.step(61.5, 0.0, False, S) == 0 and n.count == 2


# ------------------------------------------------------------------------------ eyes
def test_eye_baseline_and_relative_openness():
    b = EyeBaseline()
    for t in ticks(0.0, 2.1):
        assert math.isnan(b.step(t, (0.30, 0.10), S))          # no baseline before this frame's
    assert b.values[0] == pytest.approx(0.30)                   # 2 s of samples (0 .. 2.0 s)
    assert b.values[1] == pytest.approx(0.10)                   # never seen open: below eye_min_open
    assert b.step(2.1, (0.30, 0.10), S) == pytest.approx(1.0)   # the right eye stays unknown
    assert b.step(2.2, (0.08, 0.30), S) == pytest.approx(0.0)   # at the shut level
    rel = b.step(2.3, (0.10, NAN), S)
    assert rel == pytest.approx((0.10 - 0.08) / (0.30 - 0.08))
    assert len(b.samples[0]) == len(b.times[0]) == 22          # closed samples (2.2, 2.3) stay out


def test_percentile_of_sorted_is_numpys_percentile_to_the_bit():
    from app.monitor.states import percentile_of_sorted

    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 10, 101, 1800):
        for trial in range(20):
            x = rng.random(n) * rng.choice([1.0, 0.37, 1e-3])
            if trial % 3 == 0:
                x = np.round(x, 2)                      # ties
            srt = sorted(x.tolist())
            for p in (0.0, 5.0, 12.5, 33.3, 50.0, 90.0, 95.0, 99.9, 100.0, float(rng.random() * 100)):
                assert percentile_of_sorted(srt, p) == float(np.percentile(x, p)), (n, p)


def test_eye_baseline_equals_the_percentile_of_its_window_every_frame():
    """The sorted window gives, frame after frame, the baseline np.percentile gives over the same
    window in arrival order (a minute of openness with blinks, closures and unknown frames)."""
    from collections import deque

    from app.monitor.states import EPS

    s = MonitorSettings(eye_baseline_window=3.0, eye_baseline_min_seconds=1.0)
    rng = np.random.default_rng(11)
    b = EyeBaseline()
    ref_t, ref_v = (deque(), deque()), (deque(), deque())
    ref_base = [math.nan, math.nan]
    seen = 0
    for i in range(1800):
        t = i / 30.0
        op = [float(np.float32(0.25 + 0.05 * rng.standard_normal())), float(0.27 + 0.04 * rng.random())]
        if i % 90 < 6:
            op = [0.03, 0.04]                             # a blink
        if i % 400 == 200:
            op[1] = math.nan                              # an unknown eye
        rel = b.step(t, op, s)
        # the window's percentile, recomputed from scratch with numpy
        rels = []
        for e in (0, 1):
            v = op[e]
            if not math.isfinite(v):
                continue
            base = ref_base[e]
            r = (max(0.0, (v - s.eye_shut_level) / (base - s.eye_shut_level))
                 if math.isfinite(base) and base >= s.eye_min_open else math.nan)
            if math.isfinite(r):
                rels.append(r)
            if not (r < s.eye_closed_ratio):
                ref_t[e].append(t)
                ref_v[e].append(v)
                while (len(ref_t[e]) > 2 and ref_t[e][0] < t - s.eye_baseline_window - EPS
                       and ref_t[e][-1] - ref_t[e][1] >= s.eye_baseline_min_seconds):
                    ref_t[e].popleft()
                    ref_v[e].popleft()
                if ref_t[e][-1] - ref_t[e][0] >= s.eye_baseline_min_seconds - EPS:
                    ref_base[e] = float(np.percentile(np.array(ref_v[e]), s.eye_baseline_percentile))
        want = max(rels) if rels else math.nan
        assert (rel == want) or (math.isnan(rel) and math.isnan(want)), i
        assert b.values == ref_base or all(
            (x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(b.values, ref_base)), i
        assert [len(o) for o in b.ordered] == [len(v) for v in ref_v]
        seen += math.isfinite(b.values[0])
    assert seen > 1700


def test_closures_blinks_and_unknown_ends():
    c = Closures()
    seq = [(0.0, False), (0.1, True), (0.2, True), (0.4, False),      # 0.3 s: blink
           (1.0, True), (1.8, True), (2.0, False),                     # 1.0 s: closure
           (3.0, True), (3.6, True), (3.7, None),                      # ends unknown: 0.6 s lower bound
           (4.0, True), (4.1, False)]
    got = [c.step(t, cl, False, S) for t, cl in seq]
    assert got == pytest.approx([0, 0, 0.1, 0, 0, 0.8, 0, 0, 0.6, 0, 0, 0])
    assert (c.blinks, c.count, c.unknown_end) == (2, 1, 1)           # the 0.1 s at 4.0 is a blink
    assert c.longest == pytest.approx(1.0)
    assert list(c.blink_times) == pytest.approx([0.4, 4.1])
    c.step(4.2, True, False, S)
    c.step(4.9, True, True, S)                                        # a gap ends it unknown
    assert c.unknown_end == 2 and c.step(61.0, False, False, S) == 0
    assert list(c.blink_times) == pytest.approx([4.1])               # blink_rate_window 60 s


def test_perclos_is_the_closed_share_of_known_time():
    s = dataclasses.replace(S, perclos_window=10.0, perclos_min_seconds=5.0)
    p = Perclos()
    vals = []
    for i in range(21):                       # 1 frame per 0.5 s; closed on every 4th frame
        closed = None if i in (9, 10) else (i % 4 == 0)
        vals.append(p.step(i * 0.5, closed, s))
    assert math.isnan(vals[9].value)           # 4.5 s known so far < 5 s
    last = vals[-1]     # window [0, 10]: 18 known frames held 0.5 s, 5 of them closed (0, 4, 8, 12, 16)
    assert last.known_s == pytest.approx(9.0) and last.closed_s == pytest.approx(2.5)
    assert last.value == pytest.approx(2.5 / 9.0)
    # the highest: at 6.5 s, 5.5 s known of which 2 s closed (0, 4, 8, 12)
    assert p.max == pytest.approx(2.0 / 5.5) == np.nanmax([v.value for v in vals])
    gapped = p.step(20.0, False, s)            # the 9.5 s gap: 0.5 s of it known (max_gap)
    assert gapped.known_s == pytest.approx(0.5) and math.isnan(gapped.value)


def test_eye_state_chains_baseline_closures_and_perclos():
    e = EyeState()
    for t in ticks(0.0, 2.1):
        e.step(t, rd(eyes=(0.3, 0.3)), S)
    r1 = e.step(2.1, rd(eyes=(0.09, 0.09)), S)
    r2 = e.step(2.2, rd(eyes=(0.09, 0.09)), S)
    r3 = e.step(2.3, rd(eyes=(0.3, 0.3)), S)
    assert (r1.closed, r2.closed, r3.closed) == (True, True, False)
    assert r2.closed_s == pytest.approx(0.1) and e.closures.blinks == 1
    assert e.step(2.4, rd(eyes=(NAN, NAN)), S).closed is None


# ------------------------------------------------------------------------------ yawns
def test_yawns_count_long_openings_once():
    y = Yawns()
    got = [y.step(t, rd(mouth=0.7 if 1.0 <= t < 3.0 else 0.1), S) for t in ticks(0.0, 4.0)]
    assert y.count == 1 and got.index(1) == 25              # at 1.0 + yawn_seconds 1.5
    for t in ticks(5.0, 6.0):
        y.step(t, rd(mouth=0.7), S)
    y.step(6.6, rd(mouth=0.7, gap=True), S)                  # a gap inside the opening: restart
    assert y.step(7.9, rd(mouth=0.7), S) == 1
    assert y.step(8.1, rd(mouth=0.7), S) == 2 and y.count == 2
    assert y.step(8.2, rd(mouth=NAN), S) == 2 and y.start is None
    assert y.step(303.0, rd(), S) == 1                      # the first left yawn_window (300 s)


# ------------------------------------------------------------------------------ unknown, no driver
def test_unknown_stretches_and_counts():
    u = UnknownSignals()
    log = []
    for t in ticks(0.0, 1.5):
        log += [(w, sig, t) for w, sig, _ in u.step(t, rd(yaw=NAN, mouth=NAN if t < 0.5 else 0.1), S)]
    for t in (1.5, 1.6):                                       # no face: the pose stretch stays open
        log += [(w, sig, t) for w, sig, _ in u.step(t, rd(face=False), S)]
    st = u.open["pose"]
    assert st.since == 0.0 and st.frames == 17 and st.logged
    t = 1.7
    log += [(w, sig, t) for w, sig, _ in u.step(t, rd(), S)]
    assert [(w, sig) for w, sig, _ in log] == [("unknown_start", "pose"), ("unknown_end", "pose")]
    assert log[0][2] == pytest.approx(1.0) and log[1][2] == pytest.approx(1.7)
    assert u.open == {"pose": None, "eyes": None, "mouth": None}     # mouth: 0.5 s, not logged
    assert u.frames == {"no_face_frames": 2, "pose_frames": 15, "eye_frames": 0, "mouth_frames": 5}
    assert u.logged == {"pose": 1, "eyes": 0, "mouth": 0}
    u.step(2.0, rd(face=False), S)
    assert u.open["eyes"] is None                              # no face alone opens nothing
    u.step(2.1, rd(gaze=(NAN, NAN)), S)
    assert u.gaze_frames == 1


def test_no_driver_times_the_missing_face():
    n = NoDriver()
    assert [n.step(t, rd(face=t < 0.2 or t >= 0.6)) for t in ticks(0.0, 0.8)] == pytest.approx(
        [0, 0, 0, 0.1, 0.2, 0.3, 0, 0])


# ------------------------------------------------------------------------------ DriverMonitor's output
def test_update_returns_its_events_and_last_events_is_a_read_only_copy():
    mon = DriverMonitor(wall_start=datetime(2024, 5, 1, tzinfo=timezone.utc))
    seen = []
    for i, t in enumerate(ticks(0.0, 4.0, fps=30)):
        st = mon.update(t, i, None)
        assert mon.last_events == list(st.events)
        seen += st.events
        if i == 90:
            assert len(st.events) == 1
    assert [(e["event"], e["kind"], e["frame"]) for e in seen] == [("start", "no_driver", 90)]
    with pytest.raises(AttributeError):
        mon.last_events = []
    assert st.events == () and mon.state is st
    mon.last_events.append({"x": 1})                           # a copy: the state is untouched
    assert mon.last_events == [] and st.events == ()


def test_recalibrate_events_come_with_the_next_update():
    mon = DriverMonitor(wall_start=datetime(2024, 5, 1, tzinfo=timezone.utc))
    f = FaceObservation(box=np.array([0, 0, 10, 10.]), landmarks=np.zeros((68, 3)), model="t",
                        yaw=0.0, pitch=0.0, eye_open=(0.3, 0.3), mouth_open=0.1)
    turned = dataclasses.replace(f, yaw=50.0)
    i = 0
    for t in ticks(0.0, 6.0, fps=30):
        mon.update(t, i, f if t < 3.05 else turned)
        i += 1
    assert [a.kind for a in mon.state.alerts] == ["looking_around"]
    before = mon.state.events
    mon.recalibrate()
    assert mon.state.events == before                          # nothing new until the next update
    st = mon.update(6.0, i, f)
    ends = [e for e in st.events if e["event"] == "end"]
    assert [(e["kind"], e["reason"], e["frame"]) for e in ends] == [("looking_around", "recalibrate", i - 1)]
    assert st.alerts == [] and st.calibrating
