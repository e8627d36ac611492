"""Driver-monitoring rules: pure state machine over (timestamp, driver observation or None).

``DriverMonitor(settings).update(t, frame_index, face) -> MonitorState`` once per frame. Time
comes only from the timestamps (never from frame counts), so the rules behave the same at 15, 30
or 60 fps and with dropped frames or jitter. Conventions (docs/driver-monitoring.md):

- Every "continuously for X s" timer runs from the timestamp of the first frame where its
  condition holds to the current frame's timestamp; a frame gap longer than ``max_gap`` or an
  unknown frame (no face, NaN angle/eye/mouth) breaks it, except looking around, which bridges
  unknown frames like dropped frames while its last away frame is at most ``max_gap`` old.
  Unknown never raises an alert (an alert starts or escalates only on a known frame).
- Time-weighted windows (PERCLOS, time sharing) hold each frame's state until the next frame's
  timestamp (zero-order hold), at most ``max_gap`` s; the rest of a longer gap is "unknown" and
  is left out of both numerator and denominator.
- Looking around and time sharing count a frame as "away" when the head pose is off the road
  (offset from the neutral pose beyond --alert-yaw / --alert-pitch) or the eyes are (gaze offset
  from the neutral gaze beyond --gaze-yaw / --gaze-pitch, the gaze of ``FaceObservation.gaze``).
  Events say which: ``by`` is "head", "gaze" or "both" (both seen during the glance / in the
  window). A face with gaze data whose eyes are unknown (a blink, eyes closed) while the head is
  on the road is an unknown frame for these rules (a blink inside an eyes-only glance is bridged
  like a dropped frame); a face without gaze data (``gaze`` None) is judged by its head alone.
- A detected face whose pose / eyes / mouth reading stays unknown for ``unknown_seconds`` is
  logged: an "unknown_start" event (kind "signal_unknown", the signal named), and "unknown_end"
  when the signal is measured again. These are not alerts (no level, no sound, not in
  ``MonitorState.alerts``).
- An alert starts when its rule fires and no cooldown of that kind is running; it ends when its
  condition has been false (known) for ``clear_seconds``. Escalation warning -> critical is a new
  "start" event with level "critical" (the alert keeps its ``since``); its "end" event carries the
  last level. After an end, the kind is quiet for ``cooldown_seconds``; a rule still firing when
  the cooldown runs out starts the alert then.

Structure (after openpilot's selfdrive/monitoring/helpers.py): the bookkeeping lives in small
state classes (app.monitor.states: calibration, glance, time sharing, nods, eyes, yawns, unknown
signals, no driver), each a pure ``step``. ``update`` runs them (``_update_states``), then turns
their outputs into the alert rules' conditions (``_update_events``) and returns the MonitorState,
whose ``events`` are the frame's new events (``start`` / ``end`` / ``unknown_start`` /
``unknown_end`` dicts, in the event-log format).
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta, timezone
from typing import NamedTuple, Optional, Sequence

import numpy as np

from app.core.types import Alert, FaceObservation, MonitorState
from app.monitor.settings import MonitorSettings
from app.monitor.states import (EPS, UNAVAILABLE, UNKNOWN_SIGNALS, Calibration, EyesReading, EyeState,
                                Glance, NoDriver, Nods, Offsets, Reading, TimeSharing, Unavailability,
                                UnknownSignals, Yawns, by_of, finite)

__all__ = ["DriverMonitor", "select_driver", "KINDS", "UNKNOWN_SIGNALS", "UNAVAILABLE",
           "camera_unavailable_event"]

log = logging.getLogger(__name__)

KINDS = ("unresponsive", "eyes_closed", "no_driver", "looking_around", "time_sharing", "drowsy", "nodding",
         "yawning")
_KIND_RANK = {k: i for i, k in enumerate(KINDS)}   # order among alerts of the same level
_LEVEL_RANK = {"warning": 1, "critical": 2, "emergency": 3}
# alerts that need the eyes: ended when the eyes cannot be seen (looking_around / time_sharing
# only when the eyes alone made them: by "gaze")
_EYE_KINDS = ("eyes_closed", "drowsy")
_GAZE_KINDS = ("looking_around", "time_sharing")
_UNKNOWN_REASON = {
    "pose": "head pose not measured (NaN yaw / pitch)",
    "eyes": "eye openness not measured (NaN or missing for both eyes, e.g. a profile face)",
    "mouth": "mouth openness not measured (NaN or missing)",
}


def _r(x, nd=4):
    """Round for the event log; NaN/None -> None (JSON null)."""
    return round(float(x), nd) if finite(x) else None


def camera_unavailable_event(record: dict) -> Optional[dict]:
    """The "unavailable_start" / "unavailable_end" line (what "camera", why "camera_lost") of a
    camera_lost / camera_back event-log line (app.runner.source_event_record); None for others."""
    what = {"camera_lost": "unavailable_start", "camera_back": "unavailable_end"}.get(record.get("event"))
    if what is None:
        return None
    out = {k: record[k] for k in ("time", "t", "frame") if k in record}
    out.update({"event": what, "kind": "unavailable", "what": "camera", "why": "camera_lost"})
    if what == "unavailable_end" and "lost_s" in record:
        out["duration_s"] = record["lost_s"]
    return out


# ------------------------------------------------------------------------------ driver selection
def select_driver(faces: Sequence[FaceObservation], last_box=None,
                  max_jump: float = 1.0) -> Optional[FaceObservation]:
    """The driver among ``faces``: the face whose centre is nearest the last driver box centre
    when that distance is at most ``max_jump`` x the last box diagonal; otherwise (first frame,
    driver gone) the largest face. None when there is no face."""
    faces = [f for f in (faces or []) if f is not None]
    if not faces:
        return None
    if last_box is not None:
        lb = np.asarray(last_box, dtype=float).reshape(-1)[:4]
        if np.all(np.isfinite(lb)):
            c = np.array([(lb[0] + lb[2]) / 2.0, (lb[1] + lb[3]) / 2.0])
            diag = float(np.hypot(lb[2] - lb[0], lb[3] - lb[1]))
            d = [float(np.linalg.norm(f.center - c)) for f in faces]
            i = int(np.argmin(d))
            if d[i] <= max_jump * diag:
                return faces[i]
    return max(faces, key=lambda f: f.area)


# ------------------------------------------------------------------------------ alert rules
class Rule:
    """One alert kind: start (with cooldown), escalation, hysteresis end. ``step`` and ``end``
    return the events they cause (dicts without the time stamp)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.active: Optional[Alert] = None
        self.clear_since: Optional[float] = None
        self.cooldown_until = -math.inf
        self.unknown_frames = 0
        self.starts = {"emergency": 0} if kind == "unresponsive" else {"warning": 0, "critical": 0}
        self.critical_since: Optional[float] = None   # when the active alert reached critical
        self.answered: Optional[float] = None         # last frame of the active alert its condition was false

    def _event(self, what: str, level: str, values: dict) -> dict:
        return {"event": what, "kind": self.kind, "level": level, **values}

    def step(self, t: float, cond: Optional[bool], level: Optional[str], values: dict,
             s: MonitorSettings) -> list[dict]:
        """``cond``: the condition this frame (None = unknown); ``level``: the level it fires at
        (None = it does not fire)."""
        if self.active is None:
            if level is not None and t >= self.cooldown_until - EPS:
                self.active = Alert(self.kind, level, t, dict(values))
                self.clear_since = None
                self.unknown_frames = 0
                self.starts[level] += 1
                self.critical_since = t if level == "critical" else None
                self.answered = None
                return [self._event("start", level, values)]
            return []
        out = []
        a = self.active
        if level is not None and _LEVEL_RANK[level] > _LEVEL_RANK[a.level]:
            a.level = level
            a.values = dict(values)
            self.starts[level] += 1
            if level == "critical":
                self.critical_since = t
            out.append(self._event("start", level, {**values, "escalated_from": "warning"}))
        if cond is True:
            self.clear_since = None
        elif cond is None:
            self.unknown_frames += 1
            self.clear_since = None      # "back for 1 s" must be 1 s of known, good frames
        else:
            self.answered = t
            if self.clear_since is None:
                self.clear_since = t
            if t - self.clear_since >= s.clear_seconds - EPS:
                out += self.end(t, {}, s)
        return out

    def end(self, t: float, extra: dict, s: MonitorSettings) -> list[dict]:
        a = self.active
        if a is None:
            return []
        self.active = None
        self.clear_since = None
        self.critical_since = None
        self.cooldown_until = t + s.cooldown_seconds
        return [self._event("end", a.level, {"duration_s": _r(t - a.since, 3),
                                             "unknown_frames": self.unknown_frames, **extra})]


def _level(secs: float, warning: float, critical: float) -> Optional[str]:
    if secs >= critical - EPS:
        return "critical"
    if secs >= warning - EPS:
        return "warning"
    return None


class _Step(NamedTuple):
    """What the state classes made of one frame (input of _update_events and the MonitorState)."""
    r: Reading
    off: Offsets
    away_s: float                # this glance away so far
    vats_s: float                # away seconds in the time-sharing window (NaN: not armed)
    vats_by: set
    nods: int                    # nods in their window
    eyes: EyesReading
    yawns: int                   # yawns in their window
    unknown: list                # (what, signal, stretch) to log
    missing_s: float             # seconds without a driver
    unavailable: list            # (what, thing, stretch) to log (unavailable_start / _end)


# ------------------------------------------------------------------------------ the monitor
class DriverMonitor:
    """Per-frame driver-monitoring rules. See the module docstring for the time conventions."""

    def __init__(self, settings: Optional[MonitorSettings] = None, *,
                 wall_start: Optional[datetime] = None):
        self.settings = (settings or MonitorSettings()).validate()
        self._wall_start_given = wall_start
        self.reset()

    # -------------------------------------------------------------- public API
    def reset(self) -> None:
        """Forget everything (calibration, baselines, counters, alerts)."""
        self.wall_start: Optional[datetime] = self._wall_start_given
        self.t0: Optional[float] = None          # first timestamp (internal clock)
        self.t_prev: Optional[float] = None
        self.frame_prev = -1
        self._offset = 0.0                        # added to timestamps that went backwards
        self._warned_time = False
        self.frames = 0
        self._pending: list[dict] = []            # recalibrate()'s events, sent with the next update
        self.rules = {k: Rule(k) for k in KINDS}
        self.calib = Calibration()
        self.glance = Glance()
        self.sharing = TimeSharing()
        self.nodding = Nods()
        self.eyes = EyeState()
        self.yawning = Yawns()
        self.unknown = UnknownSignals()
        self.no_driver = NoDriver()
        self.unavailability = Unavailability()
        self.state = MonitorState()

    def update_settings(self, settings: MonitorSettings) -> None:
        """New thresholds, same calibration / baselines / counters."""
        self.settings = settings.validate()

    def recalibrate(self) -> None:
        """Learn the neutral pose again from the next stable seconds; looking-around, time-sharing
        and nodding alerts end now (their "end" events come with the next update)."""
        if self.t_prev is not None:
            ended = []
            for k in ("looking_around", "time_sharing", "nodding"):
                ended += self.rules[k].end(self.t_prev, {"reason": "recalibrate"}, self.settings)
                self.rules[k].cooldown_until = -math.inf
            self._pending += self._stamp(self.t_prev, self.frame_prev, ended)
        self.calib.restart()
        self.sharing.restart()
        self.glance.reset()
        self.nodding.restart()

    def update(self, t: float, frame_index: int, face: Optional[FaceObservation],
               brightness: float = math.nan) -> MonitorState:
        """One frame: ``t`` its timestamp (s), ``face`` the driver or None (no face),
        ``brightness`` the frame's mean grey level 0-255 (NaN: not measured; below
        ``too_dark_level`` a missing driver is "too_dark"). The returned state's ``events`` are the
        events of this call."""
        s = self.settings
        frame = int(frame_index)
        t = self._clock(t)
        if self.t0 is None:
            self.t0 = t
            if self.wall_start is None:
                self.wall_start = datetime.now(timezone.utc).astimezone()
        gap = self.t_prev is not None and t - self.t_prev > s.max_gap + EPS
        self.frames += 1
        dark = bool(brightness < s.too_dark_level)        # NaN: False
        st = self._update_states(t, Reading.of(face, bool(s.use_gaze), gap, dark))
        events = self._pending + self._stamp(t, frame, self._update_events(t, st))
        self._pending = []
        self.t_prev = t
        self.frame_prev = frame
        self.state = self._monitor_state(t, st, events)
        return self.state

    @property
    def last_events(self) -> list[dict]:
        """The events of the last update (a copy of ``state.events``)."""
        return list(self.state.events)

    # the run's figures most callers read
    @property
    def blinks(self) -> int:
        return self.eyes.closures.blinks

    @property
    def closures(self) -> int:
        return self.eyes.closures.count

    @property
    def neutral_yaw(self) -> float:
        return self.calib.yaw

    @property
    def neutral_pitch(self) -> float:
        return self.calib.pitch

    @property
    def neutral_gaze_yaw(self) -> float:
        return self.calib.gaze_yaw

    @property
    def neutral_gaze_pitch(self) -> float:
        return self.calib.gaze_pitch

    @property
    def calibrated_by(self) -> Optional[str]:
        return self.calib.by

    def summary(self) -> dict:
        """The run's totals as the final event-log line ({"event": "summary", ...})."""
        t = self.t_prev if self.t_prev is not None else 0.0
        dur = (t - self.t0) if self.t0 is not None else 0.0
        cl, cal, unk = self.eyes.closures, self.calib, self.unknown
        ev = self._base_event(t, self.frame_prev)
        ev.update({
            "event": "summary",
            "frames": self.frames,
            "duration_s": _r(dur, 3),
            "blinks": cl.blinks,
            "blink_rate_per_min": _r(cl.blinks * 60.0 / dur, 2) if dur > 0 else None,
            "closures": cl.count,
            "yawns": self.yawning.count,
            "nods": self.nodding.count,
            "longest_closure_s": _r(cl.longest, 3),
            "perclos_max": _r(self.eyes.perclos.max),
            "time_distracted_s": _r(self.sharing.distracted, 3),
            "time_distracted_by_s": {k: _r(v, 3) for k, v in self.sharing.distracted_by.items()},
            "neutral_yaw": _r(cal.yaw, 2),
            "neutral_pitch": _r(cal.pitch, 2),
            "neutral_gaze_yaw": _r(cal.gaze_yaw, 2),
            "neutral_gaze_pitch": _r(cal.gaze_pitch, 2),
            "gaze_unknown_frames": unk.gaze_frames,
            "calibrations": cal.count,
            "calibrated_by": cal.by,
            "alerts": {k: dict(r.starts) for k, r in self.rules.items() if sum(r.starts.values())},
            "unavailable": {k: {"logged": self.unavailability.logged[k],
                                "seconds": _r(self.unavailability.logged_s[k], 3)} for k in UNAVAILABLE},
            "signal_unknown": dict(unk.frames, closures_ended_unknown=cl.unknown_end,
                                   logged=dict(unk.logged),
                                   open=[k for k, u in unk.open.items() if u is not None and u.logged]),
        })
        return ev

    # -------------------------------------------------------------- one frame
    def _update_states(self, t: float, r: Reading) -> _Step:
        s = self.settings
        # calibration first, so that the frame that completes it is judged by it
        off = self.calib.step(t, r, s)
        armed = self.calib.neutral and not self.calib.first
        away_s = self.glance.step(t, off.away, s)
        vats_s, vats_by = self.sharing.step(t, off.away, armed, s)
        nods = self.nodding.step(t, off.down, r.gap, s)
        eyes = self.eyes.step(t, r, s)
        unknown = self.unknown.step(t, r, s)
        yawns = self.yawning.step(t, r, s)
        missing_s = self.no_driver.step(t, r)
        unavailable = self.unavailability.step(t, r, s)
        return _Step(r, off, away_s, vats_s, vats_by, nods, eyes, yawns, unknown, missing_s, unavailable)

    def _update_events(self, t: float, st: _Step) -> list[dict]:
        """The rules on this frame's states, in a fixed order; their events (without time stamps)."""
        s, r, off, cal = self.settings, st.r, st.off, self.calib
        ev: list[dict] = []
        # eyes not seen for clear_seconds: the alerts that need them end (they cannot start: an
        # unseen eye is unknown), so that no eyes-closed / drowsy / gaze alert is kept from before
        eyes_out = self.unavailability.hidden_s("eyes", t) >= s.clear_seconds - EPS
        if eyes_out:
            why = {"reason": "eyes_unavailable"}
            for k in _EYE_KINDS:
                ev += self.rules[k].end(t, why, s)
            for k in _GAZE_KINDS:
                a = self.rules[k].active
                if a is not None and a.values.get("by") == "gaze":
                    ev += self.rules[k].end(t, why, s)
        level = _level(st.away_s, s.alert_seconds, s.critical_seconds) if off.away else None
        vals = {"yaw_offset": _r(off.yaw, 2), "pitch_offset": _r(off.pitch, 2), "pitch_down": _r(off.down, 2),
                "away_s": _r(st.away_s, 3), "yaw": _r(r.yaw, 2), "pitch": _r(r.pitch, 2),
                "neutral_yaw": _r(cal.yaw, 2), "neutral_pitch": _r(cal.pitch, 2),
                "alert_yaw": s.alert_yaw, "alert_pitch": s.alert_pitch,
                "by": by_of(self.glance.by), "gaze_yaw_offset": _r(off.gaze_yaw, 2),
                "gaze_pitch_offset": _r(off.gaze_pitch, 2), "gaze_down": _r(off.gaze_down, 2),
                "neutral_gaze_yaw": _r(cal.gaze_yaw, 2),
                "neutral_gaze_pitch": _r(cal.gaze_pitch, 2),
                "alert_gaze_yaw": s.gaze_yaw, "alert_gaze_pitch": s.gaze_pitch}
        ev += self.rules["looking_around"].step(t, None if off.away is None else bool(off.away), level, vals, s)

        vcond = None if math.isnan(st.vats_s) else st.vats_s >= s.vats_seconds - EPS
        ev += self.rules["time_sharing"].step(t, vcond, "warning" if vcond else None,
                                              {"away_s_in_window": _r(st.vats_s, 3), "window_s": s.vats_window,
                                               "by": by_of(st.vats_by)}, s)

        ncond = (st.nods >= s.nod_count) if cal.neutral else None
        ev += self.rules["nodding"].step(t, ncond, "warning" if ncond else None,
                                         {"nods_in_window": st.nods, "window_s": s.nod_window}, s)

        eyes = st.eyes
        level = (_level(eyes.closed_s, s.eyes_closed_seconds, s.eyes_closed_critical_seconds)
                 if eyes.closed else None)
        base = self.eyes.baseline.values
        vals = {"closed_s": _r(eyes.closed_s, 3), "eye_open_rel": _r(eyes.rel), "eye_open_left": _r(r.eye_open[0]),
                "eye_open_right": _r(r.eye_open[1]), "baseline_left": _r(base[0]),
                "baseline_right": _r(base[1]), "eye_closed_ratio": s.eye_closed_ratio}
        # Euro NCAP: a closure of 1-3 s is a microsleep, >= 3 s (the critical level) sleep
        vals["closure"] = "sleep" if eyes.closed_s >= s.eyes_closed_critical_seconds - EPS else "microsleep"
        ev += self.rules["eyes_closed"].step(t, eyes.closed, level, vals, s)

        pc = eyes.perclos
        # while the eyes are not seen PERCLOS is not judged (its window leaves those seconds out)
        dcond = (None if math.isnan(pc.value) or r.eyes_hidden
                 else pc.value >= s.perclos_threshold - 1e-12)
        ev += self.rules["drowsy"].step(t, dcond, "warning" if dcond else None,
                                        {"perclos": _r(pc.value), "closed_s": _r(pc.closed_s, 3),
                                         "known_s": _r(pc.known_s, 3), "window_s": s.perclos_window,
                                         "perclos_threshold": s.perclos_threshold}, s)

        for what, sig, u in st.unknown:
            if what == "unknown_start":
                reason = _UNKNOWN_REASON[sig]
                if sig == "eyes" and r.eyes_hidden:
                    reason = f"eyes not visible ({r.eyes_why}): see unavailable_start"
                vals = {"reason": reason, "since_t": round(u.since - self.t0, 6),
                        "unknown_s": _r(t - u.since, 3), "unknown_frames": u.frames}
            else:
                vals = {"duration_s": _r(t - u.since, 3), "unknown_frames": u.frames}
            ev.append({"event": what, "kind": "signal_unknown", "signal": sig, **vals})

        ycond = st.yawns >= s.yawn_count
        ev += self.rules["yawning"].step(t, ycond, "warning" if ycond else None,
                                         {"yawns_in_window": st.yawns, "window_s": s.yawn_window}, s)

        level = "warning" if (not r.face and st.missing_s >= s.no_driver_seconds - EPS) else None
        ev += self.rules["no_driver"].step(t, not r.face, level, {"missing_s": _r(st.missing_s, 3)}, s)

        for what, thing, u in st.unavailable:
            if what == "unavailable_start":
                vals = {"since_t": round(u.since - self.t0, 6), "unavailable_s": _r(t - u.since, 3),
                        "frames": u.frames}
            else:
                vals = {"duration_s": _r(u.clear_since - u.since, 3), "frames": u.frames}
            ev.append({"event": what, "kind": "unavailable", "what": thing, "why": u.why, **vals})

        ev += self._unresponsive(t, st)
        return ev

    def _unresponsive(self, t: float, st: _Step) -> list[dict]:
        """The emergency escalation: an eyes_closed or looking_around alert at the critical level
        that the driver has not answered (no frame with the eyes open again / back on the road
        since it became critical, or since the last such frame) for unresponsive_seconds. Its
        events are "unresponsive" (level "emergency", ``cause`` "sleep" or "eyes_off_road") and
        "unresponsive_end" once the driver has responded for clear_seconds."""
        s = self.settings
        cause, crit = None, None
        for k in ("eyes_closed", "looking_around"):
            ru = self.rules[k]
            if ru.active is None or ru.critical_since is None or ru.clear_since is not None:
                continue
            # a response (the eyes open / back on the road on a frame) restarts the wait
            since = max(ru.critical_since, ru.answered if ru.answered is not None else -math.inf)
            if t - since >= s.unresponsive_seconds - EPS:
                cause, crit = k, ru
                break
        rule = self.rules["unresponsive"]
        if crit is None:
            cond = False if rule.active is None or all(
                self.rules[k].active is None or self.rules[k].clear_since is not None
                for k in ("eyes_closed", "looking_around")) else None
            return self._named(rule.step(t, cond, None, {}, s))
        a = crit.active
        vals = {"cause": "sleep" if cause == "eyes_closed" else "eyes_off_road",
                "alert": cause, "critical_since_t": round(crit.critical_since - self.t0, 6),
                "unanswered_s": _r(t - max(crit.critical_since, crit.answered or -math.inf), 3),
                "closed_s": _r(st.eyes.closed_s, 3) if cause == "eyes_closed" else None,
                "away_s": _r(st.away_s, 3) if cause == "looking_around" else None,
                "by": a.values.get("by") if cause == "looking_around" else None,
                "unresponsive_seconds": s.unresponsive_seconds}
        return self._named(rule.step(t, True, "emergency", vals, s))

    @staticmethod
    def _named(events: list[dict]) -> list[dict]:
        """The unresponsive rule's events are "unresponsive" / "unresponsive_end" (not the alerts'
        "start" / "end": it is the emergency hand-over, a step beyond the alerts)."""
        return [dict(e, event="unresponsive" if e["event"] == "start" else "unresponsive_end") for e in events]

    def _monitor_state(self, t: float, st: _Step, events: list[dict]) -> MonitorState:
        s, r, off, cal, eyes = self.settings, st.r, st.off, self.calib, st.eyes
        cl = self.eyes.closures
        span = min(s.blink_rate_window, t - self.t0)
        blink_rate = len(cl.blink_times) * 60.0 / span if span >= min(10.0, s.blink_rate_window) else math.nan
        # copies: a state handed out must not change when an alert escalates later
        alerts = [Alert(r_.active.kind, r_.active.level, r_.active.since, dict(r_.active.values))
                  for r_ in self.rules.values() if r_.active is not None]
        emergency = next((a for a in alerts if a.kind == "unresponsive"), None)
        alerts = [a for a in alerts if a.kind != "unresponsive"]
        alerts.sort(key=lambda a: (-_LEVEL_RANK[a.level], _KIND_RANK[a.kind], a.since))
        cur_closure = eyes.closed_s if eyes.closed else 0.0
        perclos = eyes.perclos.value
        return MonitorState(
            timestamp=t,
            calibrated=cal.neutral,
            # a periodic re-learn (--recalibrate-after) keeps the old neutral: not "calibrating"
            calibrating=cal.calibrating and not cal.neutral,
            neutral_yaw=cal.yaw,
            neutral_pitch=cal.pitch,
            neutral_gaze_yaw=cal.gaze_yaw,
            neutral_gaze_pitch=cal.gaze_pitch,
            alerts=alerts,
            counters={
                "blinks": cl.blinks,
                "blink_rate_per_min": blink_rate,
                "closures": cl.count,
                "yawns": self.yawning.count,
                "nods": self.nodding.count,
                "perclos": perclos,
                "perclos_max": self.eyes.perclos.max,
                "longest_closure_s": max(cl.longest, cur_closure),
                "time_distracted_s": self.sharing.distracted,
                "vats_away_s": st.vats_s,
                "frames": self.frames,
                "relearning_neutral": bool(cal.calibrating and cal.neutral),
                "unknown_gaze_frames": self.unknown.gaze_frames,
                **{f"unknown_{k}": v for k, v in self.unknown.frames.items()},
            },
            signals={
                "yaw_offset": off.yaw,
                "pitch_offset": off.pitch,
                "pitch_down": off.down,
                "yaw_threshold": s.alert_yaw,
                "pitch_threshold": s.alert_pitch,
                "eye_open_rel": eyes.rel,
                "eye_closed_threshold": s.eye_closed_ratio,
                "eye_open_left": r.eye_open[0],
                "eye_open_right": r.eye_open[1],
                "perclos": perclos,
                "perclos_threshold": s.perclos_threshold,
                "mouth_open": r.mouth,
                "mouth_threshold": s.mouth_threshold,
                "away_s": st.away_s,
                "away_by": off.away if off.away else None,
                "gaze_yaw_offset": off.gaze_yaw,
                "gaze_pitch_offset": off.gaze_pitch,
                "gaze_down": off.gaze_down,
                "gaze_yaw_threshold": s.gaze_yaw,
                "gaze_pitch_threshold": s.gaze_pitch,
                "closed_s": cur_closure,
                "eyes_unavailable_s": self.unavailability.hidden_s("eyes", t),
            },
            events=tuple(events),
            unavailable=self.unavailability.active(),
            emergency=emergency,
        )

    # -------------------------------------------------------------- time
    def _clock(self, t) -> float:
        try:
            t = float(t)
        except (TypeError, ValueError):
            t = math.nan
        if not math.isfinite(t):
            if not self._warned_time:
                log.warning("driver monitor: non-finite timestamp %r, using the previous one", t)
                self._warned_time = True
            return self.t_prev if self.t_prev is not None else 0.0
        t += self._offset
        if self.t_prev is not None and t < self.t_prev:
            if not self._warned_time:
                log.warning("driver monitor: timestamp went back by %.3f s; continuing from the last one",
                            self.t_prev - t)
                self._warned_time = True
            self._offset += self.t_prev - t
            t = self.t_prev
        return t

    def _base_event(self, t: float, frame: int) -> dict:
        t0 = self.t0 if self.t0 is not None else t
        ws = self.wall_start or datetime.now(timezone.utc).astimezone()
        return {"time": (ws + timedelta(seconds=t - t0)).isoformat(timespec="milliseconds"),
                "t": round(t - t0, 6), "frame": frame}

    def _stamp(self, t: float, frame: int, events: list[dict]) -> list[dict]:
        """The events with their time stamp (wall time, stream time, frame) first."""
        if not events:
            return []
        base = self._base_event(t, frame)
        return [{**base, **e} for e in events]
