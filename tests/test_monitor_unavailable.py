"""Monitoring unavailable (eyes not visible, no driver, too dark, camera lost) and the unresponsive
driver (Euro NCAP 2026 "Unresponsive"), on synthetic series at 15, 30 and 60 fps."""
from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest

from app.core.types import FaceObservation
from app.monitor import DriverMonitor, MonitorSettings
from app.monitor.core import camera_unavailable_event
from app.io.sound import sound_for
from app.render import banner_text

OPEN = (0.30, 0.28)
SHUT = (0.02, 0.02)
FPS = (15, 30, 60)


def face(yaw=2.0, pitch=-4.0, eyes=OPEN, hidden=False, why="occluded"):
    """A driver face; ``hidden``: neither eye visible (eye_available False, e.g. dark lenses),
    with an eyelid reading that would say "closed" if it were believed."""
    return FaceObservation(box=np.array((100, 100, 220, 240), float), landmarks=np.zeros((68, 3)),
                           model="synthetic", yaw=yaw, pitch=pitch, eye_open=SHUT if hidden else eyes,
                           mouth_open=0.1, eye_available=(False, False) if hidden else (True, True),
                           eye_unavailable_why=why if hidden else None)


def run(fn, fps=30, dur=30.0, settings=None, bright=None):
    mon = DriverMonitor(settings or MonitorSettings(),
                        wall_start=datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc))
    events, states = [], []
    for i in range(int(round(dur * fps))):
        t = i / fps
        st = mon.update(t, i, fn(t), math.nan if bright is None else bright(t))
        events += st.events
        states.append((t, st))
    return mon, events, states


def ev(events, event, **kw):
    return [e for e in events if e["event"] == event and all(e.get(k) == v for k, v in kw.items())]


@pytest.mark.parametrize("fps", FPS)
def test_eyes_hidden_start_and_end_within_the_delay(fps):
    # lenses on 10-25 s: unavailable_start (eyes, occluded) 5 s after their first frame, the end
    # clear_seconds (1 s) after they come off; no eye alert although the eyelids read "shut"
    mon, events, states = run(lambda t: face(hidden=10 <= t < 25), fps=fps, dur=32)
    tol = 1 / fps + 1e-9
    (s,) = ev(events, "unavailable_start", what="eyes")
    (e,) = ev(events, "unavailable_end", what="eyes")
    assert s["why"] == "occluded" and s["since_t"] == pytest.approx(10.0, abs=tol)
    assert s["t"] == pytest.approx(15.0, abs=tol) and e["t"] == pytest.approx(26.0, abs=tol)
    assert e["duration_s"] == pytest.approx(15.0, abs=tol)
    assert [x for x in events if x["event"] == "start"] == []
    by_t = dict(states)
    assert by_t[min(by_t, key=lambda t: abs(t - 20))].unavailable == {"eyes": "occluded"}
    assert by_t[min(by_t, key=lambda t: abs(t - 12))].unavailable == {}      # not reported yet
    assert mon.summary()["unavailable"]["eyes"] == {"logged": 1, "seconds": pytest.approx(15.0, abs=tol)}


def test_delay_is_a_setting_at_most_10_s():
    mon, events, _ = run(lambda t: face(hidden=t >= 5), dur=20, settings=MonitorSettings(unavailable_seconds=8))
    assert ev(events, "unavailable_start")[0]["t"] == pytest.approx(13.0, abs=0.04)
    with pytest.raises(ValueError, match="--unavailable-seconds"):
        MonitorSettings(unavailable_seconds=12).validate()


def test_short_occlusions_and_one_frame_flicker():
    # hidden for 4 s (a hand wiping the face): nothing logged; a 5 s+ occlusion with one visible
    # frame in the middle is still one stretch (hysteresis: seen again for 1 s ends it)
    mon, events, _ = run(lambda t: face(hidden=10 <= t < 14), dur=20)
    assert ev(events, "unavailable_start") == []
    mon, events, _ = run(lambda t: face(hidden=10 <= t < 22 and abs(t - 13) > 0.02), dur=30)
    assert len(ev(events, "unavailable_start")) == 1 and ev(events, "unavailable_start")[0]["t"] == pytest.approx(15, abs=0.04)


@pytest.mark.parametrize("fps", FPS)
def test_eye_alerts_end_and_do_not_start_while_the_eyes_are_hidden(fps):
    # eyes shut 10-14 s: eyes_closed warning then critical; lenses from 12.5 s: the alert ends
    # (reason eyes_unavailable) within clear_seconds, nothing eye-related starts again
    def fn(t):
        return face(eyes=SHUT if 10 <= t < 14 else OPEN, hidden=t >= 12.5)
    _, events, _ = run(fn, fps=fps, dur=40)
    (end,) = ev(events, "end", kind="eyes_closed")
    assert end["reason"] == "eyes_unavailable" and 13.5 - 1e-9 <= end["t"] <= 13.5 + 1 / fps + 1e-9
    assert [e for e in events if e["event"] == "start" and e["t"] > 12.5] == []
    assert ev(events, "unresponsive") == []


def test_perclos_does_not_count_hidden_seconds_and_drowsy_ends():
    # 60 s with a 25 % closed duty cycle (0.6 s shut every 2.4 s: blinks and closures, never 1 s)
    # -> drowsy; then lenses for 60 s: drowsy ends, the window's known time does not grow
    def fn(t):
        shut = (t % 2.4) < 0.6 and t > 3
        return face(eyes=SHUT if shut else OPEN, hidden=t >= 60)
    mon, events, states = run(fn, fps=30, dur=120)
    (start,) = ev(events, "start", kind="drowsy")
    (end,) = ev(events, "end", kind="drowsy")
    assert start["t"] < 60 and end["reason"] == "eyes_unavailable" and 61 - 0.04 <= end["t"] <= 61 + 0.04
    known = [st.counters["perclos"] for t, st in states if t > 62]
    # the last 60 s hold no known eye time: PERCLOS is not reported (NaN), no drowsy restart
    assert all(math.isnan(k) for k in known[-300:])
    assert len(ev(events, "start", kind="drowsy")) == 1


@pytest.mark.parametrize("fps", FPS)
def test_head_rules_keep_working_while_the_eyes_are_hidden(fps):
    # lenses from 5 s (after calibration), head turned 40 deg 12-17 s: looking_around by head
    _, events, _ = run(lambda t: face(yaw=40 if 12 <= t < 17 else 2, hidden=t >= 5), fps=fps, dur=25)
    (w,) = ev(events, "start", kind="looking_around", level="warning")
    assert w["by"] == "head" and w["t"] == pytest.approx(14.0, abs=1 / fps + 1e-9)


def test_gaze_only_glance_ends_when_the_eyes_are_hidden():
    from app.core.types import Gaze

    def fn(t):
        f = face(hidden=t >= 10)
        f.gaze = Gaze(yaw=35.0 if t >= 6 else 0.0, pitch=0.0)
        return f
    _, events, _ = run(fn, dur=20)
    (w,) = ev(events, "start", kind="looking_around", level="warning")
    assert w["by"] == "gaze" and w["t"] == pytest.approx(8.0, abs=0.04)
    (end,) = ev(events, "end", kind="looking_around")
    assert end["reason"] == "eyes_unavailable" and end["t"] == pytest.approx(11.0, abs=0.04)


@pytest.mark.parametrize("fps", FPS)
def test_driver_missing_no_face_or_too_dark(fps):
    tol = 1 / fps + 1e-9
    _, events, _ = run(lambda t: None if 10 <= t < 20 else face(), fps=fps, dur=25, bright=lambda t: 110.0)
    (s,) = ev(events, "unavailable_start", what="driver")
    (e,) = ev(events, "unavailable_end", what="driver")
    assert s["why"] == "no_face" and s["t"] == pytest.approx(15.0, abs=tol) and e["t"] == pytest.approx(21.0, abs=tol)
    _, events, states = run(lambda t: None if t >= 10 else face(), fps=fps, dur=20,
                            bright=lambda t: 4.0 if t >= 10 else 110.0)
    (s,) = ev(events, "unavailable_start", what="driver")
    assert s["why"] == "too_dark"
    assert banner_text(states[-1][1])[0].startswith("WARNING: DRIVER NOT VISIBLE")


def test_camera_lost_record():
    lost = {"time": "x", "t": 3.0, "frame": 90, "event": "camera_lost", "kind": "camera"}
    back = {"time": "y", "t": 9.0, "frame": 91, "event": "camera_back", "kind": "camera", "lost_s": 6.0}
    assert camera_unavailable_event(lost) == {"time": "x", "t": 3.0, "frame": 90, "event": "unavailable_start",
                                              "kind": "unavailable", "what": "camera", "why": "camera_lost"}
    assert camera_unavailable_event(back)["event"] == "unavailable_end"
    assert camera_unavailable_event(back)["duration_s"] == 6.0
    assert camera_unavailable_event({"event": "start"}) is None


def test_banner_and_sound():
    _, events, states = run(lambda t: face(hidden=t >= 5), dur=12)
    st = states[-1][1]
    assert banner_text(st) == ("MONITORING LIMITED — eyes not visible", "limited")
    assert sound_for(st, ev(events, "unavailable_start")) == "alert"
    assert sound_for(st, []) is None


# ----------------------------------------------------------------------------- unresponsive
@pytest.mark.parametrize("fps", FPS)
def test_unresponsive_after_sleep(fps):
    # eyes shut 10-18 s: microsleep warning at 11 s, sleep (critical) at 13 s, no response:
    # unresponsive (emergency) at 16 s = 6 s of closure (Euro NCAP: eyes closed >= 6 s); the
    # eyes open at 18 s: unresponsive_end 1 s later
    tol = 1 / fps + 1e-9
    mon, events, states = run(lambda t: face(eyes=SHUT if 10 <= t < 18 else OPEN), fps=fps, dur=25)
    w = ev(events, "start", kind="eyes_closed", level="warning")[0]
    c = ev(events, "start", kind="eyes_closed", level="critical")[0]
    (u,) = ev(events, "unresponsive")
    (ue,) = ev(events, "unresponsive_end")
    assert w["closure"] == "microsleep" and c["closure"] == "sleep"
    assert w["t"] == pytest.approx(11, abs=tol) and c["t"] == pytest.approx(13, abs=tol)
    assert u["t"] == pytest.approx(16, abs=tol) and u["level"] == "emergency" and u["kind"] == "unresponsive"
    assert u["cause"] == "sleep" and u["closed_s"] == pytest.approx(6.0, abs=tol)
    assert ue["t"] == pytest.approx(19, abs=tol)
    during = [st for t, st in states if 16.1 < t < 18]
    assert all(st.emergency is not None and st.emergency.level == "emergency" for st in during)
    assert all(st.alerts[0].kind == "eyes_closed" for st in during)     # the alerts stay as they were
    assert banner_text(during[0])[1] == "emergency" and sound_for(during[0], []) == "emergency"
    assert mon.summary()["alerts"]["unresponsive"] == {"emergency": 1}


@pytest.mark.parametrize("fps", FPS)
def test_no_unresponsive_when_the_driver_responds(fps):
    # shut 5.9 s: critical, but the eyes open before 3 s have passed at the critical level
    _, events, _ = run(lambda t: face(eyes=SHUT if 10 <= t < 15.9 else OPEN), fps=fps, dur=25)
    assert ev(events, "start", kind="eyes_closed", level="critical") and ev(events, "unresponsive") == []
    # eyes opened for one frame at 14.5 s (a response): the wait restarts, unresponsive at 17.5
    i_open = round(14.5 * fps)
    _, events, _ = run(lambda t: face(eyes=OPEN if round(t * fps) == i_open or not 10 <= t < 20 else SHUT),
                       fps=fps, dur=25)
    (u,) = ev(events, "unresponsive")
    assert u["t"] == pytest.approx((i_open + 1) / fps + 3.0 - 1 / fps, abs=1 / fps + 1e-9)


@pytest.mark.parametrize("fps", FPS)
def test_unresponsive_after_eyes_off_the_road(fps):
    # head turned 40 deg from 10 s for 8 s: looking_around warning 12, critical 13, unresponsive 16
    tol = 1 / fps + 1e-9
    _, events, _ = run(lambda t: face(yaw=40 if 10 <= t < 18 else 2), fps=fps, dur=25)
    (u,) = ev(events, "unresponsive")
    assert u["t"] == pytest.approx(16, abs=tol) and u["cause"] == "eyes_off_road" and u["by"] == "head"
    assert ev(events, "unresponsive_end")[0]["t"] == pytest.approx(19, abs=tol)


def test_unresponsive_seconds_setting():
    s = MonitorSettings(unresponsive_seconds=1.5)
    _, events, _ = run(lambda t: face(eyes=SHUT if 10 <= t < 18 else OPEN), dur=25, settings=s)
    assert ev(events, "unresponsive")[0]["t"] == pytest.approx(14.5, abs=0.04)


def test_emergency_sound_is_the_generated_louder_one(tmp_path):
    import importlib.util
    import wave
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("make_alert_sound", root / "assets" / "make_alert_sound.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    assert mk.main(["--emergency", str(tmp_path / "e.wav")]) == 0
    assert (tmp_path / "e.wav").read_bytes() == (root / "assets" / "emergency.wav").read_bytes()

    def peak(p):
        with wave.open(str(p), "rb") as w:
            return int(np.abs(np.frombuffer(w.readframes(w.getnframes()), "<i2")).max())
    assert peak(root / "assets" / "emergency.wav") > 1.8 * peak(root / "assets" / "alert.wav")
