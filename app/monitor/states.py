"""The driver monitor's bookkeeping, one small class per concern (app.monitor.core runs them).

Each class keeps only its own state and has a pure ``step(t, ...)``: the frame's timestamp (made
monotonic by DriverMonitor), the frame's :class:`Reading` (or a value an earlier step derived from
it) and the settings in, what the alert rules need out. No clock of their own, no I/O, no events,
no rounding: DriverMonitor turns their outputs into rule conditions, events and the MonitorState.
Time conventions (continuous timers, zero-order-hold windows, ``max_gap``): app/monitor/core.py.

- :class:`Calibration`: the neutral head pose and neutral gaze; the frame's offsets from them and
  what is off the road (:class:`Offsets`).
- :class:`Glance`: the current continuous look away (looking around).
- :class:`TimeSharing`: away time in the sliding window (VATS) and the distraction totals.
- :class:`Nods`: pitch drops recovered quickly, counted in their window.
- :class:`EyeState`: per-eye open baseline (:class:`EyeBaseline`), closures and blinks
  (:class:`Closures`) and PERCLOS (:class:`Perclos`).
- :class:`Yawns`: long mouth openings counted in their window.
- :class:`UnknownSignals`: frames with unknown readings and the unknown stretches worth logging.
- :class:`NoDriver`: how long no face has been seen.
- :class:`Unavailability`: what the monitor cannot see (eyes, driver) and the stretches
  worth logging ("unavailable_start" / "unavailable_end").
"""
from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple, Optional, Union

import numpy as np

from app.core.types import FaceObservation
from app.monitor.settings import MonitorSettings

EPS = 1e-6   # timestamps like i / 30 are not exact in binary: ">= 2 s" means ">= 2 s - 1 us"
NAN = math.nan

# signals whose unknown stretches are logged ("unknown_start" / "unknown_end" events)
UNKNOWN_SIGNALS = ("pose", "eyes", "mouth")
# what the monitor can be unable to see ("unavailable_start" / "unavailable_end" events); "camera"
# comes from the source (camera_unavailable_event in app.monitor.core), the others from the frames
UNAVAILABLE = ("eyes", "driver")

# what is off the road in a frame: "head", "gaze", "both", False (nothing) or None (unknown)
Away = Union[str, bool, None]


def finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def off_road(yaw_offset: float, down: float, yaw_limit: float, pitch_limit: float) -> bool:
    """The road-zone test of the head and the gaze rules: |yaw offset| beyond the yaw limit or more
    than the pitch limit below the neutral (``down`` > 0 = below; looking up stays on the road)."""
    return bool(abs(yaw_offset) > yaw_limit or down > pitch_limit)


def by_of(kinds) -> Optional[str]:
    """"head", "gaze", "both" or None for a set of the kinds that were off the road."""
    if not kinds:
        return None
    return "both" if len(kinds) > 1 else next(iter(kinds))


# ------------------------------------------------------------------------------ the frame's input
# The per-frame values below are NamedTuples: immutable and cheap to make on every frame.
class Reading(NamedTuple):
    """One frame's driver signals as the rules read them; NaN = unknown."""
    face: bool = False                 # a driver face was found
    yaw: float = NAN                   # head pose, degrees
    pitch: float = NAN
    gaze: bool = False                 # the face has gaze data (and the gaze rule is on)
    gaze_yaw: float = NAN              # NaN with gaze data: eyes unknown (closed, unseen)
    gaze_pitch: float = NAN
    eye_open: tuple = (NAN, NAN)       # (left, right) openness; negative readings are unknown too
    mouth: float = NAN
    gap: bool = False                  # the time since the previous frame is longer than max_gap
    pose_known: bool = False
    gaze_known: bool = False
    eyes_known: bool = False           # at least one eye measured
    mouth_known: bool = False
    eyes_hidden: bool = False          # the eyes were looked at and neither is seen (lenses, a hand ...)
    eyes_why: Optional[str] = None     # why: "occluded" | "too_dark"
    dark: bool = False                 # the frame is darker than too_dark_level

    @classmethod
    def of(cls, face: Optional[FaceObservation], use_gaze: bool = True, gap: bool = False,
           dark: bool = False) -> "Reading":
        if face is None:
            return cls(gap=gap, dark=dark)
        yaw = float(face.yaw) if finite(face.yaw) else NAN
        pitch = float(face.pitch) if finite(face.pitch) else NAN
        gz = face.gaze if use_gaze else None
        gyaw = float(gz.yaw) if gz is not None and finite(gz.yaw) else NAN
        gpitch = float(gz.pitch) if gz is not None and finite(gz.pitch) else NAN
        raw = [NAN, NAN]
        if face.eye_open is not None:
            try:
                raw = [float(face.eye_open[0]), float(face.eye_open[1])]
            except (TypeError, ValueError, IndexError):
                raw = [NAN, NAN]
        eyes = (raw[0] if math.isfinite(raw[0]) and raw[0] >= 0 else NAN,
                raw[1] if math.isfinite(raw[1]) and raw[1] >= 0 else NAN)
        mouth = float(face.mouth_open) if finite(face.mouth_open) else NAN
        avail = tuple(face.eye_available or (None, None))
        hidden = False in avail and True not in avail
        # an eye that is not seen has no openness (and both unseen no gaze), whatever a caller put there
        eyes = tuple(NAN if a is False else v for v, a in zip(eyes, avail))
        if hidden:
            gyaw = gpitch = NAN
        return cls(face=True, yaw=yaw, pitch=pitch, gaze=gz is not None, gaze_yaw=gyaw, gaze_pitch=gpitch,
                   eye_open=eyes, mouth=mouth, gap=gap,
                   pose_known=math.isfinite(yaw) and math.isfinite(pitch),
                   gaze_known=math.isfinite(gyaw) and math.isfinite(gpitch),
                   eyes_known=math.isfinite(eyes[0]) or math.isfinite(eyes[1]),
                   mouth_known=math.isfinite(mouth), eyes_hidden=hidden,
                   eyes_why=(face.eye_unavailable_why or "occluded") if hidden else None, dark=dark)


# ------------------------------------------------------------------------------ windows
class Window:
    """Time-weighted intervals [a, b) labelled with a key; totals per key over [start, now]."""

    def __init__(self):
        self.q: deque = deque()
        self.sums: dict = {}

    def add(self, a: float, b: float, key) -> None:
        if b > a:
            self.q.append((a, b, key))
            self.sums[key] = self.sums.get(key, 0.0) + (b - a)

    def hold(self, tp: float, dt: float, known_dt: float, key) -> None:
        """The state ``key`` held over [tp, tp + known_dt); the rest of a longer gap is unknown (None)."""
        if dt <= 0:
            return
        self.add(tp, tp + known_dt, key)
        if dt > known_dt:
            self.add(tp + known_dt, tp + dt, None)

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


def _trim(times: deque, since: float) -> int:
    """Drop the timestamps older than ``since`` (- EPS); how many remain."""
    while times and times[0] < since - EPS:
        times.popleft()
    return len(times)


# ------------------------------------------------------------------------------ calibration
class Offsets(NamedTuple):
    """One frame relative to the neutral pose / gaze; NaN when the reading or the neutral is unknown."""
    yaw: float = NAN          # head yaw - neutral yaw
    pitch: float = NAN        # head pitch - neutral pitch
    down: float = NAN         # the pitch offset signed so that > 0 = below the neutral
    gaze_yaw: float = NAN
    gaze_pitch: float = NAN
    gaze_down: float = NAN
    away: Away = None         # what is off the road ("head" | "gaze" | "both"), False, None = unknown


def _gaze_median(rows) -> tuple[float, float]:
    """Median (gaze yaw, gaze pitch) of calibration samples when at least half of them measured
    the gaze (the neutral gaze belongs to the same seconds as the neutral pose), else NaN."""
    a = np.array(rows, dtype=float).reshape(-1, 2)
    ok = np.isfinite(a).all(axis=1)
    if len(a) == 0 or ok.sum() < 0.5 * len(a):
        return NAN, NAN
    med = np.median(a[ok], axis=0)
    return float(med[0]), float(med[1])


class Calibration:
    """The neutral head pose, learned from the first ``calib_seconds`` of a stable pose (or, after
    ``calib_fallback_seconds`` of face without one, the median of those seconds), re-learned every
    ``recalibrate_after`` s from looking-ahead samples only, or from scratch after :meth:`restart`.
    The neutral gaze is the median gaze of the same window; when that window had too few gaze
    samples, the median of the next ``calib_seconds`` of measured gaze with the head on the road."""

    def __init__(self):
        self.restart()
        self.count = 0                            # calibrations done
        self.at: Optional[float] = None           # timestamp of the last one
        self.by: Optional[str] = None             # "stable" window or "fallback" median

    def restart(self) -> None:
        """Forget the neutral pose and gaze; learn them again from the next frames."""
        self.yaw = self.pitch = NAN
        self.gaze_yaw = self.gaze_pitch = NAN
        self.calibrating = True
        self._buf: deque = deque()                # (t, yaw, pitch, gaze yaw, gaze pitch)
        self._long: deque = deque()               # the same, for the fallback median
        self._gbuf: deque = deque()               # (t, gaze yaw, gaze pitch): the neutral gaze alone
        self._face_s = 0.0                        # seconds of face since calibration began

    @property
    def neutral(self) -> bool:
        return math.isfinite(self.yaw)

    @property
    def first(self) -> bool:
        """Still learning the first neutral pose: the pose and gaze rules wait."""
        return self.calibrating and self.count == 0

    def step(self, t: float, r: Reading, s: MonitorSettings) -> Offsets:
        """Learn from this frame, then its offsets (a frame that completes a calibration is judged
        by the new neutral)."""
        if (s.recalibrate_after > 0 and not self.calibrating and self.at is not None
                and t - self.at >= s.recalibrate_after - EPS):
            self.calibrating = True     # keep the old neutral meanwhile (see settings)
            self._buf.clear()
        if r.pose_known:
            self._learn_pose(t, r, s)
        first = self.first
        if r.pose_known and self.neutral:
            yaw_off, pitch_off = r.yaw - self.yaw, r.pitch - self.pitch
            down = s.pitch_down_sign * pitch_off
        else:
            yaw_off = pitch_off = down = NAN
        head_away = off_road(yaw_off, down, s.alert_yaw, s.alert_pitch) if math.isfinite(yaw_off) and not first else None
        if r.gaze and not math.isfinite(self.gaze_yaw):
            if head_away is False:
                self._learn_gaze(t, r, s)   # neutral pose known, its gaze not yet
            elif head_away:
                self._gbuf.clear()
        gneutral = r.gaze and math.isfinite(self.gaze_yaw)
        if r.gaze_known and gneutral:
            g_yaw_off, g_pitch_off = r.gaze_yaw - self.gaze_yaw, r.gaze_pitch - self.gaze_pitch
            g_down = s.pitch_down_sign * g_pitch_off
        else:
            g_yaw_off = g_pitch_off = g_down = NAN
        gaze_away = off_road(g_yaw_off, g_down, s.gaze_yaw, s.gaze_pitch) if math.isfinite(g_yaw_off) and not first else None
        # unknown: the head pose, or the eyes of a face with gaze data while its head is on the road
        if head_away and gaze_away:
            away: Away = "both"
        elif head_away:
            away = "head"
        elif gaze_away:
            away = "gaze"
        elif head_away is False and (gaze_away is False or not gneutral):
            away = False
        else:
            away = None
        return Offsets(yaw_off, pitch_off, down, g_yaw_off, g_pitch_off, g_down, away)

    def _learn_pose(self, t: float, r: Reading, s: MonitorSettings) -> None:
        if not self.calibrating:
            return
        yaw, pitch, gyaw, gpitch = r.yaw, r.pitch, r.gaze_yaw, r.gaze_pitch
        buf = self._buf
        if self.neutral:
            # periodic re-learning: only "looking ahead" samples (by the old neutral) count
            down = s.pitch_down_sign * (pitch - self.pitch)
            gdown = s.pitch_down_sign * (gpitch - self.gaze_pitch)
            if (abs(yaw - self.yaw) > s.alert_yaw or down > s.alert_pitch
                    or abs(gyaw - self.gaze_yaw) > s.gaze_yaw or gdown > s.gaze_pitch):
                buf.clear()
                return
        elif s.calib_fallback_seconds > 0:
            # first calibration (or after restart()): remember the last fallback seconds
            long = self._long
            if long and t - long[-1][0] <= s.max_gap + EPS:   # a longer gap is no face time
                self._face_s += t - long[-1][0]
            long.append((t, yaw, pitch, gyaw, gpitch))
            while len(long) > 1 and long[1][0] <= t - s.calib_fallback_seconds + EPS:
                long.popleft()
        if buf and (r.gap or t - buf[-1][0] > s.max_gap + EPS):
            buf.clear()
        buf.append((t, yaw, pitch, gyaw, gpitch))
        while len(buf) > 1 and buf[1][0] <= t - s.calib_seconds + EPS:
            buf.popleft()
        if t - buf[0][0] >= s.calib_seconds - EPS:
            a = np.array([(b[1], b[2]) for b in buf])
            med = np.median(a, axis=0)
            spread = np.percentile(np.abs(a - med), 90, axis=0)   # 90 % of the samples within it
            if np.all(spread <= s.calib_max_spread):
                self._set(t, med, "stable", _gaze_median([b[3:] for b in buf]))
                return
        if self._long and self._face_s >= s.calib_fallback_seconds - EPS:
            a = np.array([(b[1], b[2]) for b in self._long])
            self._set(t, np.median(a, axis=0), "fallback", _gaze_median([b[3:] for b in self._long]))

    def _learn_gaze(self, t: float, r: Reading, s: MonitorSettings) -> None:
        """Frames with the eyes unknown are skipped (a blink does not restart it); a gap longer
        than max_gap between measured frames, or a head off the road (step), does."""
        if not r.gaze_known:
            return
        buf = self._gbuf
        if buf and (r.gap or t - buf[-1][0] > s.max_gap + EPS):
            buf.clear()
        buf.append((t, r.gaze_yaw, r.gaze_pitch))
        if t - buf[0][0] >= s.calib_seconds - EPS:
            med = np.median(np.array([(b[1], b[2]) for b in buf]), axis=0)
            self.gaze_yaw, self.gaze_pitch = float(med[0]), float(med[1])
            buf.clear()

    def _set(self, t: float, med, how: str, gaze_med) -> None:
        self.yaw, self.pitch = float(med[0]), float(med[1])
        # too few gaze samples in the window: a periodic re-learn keeps the old neutral gaze, a
        # first one (NaN since restart) learns it next (_learn_gaze)
        if math.isfinite(gaze_med[0]):
            self.gaze_yaw, self.gaze_pitch = float(gaze_med[0]), float(gaze_med[1])
        self._gbuf.clear()
        self.calibrating = False
        self.count += 1
        self.at = t
        self.by = how
        self._buf.clear()
        self._long.clear()
        self._face_s = 0.0


# ------------------------------------------------------------------------------ looking around
class Glance:
    """The current continuous look away. Unknown frames (no face, NaN pose) inside it are bridged
    like dropped frames while the last away frame is at most max_gap old: a head turned so far that
    the detector finds it only every other frame is still looking away."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.start: Optional[float] = None
        self.last: Optional[float] = None   # last away frame of the glance
        self.by: set = set()                # "head" / "gaze": what was off the road during it

    def step(self, t: float, away: Away, s: MonitorSettings) -> float:
        """Seconds away so far (0 when not looking away)."""
        if away:
            if self.start is None or t - self.last > s.max_gap + EPS:
                self.start = t
                self.by = set()
            self.last = t
            self.by.update(("head", "gaze") if away == "both" else (away,))
            return t - self.start
        if away is None and self.start is not None and t - self.last <= s.max_gap + EPS:
            return t - self.start
        self.start = None
        self.by = set()
        return 0.0


class TimeSharing:
    """Away time within the last ``vats_window`` s (each frame's away state held until the next
    frame, at most max_gap) and the run's distraction totals."""

    def __init__(self):
        self.window = Window()
        self.prev: Away = None              # the previous frame's away state
        self.t_prev: Optional[float] = None
        self.distracted = 0.0               # seconds away in the whole run
        self.distracted_by = {"head": 0.0, "gaze": 0.0, "both": 0.0}

    def restart(self) -> None:
        """Empty the window (the totals stay)."""
        self.window.clear()
        self.prev = None

    def step(self, t: float, away: Away, armed: bool, s: MonitorSettings) -> tuple[float, set]:
        """(seconds away in the window, {"head", "gaze"} seen in it); (NaN, {}) until ``armed``."""
        if self.t_prev is not None:
            dt = t - self.t_prev
            known_dt = min(dt, s.max_gap)
            self.window.hold(self.t_prev, dt, known_dt, self.prev)
            if self.prev:
                self.distracted += known_dt
                self.distracted_by[self.prev] += known_dt
        self.t_prev = t
        self.prev = away
        if not armed:
            return NAN, set()
        tot = self.window.totals(t - s.vats_window)
        secs = sum(tot.get(k, 0.0) for k in ("head", "gaze", "both"))
        return secs, {k for k in ("head", "gaze") if tot.get(k, 0.0) + tot.get("both", 0.0) > 0}


# ------------------------------------------------------------------------------ nods
class Nods:
    """A pitch drop of at least ``nod_pitch`` below the neutral recovered (back above half of it)
    within ``nod_seconds`` is one nod; a head that stays down is not one."""

    def __init__(self):
        self.count = 0
        self.restart()

    def restart(self) -> None:
        """Forget the open nod and the window (the count stays)."""
        self.state: Optional[tuple] = None   # ("down", t0) | ("held",) | None
        self.times: deque = deque()

    def step(self, t: float, down: float, gap: bool, s: MonitorSettings) -> int:
        """Nods within the last ``nod_window`` s. ``down``: degrees below the neutral (NaN unknown)."""
        if not math.isfinite(down) or gap:
            self.state = None
        st = self.state
        if not math.isfinite(down):
            pass
        elif st is None:
            if down >= s.nod_pitch - EPS:
                self.state = ("down", t)
        elif st[0] == "down":
            if down < s.nod_pitch / 2.0:
                if t - st[1] <= s.nod_seconds + EPS:
                    self.count += 1
                    self.times.append(t)
                self.state = None
            elif t - st[1] > s.nod_seconds + EPS:
                self.state = ("held",)     # head stays down: not a nod; wait for recovery
        elif down < s.nod_pitch / 2.0:
            self.state = None
        return _trim(self.times, t - s.nod_window)


# ------------------------------------------------------------------------------ eyes
def percentile_of_sorted(vals, p: float) -> float:
    """np.percentile(vals, p) (its default, linear method) of ascending ``vals`` (a non-empty
    sequence of finite floats), with numpy's own arithmetic: the virtual index (n - 1) * (p / 100),
    and its lerp (a + d * g below g = 0.5, b - d * (1 - g) from there), so the value is the same
    to the last bit (tests/test_monitor_states.py). On a list kept sorted it needs no sort:
    0.004 vs 0.07-0.10 ms for 300-3,600 values."""
    n = len(vals)
    vi = (n - 1) * (p / 100)
    if vi >= n - 1:
        return float(vals[-1])
    if vi < 0:
        return float(vals[0])
    lo = math.floor(vi)
    g = vi - lo
    a, b = vals[lo], vals[lo + 1]
    d = b - a
    return float(b - d * (1 - g)) if g >= 0.5 else float(a + d * g)


class EyeBaseline:
    """Per eye: the open baseline (a percentile of the recent not-closed openness) and the
    relative openness of a reading against it."""

    def __init__(self):
        # per eye: the timestamps and the openness of its not-closed samples in arrival order, and
        # the same openness kept sorted (the percentile reads it without sorting every frame)
        self.times = (deque(), deque())
        self.samples = (deque(), deque())
        self.ordered = ([], [])
        self.values = [NAN, NAN]

    def step(self, t: float, eye_open, s: MonitorSettings) -> float:
        """Relative openness: the max over the eyes with an open baseline (NaN: none)."""
        rels = []
        for e in (0, 1):
            v = eye_open[e]
            if not math.isfinite(v):
                continue
            base = self.values[e]
            ts, vs, srt = self.times[e], self.samples[e], self.ordered[e]
            span = base - s.eye_shut_level
            # a baseline below eye_min_open: this eye was never seen open, its state is unknown
            rel = max(0.0, (v - s.eye_shut_level) / span) if math.isfinite(base) and base >= s.eye_min_open else NAN
            if math.isfinite(rel):
                rels.append(rel)
            if not (rel < s.eye_closed_ratio):   # also while not ready / no open baseline (NaN)
                v = float(v)
                ts.append(t)
                vs.append(v)
                bisect.insort(srt, v)
                while (len(ts) > 2 and ts[0] < t - s.eye_baseline_window - EPS
                       and ts[-1] - ts[1] >= s.eye_baseline_min_seconds):
                    ts.popleft()
                    del srt[bisect.bisect_left(srt, vs.popleft())]
                if ts[-1] - ts[0] >= s.eye_baseline_min_seconds - EPS:
                    self.values[e] = percentile_of_sorted(srt, s.eye_baseline_percentile)
        return max(rels) if rels else NAN


class Closures:
    """Eye closures: shorter than ``blink_max_seconds`` a blink, else a closure; one whose end is
    unknown (unknown frame, gap) counts only towards the longest closure, as a lower bound."""

    def __init__(self):
        self.start: Optional[float] = None
        self.last: Optional[float] = None     # last closed frame
        self.blinks = 0
        self.blink_times: deque = deque()     # within the last blink_rate_window s
        self.count = 0                        # closures >= blink_max_seconds (not blinks)
        self.unknown_end = 0                  # closures that ended in an unknown frame / gap
        self.longest = 0.0

    def step(self, t: float, closed: Optional[bool], gap: bool, s: MonitorSettings) -> float:
        """Seconds closed so far (0 when not closed)."""
        d = self._step(t, closed, gap, s)
        _trim(self.blink_times, t - s.blink_rate_window)
        return d

    def _step(self, t: float, closed: Optional[bool], gap: bool, s: MonitorSettings) -> float:
        if self.start is not None and (closed is None or gap):
            self.longest = max(self.longest, self.last - self.start)
            self.unknown_end += 1
            self.start = None
        if closed:
            if self.start is None:
                self.start = t
            self.last = t
            return t - self.start
        if closed is False and self.start is not None:
            d = t - self.start
            self.longest = max(self.longest, d)
            if d < s.blink_max_seconds - EPS:
                self.blinks += 1
                self.blink_times.append(t)
            else:
                self.count += 1
            self.start = None
        return 0.0


class PerclosReading(NamedTuple):
    value: float = NAN          # closed / known time in the window; NaN until perclos_min_seconds known
    closed_s: float = 0.0       # closed seconds in the window
    known_s: float = 0.0        # closed + open seconds in the window


class Perclos:
    """Fraction of the known time in the last ``perclos_window`` s the eyes were closed (each
    frame's state held until the next frame, at most max_gap) and its maximum over the run."""

    def __init__(self):
        self.window = Window()
        self.prev: Optional[bool] = None
        self.t_prev: Optional[float] = None
        self.max = NAN

    def step(self, t: float, closed: Optional[bool], s: MonitorSettings) -> PerclosReading:
        if self.t_prev is not None:
            dt = t - self.t_prev
            self.window.hold(self.t_prev, dt, min(dt, s.max_gap), self.prev)
        self.t_prev = t
        self.prev = closed
        tot = self.window.totals(t - s.perclos_window)
        c, o = tot.get(True, 0.0), tot.get(False, 0.0)
        if c + o >= s.perclos_min_seconds - EPS and c + o > 0:
            value = c / (c + o)
            if not (self.max >= value):
                self.max = value
        else:
            value = NAN
        return PerclosReading(value, c, c + o)


class EyesReading(NamedTuple):
    rel: float = NAN                      # relative openness (see EyeBaseline)
    closed: Optional[bool] = None         # None = unknown
    closed_s: float = 0.0                 # seconds closed so far
    perclos: PerclosReading = PerclosReading()


class EyeState:
    """Baseline -> closed or not -> closures / blinks and PERCLOS."""

    def __init__(self):
        self.baseline = EyeBaseline()
        self.closures = Closures()
        self.perclos = Perclos()

    def step(self, t: float, r: Reading, s: MonitorSettings) -> EyesReading:
        rel = self.baseline.step(t, r.eye_open, s)
        closed = bool(rel < s.eye_closed_ratio) if math.isfinite(rel) else None
        closed_s = self.closures.step(t, closed, r.gap, s)
        return EyesReading(rel, closed, closed_s, self.perclos.step(t, closed, s))


# ------------------------------------------------------------------------------ yawns
class Yawns:
    """A mouth open beyond ``mouth_threshold`` for ``yawn_seconds`` is one yawn (counted once per
    opening; a gap inside an opening restarts it)."""

    def __init__(self):
        self.start: Optional[float] = None
        self.counted = False
        self.count = 0
        self.times: deque = deque()

    def step(self, t: float, r: Reading, s: MonitorSettings) -> int:
        """Yawns within the last ``yawn_window`` s."""
        wide = r.mouth_known and r.mouth > s.mouth_threshold
        if wide and not (r.gap and self.start is not None):
            if self.start is None:
                self.start = t
                self.counted = False
            if not self.counted and t - self.start >= s.yawn_seconds - EPS:
                self.count += 1
                self.times.append(t)
                self.counted = True
        elif wide:
            self.start = t
            self.counted = False
        else:
            self.start = None
        return _trim(self.times, t - s.yawn_window)


# ------------------------------------------------------------------------------ unknown signals
@dataclass
class Stretch:
    """An open stretch of one signal's unknown readings."""
    since: float
    frames: int = 0
    logged: bool = False


class UnknownSignals:
    """Counts the frames whose readings are unknown, and per signal (pose, eyes, mouth) the open
    unknown stretch: it opens on a frame with a face whose reading is unknown (no face alone is the
    no_driver rule's business), stays open while the reading is unknown (with or without a face),
    is to be logged once it has lasted ``unknown_seconds`` and, if it was, closes with an end on
    the first frame that measures it."""

    def __init__(self):
        self.frames = {"no_face_frames": 0, "pose_frames": 0, "eye_frames": 0, "mouth_frames": 0}
        self.gaze_frames = 0                        # faces with gaze data whose gaze was unknown
        self.open: dict = {k: None for k in UNKNOWN_SIGNALS}
        self.logged = {k: 0 for k in UNKNOWN_SIGNALS}   # stretches logged

    def step(self, t: float, r: Reading, s: MonitorSettings) -> list[tuple[str, str, Stretch]]:
        """The stretches to log this frame: ("unknown_start" | "unknown_end", signal, stretch)."""
        if not r.face:
            self.frames["no_face_frames"] += 1
        else:
            self.frames["pose_frames"] += not r.pose_known
            self.frames["eye_frames"] += not r.eyes_known
            self.frames["mouth_frames"] += not r.mouth_known
        self.gaze_frames += r.gaze and not r.gaze_known
        out = []
        for sig, known in zip(UNKNOWN_SIGNALS, (r.pose_known, r.eyes_known, r.mouth_known)):
            u = self.open[sig]
            if not known and (r.face or u is not None):     # (no face: every reading is unknown)
                if u is None:
                    u = self.open[sig] = Stretch(t)
                u.frames += 1
                if not u.logged and t - u.since >= s.unknown_seconds - EPS:
                    u.logged = True
                    self.logged[sig] += 1
                    out.append(("unknown_start", sig, u))
            elif u is not None:
                if u.logged:
                    out.append(("unknown_end", sig, u))
                self.open[sig] = None
        return out


@dataclass
class Unseen:
    """An open stretch of something the monitor cannot see."""
    since: float
    why: Optional[str] = None
    frames: int = 0
    logged: bool = False
    clear_since: Optional[float] = None   # first frame it was seen again (None: not seen since)


class Unavailability:
    """What the monitor cannot see, per frame: the eyes (a face whose eyes were looked at and
    neither is seen) and the driver (no face; a face without a head pose is the "pose" unknown
    signal of UnknownSignals). A stretch
    opens on the first such frame, stays open through frames where it is seen again for less than
    ``clear_seconds`` (hysteresis, as the alerts end), is logged once it has lasted
    ``unavailable_seconds`` and closes (with an end if it was logged) after ``clear_seconds`` seen.
    A frame that cannot tell (the eyes of a frame without a face) leaves the stretch as it is."""

    def __init__(self):
        self.open: dict = {k: None for k in UNAVAILABLE}
        self.logged = {k: 0 for k in UNAVAILABLE}        # stretches logged
        self.logged_s = {k: 0.0 for k in UNAVAILABLE}    # seconds of the logged stretches (closed)

    def step(self, t: float, r: Reading, s: MonitorSettings) -> list[tuple[str, str, Unseen]]:
        """The stretches to log this frame: ("unavailable_start" | "unavailable_end", what, stretch)."""
        conds = {
            "eyes": (r.eyes_hidden, r.eyes_why) if r.face else (None, None),
            "driver": (not r.face, "too_dark" if r.dark else "no_face"),
        }
        out = []
        for what, (cond, why) in conds.items():
            u = self.open[what]
            if cond:
                if u is None:
                    u = self.open[what] = Unseen(t)
                u.clear_since = None
                u.frames += 1
                u.why = why or u.why
                if not u.logged and t - u.since >= s.unavailable_seconds - EPS:
                    u.logged = True
                    self.logged[what] += 1
                    out.append(("unavailable_start", what, u))
            elif cond is False and u is not None:
                if u.clear_since is None:
                    u.clear_since = t
                if t - u.clear_since >= s.clear_seconds - EPS:
                    if u.logged:
                        out.append(("unavailable_end", what, u))
                        self.logged_s[what] += u.clear_since - u.since
                    self.open[what] = None
        return out

    def hidden_s(self, what: str, t: float) -> float:
        """Seconds ``what`` has been unseen so far (0 when it is seen, also while clearing)."""
        u = self.open[what]
        return t - u.since if u is not None and u.clear_since is None else 0.0

    def active(self) -> dict:
        """{what: why} of the logged (reported) stretches still open."""
        return {k: u.why for k, u in self.open.items() if u is not None and u.logged}


class NoDriver:
    """How long no driver face has been seen."""

    def __init__(self):
        self.start: Optional[float] = None

    def step(self, t: float, r: Reading) -> float:
        if r.face:
            self.start = None
            return 0.0
        if self.start is None:
            self.start = t
        return t - self.start
