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
"""
from __future__ import annotations

import logging
import math
from collections import deque
from datetime import datetime, timedelta, timezone
from typing import Optional, Sequence

import numpy as np

from app.core.types import Alert, FaceObservation, MonitorState
from app.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)

EPS = 1e-6   # timestamps like i / 30 are not exact in binary: ">= 2 s" means ">= 2 s - 1 us"

KINDS = ("eyes_closed", "no_driver", "looking_around", "time_sharing", "drowsy", "nodding", "yawning")
_KIND_RANK = {k: i for i, k in enumerate(KINDS)}   # order among alerts of the same level
_LEVEL_RANK = {"warning": 1, "critical": 2}
# signals whose unknown stretches are logged ("unknown_start" / "unknown_end" events)
UNKNOWN_SIGNALS = ("pose", "eyes", "mouth")
_UNKNOWN_REASON = {
    "pose": "head pose not measured (NaN yaw / pitch)",
    "eyes": "eye openness not measured (NaN or missing for both eyes, e.g. a profile face)",
    "mouth": "mouth openness not measured (NaN or missing)",
}


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _r(x, nd=4):
    """Round for the event log; NaN/None -> None (JSON null)."""
    return round(float(x), nd) if _finite(x) else None


def off_road(yaw_offset: float, down: float, yaw_limit: float, pitch_limit: float) -> bool:
    """The road-zone test of the head and the gaze rules: |yaw offset| beyond the yaw limit or more
    than the pitch limit below the neutral (``down`` > 0 = below; looking up stays on the road)."""
    return bool(abs(yaw_offset) > yaw_limit or down > pitch_limit)


def _by(kinds) -> Optional[str]:
    """"head", "gaze", "both" or None for a set of the kinds that were off the road."""
    if not kinds:
        return None
    return "both" if len(kinds) > 1 else next(iter(kinds))


def _gaze_median(rows) -> tuple[float, float]:
    """Median (gaze yaw, gaze pitch) of calibration samples when at least half of them measured
    the gaze (the neutral gaze belongs to the same seconds as the neutral pose), else NaN."""
    a = np.array(rows, dtype=float).reshape(-1, 2)
    ok = np.isfinite(a).all(axis=1)
    if len(a) == 0 or ok.sum() < 0.5 * len(a):
        return math.nan, math.nan
    med = np.median(a[ok], axis=0)
    return float(med[0]), float(med[1])


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


# ------------------------------------------------------------------------------ helpers
class _Window:
    """Time-weighted intervals [a, b) labelled with a key; totals per key over [start, now]."""

    def __init__(self):
        self.q: deque = deque()
        self.sums: dict = {}

    def add(self, a: float, b: float, key) -> None:
        if b > a:
            self.q.append((a, b, key))
            self.sums[key] = self.sums.get(key, 0.0) + (b - a)

    def totals(self, start: float) -> dict:
        q = self.q
        while q and q[0][1] <= start:
            a, b, k = q.popleft()
            self.sums[k] -= b - a
        out = {k: max(0.0, v) for k, v in self.sums.items()}
        if q and q[0][0] < start:
            a, b, k = q[0]
            out[k] = max(0.0, out[k] - (start - a))
        return out

    def clear(self) -> None:
        self.q.clear()
        self.sums.clear()


class _Rule:
    """One alert kind: start (with cooldown), escalation, hysteresis end."""

    def __init__(self, kind: str):
        self.kind = kind
        self.active: Optional[Alert] = None
        self.clear_since: Optional[float] = None
        self.cooldown_until = -math.inf
        self.unknown_frames = 0
        self.starts = {"warning": 0, "critical": 0}

    def step(self, mon: "DriverMonitor", t: float, cond: Optional[bool], level: Optional[str],
             values: dict) -> None:
        s = mon.settings
        if self.active is None:
            if level is not None and t >= self.cooldown_until - EPS:
                self.active = Alert(self.kind, level, t, dict(values))
                self.clear_since = None
                self.unknown_frames = 0
                self.starts[level] += 1
                mon._emit("start", self.kind, level, values)
            return
        a = self.active
        if level is not None and _LEVEL_RANK[level] > _LEVEL_RANK[a.level]:
            a.level = level
            a.values = dict(values)
            self.starts[level] += 1
            mon._emit("start", self.kind, level, {**values, "escalated_from": "warning"})
        if cond is True:
            self.clear_since = None
        elif cond is None:
            self.unknown_frames += 1
            self.clear_since = None      # "back for 1 s" must be 1 s of known, good frames
        else:
            if self.clear_since is None:
                self.clear_since = t
            if t - self.clear_since >= s.clear_seconds - EPS:
                self.end(mon, t, {})

    def end(self, mon: "DriverMonitor", t: float, extra: dict) -> None:
        a = self.active
        if a is None:
            return
        self.active = None
        self.clear_since = None
        self.cooldown_until = t + mon.settings.cooldown_seconds
        mon._emit("end", self.kind, a.level, {"duration_s": _r(t - a.since, 3),
                                              "unknown_frames": self.unknown_frames, **extra})


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
        self._t_now: Optional[float] = None
        self._frame = -1
        self._offset = 0.0                        # added to timestamps that went backwards
        self._warned_time = False
        self.frames = 0
        self.last_events: list[dict] = []
        self._pending: list[dict] = []
        self.rules = {k: _Rule(k) for k in KINDS}
        # calibration
        self.neutral_yaw = math.nan
        self.neutral_pitch = math.nan
        self.calibrating = True
        self.calibrations = 0
        self.calibrated_at: Optional[float] = None
        self.calibrated_by: Optional[str] = None   # "stable" window or "fallback" median
        self.neutral_gaze_yaw = math.nan           # learned with the neutral pose (same window)
        self.neutral_gaze_pitch = math.nan
        self._calib: deque = deque()               # (t, yaw, pitch, gaze yaw, gaze pitch)
        self._calib_long: deque = deque()          # the same, for the fallback median
        self._gcalib: deque = deque()              # (t, gaze yaw, gaze pitch) when the neutral gaze is learned alone
        self._calib_face_s = 0.0                   # seconds of face since calibration began
        # previous frame's states (held until this frame's timestamp); away: "head" | "gaze" |
        # "both" (what was off the road), False (on the road) or None (unknown)
        self._prev_away = None
        self._prev_closed: Optional[bool] = None
        # continuous runs (start timestamps)
        self._away_start: Optional[float] = None
        self._away_last: Optional[float] = None  # last known "away" frame of the run
        self._away_by: set = set()               # "head" / "gaze": what was off the road during the run
        self._closure_start: Optional[float] = None
        self._closure_last: Optional[float] = None
        self._noface_start: Optional[float] = None
        self._mouth_start: Optional[float] = None
        self._mouth_counted = False
        self._nod_state: Optional[tuple] = None   # ("down", t0) | ("held",) | None
        # windows
        self._vats = _Window()
        self._perclos = _Window()
        # eye baselines: per eye deque of (t, openness) of not-closed samples
        self._eye_buf = (deque(), deque())
        self._eye_base = [math.nan, math.nan]
        # counters
        self.blinks = 0
        self.blink_times: deque = deque()
        self.closures = 0                   # closures >= blink_max_seconds (not blinks)
        self.closures_unknown_end = 0       # closures that ended in an unknown frame / gap
        self.longest_closure = 0.0
        self.yawns = 0
        self.yawn_times: deque = deque()
        self.nods = 0
        self.nod_times: deque = deque()
        self.time_distracted = 0.0
        self.distracted_by = {"head": 0.0, "gaze": 0.0, "both": 0.0}   # seconds away, per cause
        self.gaze_unknown_frames = 0        # faces with gaze data whose gaze was unknown (eyes closed ...)
        self.perclos = math.nan
        self.perclos_max = math.nan
        self.unknown = {"no_face_frames": 0, "pose_frames": 0, "eye_frames": 0, "mouth_frames": 0}
        # per signal: the open unknown stretch {"since", "frames", "logged"} or None
        self._unk: dict = {k: None for k in UNKNOWN_SIGNALS}
        self.unknown_logged = {k: 0 for k in UNKNOWN_SIGNALS}   # stretches logged (unknown_start)
        self.state = MonitorState()

    def update_settings(self, settings: MonitorSettings) -> None:
        """New thresholds, same calibration / baselines / counters."""
        self.settings = settings.validate()

    def recalibrate(self) -> None:
        """Learn the neutral pose again from the next stable seconds; looking-around, time-sharing
        and nodding alerts end now (their "end" events come with the next update)."""
        if self.t_prev is not None:
            saved = self.last_events
            self.last_events = []
            for k in ("looking_around", "time_sharing", "nodding"):
                self.rules[k].end(self, self.t_prev, {"reason": "recalibrate"})
                self.rules[k].cooldown_until = -math.inf
            self._pending.extend(self.last_events)
            self.last_events = saved
        self.neutral_yaw = math.nan
        self.neutral_pitch = math.nan
        self.neutral_gaze_yaw = math.nan
        self.neutral_gaze_pitch = math.nan
        self.calibrating = True
        self._calib.clear()
        self._calib_long.clear()
        self._gcalib.clear()
        self._calib_face_s = 0.0
        self._vats.clear()
        self._away_start = None
        self._away_by = set()
        self._prev_away = None
        self._nod_state = None
        self.nod_times.clear()

    def update(self, t: float, frame_index: int, face: Optional[FaceObservation]) -> MonitorState:
        """One frame: ``t`` its timestamp (s), ``face`` the driver or None (no face)."""
        try:
            return self._update(t, frame_index, face)
        finally:
            self._t_now = None

    def _update(self, t, frame_index: int, face: Optional[FaceObservation]) -> MonitorState:
        s = self.settings
        t = self._clock(t)
        self.last_events = self._pending
        self._pending = []
        self._frame = int(frame_index)
        self._t_now = t
        first = self.t0 is None
        if first:
            self.t0 = t
            if self.wall_start is None:
                self.wall_start = datetime.now(timezone.utc).astimezone()
        tp = t if first else self.t_prev
        dt = t - tp
        gap = dt > s.max_gap + EPS
        known_dt = min(dt, s.max_gap)
        self.frames += 1

        # ---- windows: previous frame's state held over [tp, tp + known_dt)
        self._hold(self._vats, tp, dt, known_dt, self._prev_away)
        if self._prev_away:
            self.time_distracted += known_dt
            self.distracted_by[self._prev_away] += known_dt
        self._hold(self._perclos, tp, dt, known_dt, self._prev_closed)

        # ---- signals of this frame
        has_face = face is not None
        yaw = float(face.yaw) if has_face and _finite(face.yaw) else math.nan
        pitch = float(face.pitch) if has_face and _finite(face.pitch) else math.nan
        pose_known = math.isfinite(yaw) and math.isfinite(pitch)
        if not has_face:
            self.unknown["no_face_frames"] += 1
        elif not pose_known:
            self.unknown["pose_frames"] += 1

        # gaze (eyes): None = this face has no gaze data; NaN = eyes unknown (closed, unseen)
        gz = face.gaze if (has_face and s.use_gaze) else None
        gyaw = float(gz.yaw) if gz is not None and _finite(gz.yaw) else math.nan
        gpitch = float(gz.pitch) if gz is not None and _finite(gz.pitch) else math.nan
        gaze_known = math.isfinite(gyaw) and math.isfinite(gpitch)
        if gz is not None and not gaze_known:
            self.gaze_unknown_frames += 1

        # ---- calibration (before the rules, so the frame that completes it is judged by it)
        self._recalibrate_due(t)
        if pose_known:
            self._calibrate(t, gap, yaw, pitch, gyaw, gpitch)

        neutral = math.isfinite(self.neutral_yaw)
        yaw_off = yaw - self.neutral_yaw if (pose_known and neutral) else math.nan
        pitch_off = pitch - self.neutral_pitch if (pose_known and neutral) else math.nan
        down = s.pitch_down_sign * pitch_off if math.isfinite(pitch_off) else math.nan
        first_calib = self.calibrating and self.calibrations == 0
        if math.isfinite(yaw_off) and not first_calib:
            head_away: Optional[bool] = off_road(yaw_off, down, s.alert_yaw, s.alert_pitch)
        else:
            head_away = None
        if gz is not None and not math.isfinite(self.neutral_gaze_yaw):
            if head_away is False:
                self._calibrate_gaze(t, gap, gyaw, gpitch)   # neutral pose known, its gaze not yet
            elif head_away:
                self._gcalib.clear()
        gneutral = math.isfinite(self.neutral_gaze_yaw) and gz is not None
        g_yaw_off = gyaw - self.neutral_gaze_yaw if (gaze_known and gneutral) else math.nan
        g_pitch_off = gpitch - self.neutral_gaze_pitch if (gaze_known and gneutral) else math.nan
        g_down = s.pitch_down_sign * g_pitch_off if math.isfinite(g_pitch_off) else math.nan
        if math.isfinite(g_yaw_off) and not first_calib:
            gaze_away: Optional[bool] = off_road(g_yaw_off, g_down, s.gaze_yaw, s.gaze_pitch)
        else:
            gaze_away = None
        # what is off the road this frame: "head", "gaze", "both", False (nothing) or None (unknown:
        # the head pose, or the eyes of a face with gaze data while its head is on the road)
        if head_away and gaze_away:
            away = "both"
        elif head_away:
            away = "head"
        elif gaze_away:
            away = "gaze"
        elif head_away is False and (gaze_away is False or not gneutral):
            away = False
        else:
            away = None

        # ---- looking around: continuous run. Unknown frames (no face, NaN pose) inside a run are
        # bridged like dropped frames while the last away frame is at most max_gap old: a head
        # turned so far that the detector finds it only every other frame is still looking away.
        if away:
            if self._away_start is None or t - self._away_last > s.max_gap + EPS:
                self._away_start = t
                self._away_by = set()
            self._away_last = t
            self._away_by.update(("head", "gaze") if away == "both" else (away,))
            away_s = t - self._away_start
        elif away is None and self._away_start is not None and t - self._away_last <= s.max_gap + EPS:
            away_s = t - self._away_start
        else:
            self._away_start = None
            self._away_by = set()
            away_s = 0.0
        level = None
        if away:
            if away_s >= s.critical_seconds - EPS:
                level = "critical"
            elif away_s >= s.alert_seconds - EPS:
                level = "warning"
        vals = {"yaw_offset": _r(yaw_off, 2), "pitch_offset": _r(pitch_off, 2), "pitch_down": _r(down, 2),
                "away_s": _r(away_s, 3), "yaw": _r(yaw, 2), "pitch": _r(pitch, 2),
                "neutral_yaw": _r(self.neutral_yaw, 2), "neutral_pitch": _r(self.neutral_pitch, 2),
                "alert_yaw": s.alert_yaw, "alert_pitch": s.alert_pitch,
                "by": _by(self._away_by), "gaze_yaw_offset": _r(g_yaw_off, 2),
                "gaze_pitch_offset": _r(g_pitch_off, 2), "gaze_down": _r(g_down, 2),
                "neutral_gaze_yaw": _r(self.neutral_gaze_yaw, 2),
                "neutral_gaze_pitch": _r(self.neutral_gaze_pitch, 2),
                "alert_gaze_yaw": s.gaze_yaw, "alert_gaze_pitch": s.gaze_pitch}
        self.rules["looking_around"].step(self, t, None if away is None else bool(away), level, vals)

        # ---- time sharing (VATS)
        vats_by = set()
        if neutral and not first_calib:
            tot = self._vats.totals(t - s.vats_window)
            vats_s = sum(tot.get(k, 0.0) for k in ("head", "gaze", "both"))
            vcond: Optional[bool] = vats_s >= s.vats_seconds - EPS
            vats_by = {k for k in ("head", "gaze") if tot.get(k, 0.0) + tot.get("both", 0.0) > 0}
        else:
            vats_s, vcond = math.nan, None
        self.rules["time_sharing"].step(self, t, vcond, "warning" if vcond else None,
                                        {"away_s_in_window": _r(vats_s, 3), "window_s": s.vats_window,
                                         "by": _by(vats_by)})

        # ---- nodding
        self._nod_step(t, gap, down)
        while self.nod_times and self.nod_times[0] < t - s.nod_window - EPS:
            self.nod_times.popleft()
        nods_w = len(self.nod_times)
        ncond = (nods_w >= s.nod_count) if neutral else None
        self.rules["nodding"].step(self, t, ncond, "warning" if ncond else None,
                                   {"nods_in_window": nods_w, "window_s": s.nod_window})

        # ---- eyes
        eyes = self._eyes(t, face)
        closed, rel = eyes["closed"], eyes["rel"]
        eyes_unknown = not any(math.isfinite(v) for v in eyes["raw"])
        if has_face and eyes_unknown:
            self.unknown["eye_frames"] += 1
        closed_s = self._closure_step(t, gap, closed)
        level = None
        if closed:
            if closed_s >= s.eyes_closed_critical_seconds - EPS:
                level = "critical"
            elif closed_s >= s.eyes_closed_seconds - EPS:
                level = "warning"
        vals = {"closed_s": _r(closed_s, 3), "eye_open_rel": _r(rel), "eye_open_left": _r(eyes["raw"][0]),
                "eye_open_right": _r(eyes["raw"][1]), "baseline_left": _r(self._eye_base[0]),
                "baseline_right": _r(self._eye_base[1]), "eye_closed_ratio": s.eye_closed_ratio}
        self.rules["eyes_closed"].step(self, t, closed, level, vals)

        # ---- PERCLOS
        tot = self._perclos.totals(t - s.perclos_window)
        c, o = tot.get(True, 0.0), tot.get(False, 0.0)
        if c + o >= s.perclos_min_seconds - EPS and c + o > 0:
            self.perclos = c / (c + o)
            if not (self.perclos_max >= self.perclos):
                self.perclos_max = self.perclos
            dcond: Optional[bool] = self.perclos >= s.perclos_threshold - 1e-12
        else:
            self.perclos = math.nan
            dcond = None
        self.rules["drowsy"].step(self, t, dcond, "warning" if dcond else None,
                                  {"perclos": _r(self.perclos), "closed_s": _r(c, 3), "known_s": _r(c + o, 3),
                                   "window_s": s.perclos_window, "perclos_threshold": s.perclos_threshold})

        # ---- yawns
        mouth = float(face.mouth_open) if has_face and _finite(face.mouth_open) else math.nan
        if has_face and not math.isfinite(mouth):
            self.unknown["mouth_frames"] += 1
        self._unknown_step(t, "pose", has_face, not pose_known)
        self._unknown_step(t, "eyes", has_face, eyes_unknown)
        self._unknown_step(t, "mouth", has_face, not math.isfinite(mouth))
        self._yawn_step(t, gap, mouth)
        while self.yawn_times and self.yawn_times[0] < t - s.yawn_window - EPS:
            self.yawn_times.popleft()
        yw = len(self.yawn_times)
        ycond = yw >= s.yawn_count
        self.rules["yawning"].step(self, t, ycond, "warning" if ycond else None,
                                   {"yawns_in_window": yw, "window_s": s.yawn_window})

        # ---- driver not visible
        if not has_face:
            if self._noface_start is None:
                self._noface_start = t
            miss = t - self._noface_start
        else:
            self._noface_start = None
            miss = 0.0
        level = "warning" if (not has_face and miss >= s.no_driver_seconds - EPS) else None
        self.rules["no_driver"].step(self, t, not has_face, level, {"missing_s": _r(miss, 3)})

        # ---- keep this frame's states for the next interval
        self._prev_away = away
        self._prev_closed = closed
        self.t_prev = t
        self.frame_prev = self._frame
        self._t_now = None

        while self.blink_times and self.blink_times[0] < t - s.blink_rate_window - EPS:
            self.blink_times.popleft()
        span = min(s.blink_rate_window, t - self.t0)
        blink_rate = len(self.blink_times) * 60.0 / span if span >= min(10.0, s.blink_rate_window) else math.nan

        # copies: a state handed out must not change when an alert escalates later
        alerts = [Alert(r.active.kind, r.active.level, r.active.since, dict(r.active.values))
                  for r in self.rules.values() if r.active is not None]
        alerts.sort(key=lambda a: (-_LEVEL_RANK[a.level], _KIND_RANK[a.kind], a.since))
        cur_closure = closed_s if closed else 0.0
        self.state = MonitorState(
            timestamp=t,
            calibrated=neutral,
            # a periodic re-learn (--recalibrate-after) keeps the old neutral: not "calibrating"
            calibrating=self.calibrating and not neutral,
            neutral_yaw=self.neutral_yaw,
            neutral_pitch=self.neutral_pitch,
            neutral_gaze_yaw=self.neutral_gaze_yaw,
            neutral_gaze_pitch=self.neutral_gaze_pitch,
            alerts=alerts,
            counters={
                "blinks": self.blinks,
                "blink_rate_per_min": blink_rate,
                "closures": self.closures,
                "yawns": self.yawns,
                "nods": self.nods,
                "perclos": self.perclos,
                "perclos_max": self.perclos_max,
                "longest_closure_s": max(self.longest_closure, cur_closure),
                "time_distracted_s": self.time_distracted,
                "vats_away_s": vats_s,
                "frames": self.frames,
                "relearning_neutral": bool(self.calibrating and neutral),
                "unknown_gaze_frames": self.gaze_unknown_frames,
                **{f"unknown_{k}": v for k, v in self.unknown.items()},
            },
            signals={
                "yaw_offset": yaw_off,
                "pitch_offset": pitch_off,
                "pitch_down": down,
                "yaw_threshold": s.alert_yaw,
                "pitch_threshold": s.alert_pitch,
                "eye_open_rel": rel,
                "eye_closed_threshold": s.eye_closed_ratio,
                "eye_open_left": eyes["raw"][0],
                "eye_open_right": eyes["raw"][1],
                "perclos": self.perclos,
                "perclos_threshold": s.perclos_threshold,
                "mouth_open": mouth,
                "mouth_threshold": s.mouth_threshold,
                "away_s": away_s,
                "away_by": away if away else None,
                "gaze_yaw_offset": g_yaw_off,
                "gaze_pitch_offset": g_pitch_off,
                "gaze_down": g_down,
                "gaze_yaw_threshold": s.gaze_yaw,
                "gaze_pitch_threshold": s.gaze_pitch,
                "closed_s": cur_closure,
            },
        )
        return self.state

    def summary(self) -> dict:
        """The run's totals as the final event-log line ({"event": "summary", ...})."""
        t = self.t_prev if self.t_prev is not None else 0.0
        dur = (t - self.t0) if self.t0 is not None else 0.0
        ev = self._base_event(t, self.frame_prev)
        ev.update({
            "event": "summary",
            "frames": self.frames,
            "duration_s": _r(dur, 3),
            "blinks": self.blinks,
            "blink_rate_per_min": _r(self.blinks * 60.0 / dur, 2) if dur > 0 else None,
            "closures": self.closures,
            "yawns": self.yawns,
            "nods": self.nods,
            "longest_closure_s": _r(self.longest_closure, 3),
            "perclos_max": _r(self.perclos_max),
            "time_distracted_s": _r(self.time_distracted, 3),
            "time_distracted_by_s": {k: _r(v, 3) for k, v in self.distracted_by.items()},
            "neutral_yaw": _r(self.neutral_yaw, 2),
            "neutral_pitch": _r(self.neutral_pitch, 2),
            "neutral_gaze_yaw": _r(self.neutral_gaze_yaw, 2),
            "neutral_gaze_pitch": _r(self.neutral_gaze_pitch, 2),
            "gaze_unknown_frames": self.gaze_unknown_frames,
            "calibrations": self.calibrations,
            "calibrated_by": self.calibrated_by,
            "alerts": {k: dict(r.starts) for k, r in self.rules.items() if sum(r.starts.values())},
            "signal_unknown": dict(self.unknown, closures_ended_unknown=self.closures_unknown_end,
                                   logged=dict(self.unknown_logged),
                                   open=[k for k, u in self._unk.items() if u is not None and u["logged"]]),
        })
        return ev

    def _recalibrate_due(self, t: float) -> bool:
        s = self.settings
        if (s.recalibrate_after > 0 and not self.calibrating and self.calibrated_at is not None
                and t - self.calibrated_at >= s.recalibrate_after - EPS):
            self.calibrating = True     # keep the old neutral meanwhile (see settings)
            self._calib.clear()
            return True
        return False

    # -------------------------------------------------------------- internals
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

    @staticmethod
    def _hold(win: _Window, tp: float, dt: float, known_dt: float, state) -> None:
        if dt <= 0:
            return
        win.add(tp, tp + known_dt, state)     # state None = unknown
        if dt > known_dt:
            win.add(tp + known_dt, tp + dt, None)

    def _base_event(self, t: float, frame: int) -> dict:
        t0 = self.t0 if self.t0 is not None else t
        ws = self.wall_start or datetime.now(timezone.utc).astimezone()
        return {"time": (ws + timedelta(seconds=t - t0)).isoformat(timespec="milliseconds"),
                "t": round(t - t0, 6), "frame": frame}

    def _emit(self, what: str, kind: str, level: str, values: dict) -> None:
        # stamped with the frame being processed, or (recalibrate() between frames) the last one
        if self._t_now is not None:
            ev = self._base_event(self._t_now, self._frame)
        else:
            ev = self._base_event(self.t_prev if self.t_prev is not None else 0.0, self.frame_prev)
        ev.update({"event": what, "kind": kind, "level": level})
        ev.update(values)
        self.last_events.append(ev)

    def _calibrate(self, t: float, gap: bool, yaw: float, pitch: float, gyaw: float = math.nan,
                   gpitch: float = math.nan) -> None:
        s = self.settings
        if not self.calibrating:
            return
        buf = self._calib
        if math.isfinite(self.neutral_yaw):
            # periodic re-learning: only "looking ahead" samples (by the old neutral) count
            down = s.pitch_down_sign * (pitch - self.neutral_pitch)
            gdown = s.pitch_down_sign * (gpitch - self.neutral_gaze_pitch)
            if (abs(yaw - self.neutral_yaw) > s.alert_yaw or down > s.alert_pitch
                    or abs(gyaw - self.neutral_gaze_yaw) > s.gaze_yaw or gdown > s.gaze_pitch):
                buf.clear()
                return
        elif s.calib_fallback_seconds > 0:
            # first calibration (or after recalibrate()): remember the last fallback seconds
            long = self._calib_long
            if long and t - long[-1][0] <= s.max_gap + EPS:   # a longer gap is no face time
                self._calib_face_s += t - long[-1][0]
            long.append((t, yaw, pitch, gyaw, gpitch))
            while len(long) > 1 and long[1][0] <= t - s.calib_fallback_seconds + EPS:
                long.popleft()
        if buf and (gap or t - buf[-1][0] > s.max_gap + EPS):
            buf.clear()
        buf.append((t, yaw, pitch, gyaw, gpitch))
        while len(buf) > 1 and buf[1][0] <= t - s.calib_seconds + EPS:
            buf.popleft()
        if t - buf[0][0] >= s.calib_seconds - EPS:
            a = np.array([(b[1], b[2]) for b in buf])
            med = np.median(a, axis=0)
            spread = np.percentile(np.abs(a - med), 90, axis=0)   # 90 % of the samples within it
            if np.all(spread <= s.calib_max_spread):
                self._set_neutral(t, med, "stable", _gaze_median([b[3:] for b in buf]))
                return
        if self._calib_long and self._calib_face_s >= s.calib_fallback_seconds - EPS:
            a = np.array([(b[1], b[2]) for b in self._calib_long])
            self._set_neutral(t, np.median(a, axis=0), "fallback", _gaze_median([b[3:] for b in self._calib_long]))

    def _calibrate_gaze(self, t: float, gap: bool, gyaw: float, gpitch: float) -> None:
        """The neutral gaze when the neutral pose's window had too few gaze samples (eyes closed,
        no iris): the median gaze of the next calib_seconds with the head on the road and the eyes
        measured (frames with the eyes unknown are skipped, a blink does not restart it; a gap
        longer than max_gap between measured frames, or a head off the road, does)."""
        buf = self._gcalib
        if not (math.isfinite(gyaw) and math.isfinite(gpitch)):
            return
        if buf and (gap or t - buf[-1][0] > self.settings.max_gap + EPS):
            buf.clear()
        buf.append((t, gyaw, gpitch))
        if t - buf[0][0] >= self.settings.calib_seconds - EPS:
            med = np.median(np.array([(b[1], b[2]) for b in buf]), axis=0)
            self.neutral_gaze_yaw, self.neutral_gaze_pitch = float(med[0]), float(med[1])
            buf.clear()

    def _set_neutral(self, t: float, med, how: str, gaze_med=(math.nan, math.nan)) -> None:
        self.neutral_yaw, self.neutral_pitch = float(med[0]), float(med[1])
        # too few gaze samples in the window: a periodic re-learn keeps the old neutral gaze, a
        # first one (NaN since reset / recalibrate) learns it next (_calibrate_gaze)
        if math.isfinite(gaze_med[0]):
            self.neutral_gaze_yaw, self.neutral_gaze_pitch = float(gaze_med[0]), float(gaze_med[1])
        self._gcalib.clear()
        self.calibrating = False
        self.calibrations += 1
        self.calibrated_at = t
        self.calibrated_by = how
        self._calib.clear()
        self._calib_long.clear()
        self._calib_face_s = 0.0

    def _unknown_step(self, t: float, sig: str, has_face: bool, unknown: bool) -> None:
        """Track one signal's unknown stretch. It opens on a frame with a face whose reading is
        unknown (no face alone is the no_driver rule's business), stays open while the reading is
        unknown (with or without a face), is logged once it has lasted ``unknown_seconds`` and,
        if it was logged, closes with an "unknown_end" on the first frame that measures it."""
        u = self._unk[sig]
        if unknown and (has_face or u is not None):     # (no face: every reading is unknown)
            if u is None:
                u = self._unk[sig] = {"since": t, "frames": 0, "logged": False}
            u["frames"] += 1
            d = t - u["since"]
            if not u["logged"] and d >= self.settings.unknown_seconds - EPS:
                u["logged"] = True
                self.unknown_logged[sig] += 1
                self._emit_unknown("unknown_start", sig, {
                    "reason": _UNKNOWN_REASON[sig], "since_t": round(u["since"] - self.t0, 6),
                    "unknown_s": _r(d, 3), "unknown_frames": u["frames"]})
            return
        if u is not None:
            if u["logged"]:
                self._emit_unknown("unknown_end", sig, {"duration_s": _r(t - u["since"], 3),
                                                        "unknown_frames": u["frames"]})
            self._unk[sig] = None

    def _emit_unknown(self, what: str, sig: str, values: dict) -> None:
        ev = self._base_event(self._t_now, self._frame)
        ev.update({"event": what, "kind": "signal_unknown", "signal": sig})
        ev.update(values)
        self.last_events.append(ev)

    def _nod_step(self, t: float, gap: bool, down: float) -> None:
        s = self.settings
        if not math.isfinite(down) or gap:
            self._nod_state = None
            if not math.isfinite(down):
                return
        st = self._nod_state
        if st is None:
            if down >= s.nod_pitch - EPS:
                self._nod_state = ("down", t)
        elif st[0] == "down":
            if down < s.nod_pitch / 2.0:
                if t - st[1] <= s.nod_seconds + EPS:
                    self.nods += 1
                    self.nod_times.append(t)
                self._nod_state = None
            elif t - st[1] > s.nod_seconds + EPS:
                self._nod_state = ("held",)     # head stays down: not a nod; wait for recovery
        elif down < s.nod_pitch / 2.0:
            self._nod_state = None

    def _eyes(self, t: float, face: Optional[FaceObservation]) -> dict:
        """Relative openness (max over the eyes whose baseline is ready) and closed state."""
        s = self.settings
        raw = [math.nan, math.nan]
        if face is not None and face.eye_open is not None:
            try:
                raw = [float(face.eye_open[0]), float(face.eye_open[1])]
            except (TypeError, ValueError, IndexError):
                raw = [math.nan, math.nan]
        rels = []
        for e in (0, 1):
            v = raw[e]
            if not (math.isfinite(v) and v >= 0):
                raw[e] = math.nan
                continue
            base = self._eye_base[e]
            buf = self._eye_buf[e]
            ready = math.isfinite(base)
            span = base - s.eye_shut_level
            # a baseline below eye_min_open: this eye was never seen open, its state is unknown
            rel = max(0.0, (v - s.eye_shut_level) / span) if ready and base >= s.eye_min_open else math.nan
            if math.isfinite(rel):
                rels.append(rel)
            if not (rel < s.eye_closed_ratio):   # also while not ready / no open baseline (NaN)
                buf.append((t, v))
                while (len(buf) > 2 and buf[0][0] < t - s.eye_baseline_window - EPS
                       and buf[-1][0] - buf[1][0] >= s.eye_baseline_min_seconds):
                    buf.popleft()
                if buf[-1][0] - buf[0][0] >= s.eye_baseline_min_seconds - EPS:
                    vals = np.fromiter((b[1] for b in buf), float, len(buf))
                    self._eye_base[e] = float(np.percentile(vals, s.eye_baseline_percentile))
        rel = max(rels) if rels else math.nan
        closed = bool(rel < s.eye_closed_ratio) if math.isfinite(rel) else None
        return {"raw": raw, "rel": rel, "closed": closed}

    def _closure_step(self, t: float, gap: bool, closed: Optional[bool]) -> float:
        s = self.settings
        if self._closure_start is not None and (closed is None or gap):
            # the closure's end is unknown: keep it as a lower bound, never as a blink
            d = self._closure_last - self._closure_start
            self.longest_closure = max(self.longest_closure, d)
            self.closures_unknown_end += 1
            self._closure_start = None
        if closed:
            if self._closure_start is None:
                self._closure_start = t
            self._closure_last = t
            return t - self._closure_start
        if closed is False and self._closure_start is not None:
            d = t - self._closure_start
            self.longest_closure = max(self.longest_closure, d)
            if d < s.blink_max_seconds - EPS:
                self.blinks += 1
                self.blink_times.append(t)
            else:
                self.closures += 1
            self._closure_start = None
        return 0.0

    def _yawn_step(self, t: float, gap: bool, mouth: float) -> None:
        s = self.settings
        if math.isfinite(mouth) and mouth > s.mouth_threshold and not (gap and self._mouth_start is not None):
            if self._mouth_start is None:
                self._mouth_start = t
                self._mouth_counted = False
            if not self._mouth_counted and t - self._mouth_start >= s.yawn_seconds - EPS:
                self.yawns += 1
                self.yawn_times.append(t)
                self._mouth_counted = True
        elif math.isfinite(mouth) and mouth > s.mouth_threshold:   # gap inside an opening: restart
            self._mouth_start = t
            self._mouth_counted = False
        else:
            self._mouth_start = None
