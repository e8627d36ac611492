"""Driver-monitoring thresholds: one dataclass, each field with its source and its help text
(``HELP``); app/cli.py makes one flag per field (``--alert-yaw`` for ``alert_yaw``).

Sources (details and failure cases in docs/driver-monitoring.md):
- [NCAP] Euro NCAP Assessment Protocol - Safety Assist / Safe Driving, Occupant Status (driver
  state monitoring), version 10.x (2023): long distraction = one glance away >= 3 s; visual
  attention time sharing (VATS) = >= 10 s away accumulated within a 30 s window; drowsiness /
  microsleep = eye closure >= 1 s ... sleep = eye closure >= 3 s; unresponsive driver / driver
  not visible to be detected within 10 s.
- [P80] PERCLOS P80: fraction of time the eyelids are >= 80 % closed (Wierwille et al. 1994,
  Dinges & Grace 1998, FHWA-MCRT-98-006), 1 minute window.
- [OP] openpilot driver monitoring (selfdrive/monitoring): thresholds apply to the pose offset
  from a neutral pose learned online from the driver's own face, not to absolute angles.
- [ROAD] Winter, Fotios & Voelker, "Gaze direction when driving after dark on main and residential
  roads: Where is the dominant location?", Lighting Research and Technology 2016: drivers' eye
  movements on the road cluster within a ~10 deg circle (main road) or a 20 deg wide x 10 deg tall
  ellipse (residential street) centred on the lane ahead.
- [NCAP26] Euro NCAP 2026 rating, Safe Driving (its published scoring code,
  Euro-NCAP/euroncap_rating_2026, safe_driving/driver_monitoring.py): "Unresponsive" (an
  emergency function) and, as noise variables, "Inform of non functional system within 10 seconds
  after the driver wears dark sunglasses" (also a cap, a hat, a hand at 12 o'clock).
- [measured] measured on the shared clips, see docs/driver-monitoring.md.
- [MINE] this project's choice, reasoned in docs/driver-monitoring.md; change it with the flag.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields


@dataclass
class MonitorSettings:
    # ---- neutral pose (calibration) [OP]
    # Seconds of a stable, detected face whose median yaw / pitch become the neutral pose. [MINE]
    calib_seconds: float = 3.0
    # "Stable" = at least 90 % of those seconds' samples within this many degrees of the median,
    # for yaw and for pitch (a short glance is tolerated, checking mirrors delays calibration).
    # 6 deg: a few degrees of per-frame pose noise plus normal head sway. [MINE]
    calib_max_spread: float = 6.0
    # A driver whose head never holds still for calib_seconds (talking, checking mirrors) would
    # never get a neutral pose, and the pose rules would never arm. After this many seconds of a
    # detected face without a stable window, the first calibration takes the median yaw / pitch
    # of those seconds instead: a driver looks ahead most of the time, which is why openpilot
    # learns the neutral pose as a running statistic of the driver's pose [OP]. 0 = never. [MINE]
    calib_fallback_seconds: float = 20.0
    # Re-learn the neutral pose every S seconds after the last calibration (0 = never). The old
    # neutral stays in use meanwhile and only samples within the alert thresholds of it are used,
    # so a long look at a phone cannot become the new "ahead". [MINE]
    recalibrate_after: float = 0.0
    # Sign of "looking down" in the pitch angle: -1 for the AFLW2000 Pose_Para convention the
    # models report (head down = negative pitch), +1 for a source where down is positive.
    pitch_down_sign: float = -1.0

    # ---- looking around (distraction) [NCAP]
    # |yaw - neutral| above this (degrees) counts as looking away. 30 deg: a glance at the
    # centre console / side mirror; the road ahead stays inside it. [MINE, OP uses a similar band]
    alert_yaw: float = 30.0
    # Pitch below neutral by more than this (degrees) counts as looking away (down: phone, lap). [MINE]
    alert_pitch: float = 20.0
    # Away continuously this long -> warning (a mirror glance is < 2 s). [NCAP: 3 s is "long
    # distraction"; 2 s warns earlier, before it.]
    alert_seconds: float = 2.0
    # Away continuously this long -> critical. [NCAP long distraction: single glance >= 3 s]
    critical_seconds: float = 3.0
    # ---- eyes off road (gaze from the iris, app.core.gaze), feeding looking around and time sharing
    # 1 = the gaze rule runs beside the head rule (a face without gaze data falls back to the head
    # rule alone); 0 = head pose only. [MINE]
    use_gaze: int = 1
    # Road zone: |gaze yaw - neutral gaze yaw| above this (degrees) is eyes off road. The road gaze
    # spreads over ~20 deg horizontally [ROAD] (+-10 deg). On the labelled clips
    # (tests/data/gaze_labels.json, app.eval.gaze_eval) eyes on the camera read within 4.4 deg of
    # the neutral gaze with the head still and within 16.4 deg while the head turns 12 deg with the
    # eyes counter-rotated (d3); eyes-only glances to the side read 20-70 deg (median 38-70 per
    # glance). [ROAD, measured]
    gaze_yaw: float = 20.0
    # Gaze below the neutral gaze by more than this (degrees) is eyes off road (phone, lap). On the
    # labelled clips eyes on the camera read at most 11.1 deg down (d14 while the head pitches down
    # 10 deg; 95 % of frames <= 6.7), the eyes-down glance of d3 (eyes lowered below the camera,
    # head still) 13.8-25 deg (median 17). Looking up is not off road (as for the head rule). [measured]
    gaze_pitch: float = 12.0
    # Visual attention time sharing: away time accumulated within the window -> warning. [NCAP]
    vats_seconds: float = 10.0
    vats_window: float = 30.0

    # ---- alert hysteresis / repeat control (all kinds) [MINE]
    # An active alert ends only after its condition has been false this long (gaze back, eyes open ...).
    clear_seconds: float = 1.0
    # After an alert of a kind ends, no new alert of that kind starts for this long.
    cooldown_seconds: float = 5.0

    # ---- eyes [P80, NCAP]
    # Closed = relative openness below this: 0.2 = eyelid gap at most 20 % of the driver's open
    # gap = >= 80 % closed (P80). Relative openness = (openness - eye_shut_level) /
    # (the driver's open-eye baseline - eye_shut_level), so glasses / eye shape do not matter.
    eye_closed_ratio: float = 0.2
    # The openness the eye measure reports for a shut eye (its floor: eyelid landmarks never
    # meet). app.facemesh on the shut-eye frames of shared clips d0 / d14
    # (tests/data/eye_closure_labels.json): 0.074-0.10 (one frame 0.16); open: 0.24-0.47.
    # 0.08 = at the low end of the shut readings. [measured]
    eye_shut_level: float = 0.08
    # A baseline below this is not an open eye (e.g. the monitor started while the eyes were
    # shut): that eye's state stays unknown until it is seen open. Between the shut (<= 0.16)
    # and open (>= 0.24) readings measured on the shared clips. [measured]
    eye_min_open: float = 0.18
    # Open-eye baseline = this percentile of recent not-closed openness, per eye. [MINE]
    eye_baseline_percentile: float = 90.0
    # ... over the last this many seconds (older samples are kept while fewer than 2 s remain,
    # so a long closure cannot pull the baseline down). [MINE]
    eye_baseline_window: float = 60.0
    # Eye rules start once this many seconds of known openness are in the baseline. [MINE]
    eye_baseline_min_seconds: float = 2.0
    # A closure shorter than this is a blink. [typical blink 0.1-0.4 s; Schleicher et al. 2008]
    blink_max_seconds: float = 0.5
    # Closed continuously this long -> eyes_closed warning (microsleep). [NCAP]
    eyes_closed_seconds: float = 1.0
    # Closed continuously this long -> eyes_closed critical (sleep). [NCAP]
    eyes_closed_critical_seconds: float = 3.0
    # PERCLOS window (time-weighted, by timestamps) and its drowsy level. [P80: 1 min, 15 %]
    perclos_window: float = 60.0
    perclos_threshold: float = 0.15
    # Known eye time needed in the window before PERCLOS is reported / can alert. [MINE]
    perclos_min_seconds: float = 30.0
    # Blink rate per minute is counted over this window. [MINE]
    blink_rate_window: float = 60.0

    # ---- yawns [MINE]
    # mouth_open (inner-lip gap / inner mouth width, app.facemesh) above this = mouth wide open.
    # Measured on shared/media/clips/expressions_d18.mp4 (docs/driver-monitoring.md).
    mouth_threshold: float = 0.5
    # Open continuously this long counts one yawn (speech openings are shorter).
    yawn_seconds: float = 1.5
    # This many yawns within the window -> yawning (fatigue) warning.
    yawn_count: int = 3
    yawn_window: float = 300.0

    # ---- nodding [MINE]
    # A pitch drop of at least this (degrees below neutral) ...
    nod_pitch: float = 15.0
    # ... recovered (back above half that drop) within this many seconds counts one nod.
    nod_seconds: float = 1.5
    # This many nods within the window -> nodding (fatigue) warning.
    nod_count: int = 2
    nod_window: float = 60.0

    # ---- driver not visible [NCAP: detect within 10 s]
    no_driver_seconds: float = 3.0

    # ---- monitoring unavailable [NCAP26]
    # What the monitor cannot see (the eyes behind dark lenses, a cap brim or a hand; no face; a
    # frame too dark) for this long, continuously, is an "unavailable_start" event (what: eyes /
    # driver; why: occluded / too_dark / no_face), "unavailable_end" once it is seen again
    # for --clear-seconds. Euro NCAP 2026 (euroncap_rating_2026, safe_driving/driver_monitoring.py,
    # noise variables): "Inform of non functional system within 10 seconds after the driver wears
    # dark sunglasses" (the same for a cap, a hat and a hand on the wheel at 12 o'clock blocking
    # the sensor); at most 10 s. 5 s: half that limit, longer than any closure or glance the
    # eye-visibility measure could confuse with it (none on the shared clips). [NCAP26, MINE]
    unavailable_seconds: float = 5.0
    # Mean grey level (0-255) of the frame below which a missing face is "too_dark" rather than
    # "no_face" (a covered lens, a night without IR light). The darkest frame of the shared clips
    # reads 84 (d14; measured on every 8th pixel, as the pipeline does); a dark, noisy night-time
    # version of d13 (x0.3, noise sd 4) ~35, still with its face found. [MINE, measured]
    too_dark_level: float = 20.0

    # ---- unresponsive driver [NCAP]
    # A critical alert (eyes closed >= --eyes-closed-critical-seconds, i.e. sleep; or looking
    # around >= --critical-seconds) that the driver does not answer - eyes not open again / not
    # back on the road - within this many seconds escalates to an "unresponsive" event of level
    # "emergency". Euro NCAP 2023 Safe Driving protocol: an unresponsive driver is one who does not
    # respond within 3 s of a warning (eyes closed or off the road for >= 6 s = 3 s to the
    # critical level + 3 s); Euro NCAP 2026 scores "Unresponsive" as an emergency function. [NCAP]
    unresponsive_seconds: float = 3.0

    # ---- unknown signals [MINE]
    # A head pose / eye / mouth reading of a detected face that stays unknown (NaN, e.g. eyes not
    # found on a profile face) this long is logged as an "unknown_start" event, and its
    # "unknown_end" when the signal is measured again. 1 s = the shortest alert dwell
    # (--eyes-closed-seconds): a stretch long enough to hide an alert is always in the log, a
    # flicker of one or two frames is only counted.
    unknown_seconds: float = 1.0

    # ---- timing [MINE]
    # A gap between two frames longer than this breaks every "continuously for" timer and counts
    # only this much time as known (dropped frames at 15 fps are ~67 ms each).
    max_gap: float = 0.5

    def validate(self) -> "MonitorSettings":
        """Raise ValueError naming the CLI flag of the first nonsense value; return self."""
        def bad(name: str, why: str):
            raise ValueError(f"{flag_of(name)} {getattr(self, name)!r}: {why}")

        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                bad(f.name, "must be a finite number")
        for name in ("calib_seconds", "alert_seconds", "critical_seconds", "vats_seconds",
                     "vats_window", "eye_closed_ratio", "eye_baseline_window",
                     "eye_baseline_min_seconds", "blink_max_seconds", "eye_min_open", "eyes_closed_seconds",
                     "eyes_closed_critical_seconds", "perclos_window", "perclos_threshold",
                     "blink_rate_window", "mouth_threshold", "yawn_seconds", "yawn_window",
                     "nod_pitch", "nod_seconds", "nod_window", "no_driver_seconds", "max_gap", "unknown_seconds",
                     "alert_yaw", "alert_pitch", "calib_max_spread", "eye_baseline_percentile",
                     "gaze_yaw", "gaze_pitch", "unavailable_seconds", "unresponsive_seconds"):
            if getattr(self, name) <= 0:
                bad(name, "must be > 0")
        for name in ("recalibrate_after", "calib_fallback_seconds", "clear_seconds", "cooldown_seconds", "perclos_min_seconds",
                     "eye_shut_level"):
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.pitch_down_sign not in (-1, 1):
            bad("pitch_down_sign", "must be -1 (down = negative pitch, AFLW) or +1")
        if self.alert_yaw >= 90:
            bad("alert_yaw", "must be < 90 degrees (offset from the neutral pose)")
        if self.use_gaze not in (0, 1):
            bad("use_gaze", "must be 1 (gaze rule on) or 0 (head pose only)")
        for name in ("gaze_yaw", "gaze_pitch"):
            if getattr(self, name) >= 90:
                bad(name, "must be < 90 degrees (offset from the neutral gaze)")
        if self.alert_pitch >= 90:
            bad("alert_pitch", "must be < 90 degrees")
        if self.nod_pitch >= 90:
            bad("nod_pitch", "must be < 90 degrees")
        if self.eye_closed_ratio >= 1:
            bad("eye_closed_ratio", "must be < 1 (fraction of the open-eye baseline)")
        if self.eye_min_open <= self.eye_shut_level:
            bad("eye_min_open", f"must be > --eye-shut-level ({self.eye_shut_level})")
        if self.eye_baseline_percentile > 100:
            bad("eye_baseline_percentile", "must be <= 100")
        if self.perclos_threshold > 1:
            bad("perclos_threshold", "must be <= 1 (a fraction: 0.15 = 15 %)")
        if self.critical_seconds < self.alert_seconds:
            bad("critical_seconds", f"must be >= --alert-seconds ({self.alert_seconds})")
        if self.vats_window <= self.vats_seconds:
            bad("vats_window", f"must be longer than --vats-seconds ({self.vats_seconds})")
        if self.eyes_closed_seconds < self.blink_max_seconds:
            bad("eyes_closed_seconds", f"must be >= --blink-max-seconds ({self.blink_max_seconds})")
        if self.eyes_closed_critical_seconds < self.eyes_closed_seconds:
            bad("eyes_closed_critical_seconds",
                f"must be >= --eyes-closed-seconds ({self.eyes_closed_seconds})")
        if self.perclos_window <= self.eyes_closed_seconds:
            bad("perclos_window", f"must be longer than --eyes-closed-seconds ({self.eyes_closed_seconds})")
        if self.perclos_min_seconds > self.perclos_window:
            bad("perclos_min_seconds", f"must be <= --perclos-window ({self.perclos_window})")
        if self.eye_baseline_min_seconds > self.eye_baseline_window:
            bad("eye_baseline_min_seconds",
                f"must be <= --eye-baseline-window ({self.eye_baseline_window})")
        if self.yawn_window <= self.yawn_seconds:
            bad("yawn_window", f"must be longer than --yawn-seconds ({self.yawn_seconds})")
        if self.nod_window <= self.nod_seconds:
            bad("nod_window", f"must be longer than --nod-seconds ({self.nod_seconds})")
        if self.yawn_count < 1 or self.yawn_count != int(self.yawn_count):
            bad("yawn_count", "must be a whole number >= 1")
        if self.nod_count < 1 or self.nod_count != int(self.nod_count):
            bad("nod_count", "must be a whole number >= 1")
        if self.unavailable_seconds > 10:
            bad("unavailable_seconds", "must be <= 10 s (Euro NCAP 2026: inform within 10 s)")
        if not 0 <= self.too_dark_level < 255:
            bad("too_dark_level", "must be a grey level in 0..255")
        if self.calib_seconds <= self.max_gap:
            bad("calib_seconds", f"must be longer than --max-gap ({self.max_gap})")
        if 0 < self.calib_fallback_seconds <= self.calib_seconds:
            bad("calib_fallback_seconds", f"must be 0 (off) or longer than --calib-seconds ({self.calib_seconds})")
        return self


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


# The help text of each field's flag (app/cli.py).
HELP = {
    "calib_seconds": "seconds of a stable face that set the neutral pose",
    "calib_max_spread": "max robust spread (deg) of yaw/pitch while calibrating",
    "calib_fallback_seconds": "seconds of face without a stable window after which the first neutral "
                              "pose is their median (0 = never)",
    "recalibrate_after": "re-learn the neutral pose every S seconds (0 = never)",
    "pitch_down_sign": "-1 if looking down is a negative pitch (AFLW Pose_Para), +1 otherwise",
    "alert_yaw": "yaw offset from neutral (deg) that counts as looking away",
    "alert_pitch": "pitch below neutral (deg) that counts as looking away",
    "alert_seconds": "seconds away before a looking_around warning",
    "critical_seconds": "seconds away before it becomes critical (Euro NCAP: 3)",
    "use_gaze": "1: eyes off road (iris gaze) counts beside the head pose; 0: head pose only",
    "gaze_yaw": "gaze yaw offset from the neutral gaze (deg) that counts as eyes off road",
    "gaze_pitch": "gaze below the neutral gaze (deg) that counts as eyes off road",
    "vats_seconds": "accumulated seconds away within --vats-window -> time_sharing warning",
    "vats_window": "time-sharing window (s)",
    "clear_seconds": "an alert ends after its condition is false this long (hysteresis)",
    "cooldown_seconds": "no repeat of an alert kind within this long after it ended",
    "eye_closed_ratio": "closed = openness below this fraction of the open-eye baseline (P80: 0.2)",
    "eye_shut_level": "openness the eye measure reports for a shut eye (its floor)",
    "eye_min_open": "a baseline below this is not an open eye (eye state unknown)",
    "eye_baseline_percentile": "percentile of recent openness used as the open-eye baseline",
    "eye_baseline_window": "seconds of openness the baseline is taken over",
    "eye_baseline_min_seconds": "seconds of known openness before eye rules start",
    "blink_max_seconds": "a closure shorter than this is a blink",
    "eyes_closed_seconds": "closure this long -> eyes_closed warning (microsleep)",
    "eyes_closed_critical_seconds": "closure this long -> eyes_closed critical (sleep)",
    "perclos_window": "PERCLOS window (s)",
    "perclos_threshold": "PERCLOS fraction -> drowsy warning",
    "perclos_min_seconds": "known eye seconds needed in the window before PERCLOS counts",
    "blink_rate_window": "window (s) of the blink rate",
    "mouth_threshold": "mouth_open above this = mouth wide open",
    "yawn_seconds": "mouth wide open this long counts a yawn",
    "yawn_count": "yawns within --yawn-window -> yawning warning",
    "yawn_window": "yawn counting window (s)",
    "nod_pitch": "pitch drop below neutral (deg) that starts a nod",
    "nod_seconds": "a nod recovers within this many seconds",
    "nod_count": "nods within --nod-window -> nodding warning",
    "nod_window": "nod counting window (s)",
    "no_driver_seconds": "no face this long -> no_driver warning",
    "unavailable_seconds": "eyes / driver not seen this long -> unavailable_start event "
                           "(Euro NCAP 2026: within 10 s)",
    "too_dark_level": "mean frame grey level (0-255) below which a missing face is too_dark",
    "unresponsive_seconds": "a critical eyes_closed / looking_around alert not answered this long -> "
                            "unresponsive (emergency)",
    "unknown_seconds": "a face's pose / eye / mouth reading unknown this long is logged (unknown_start)",
    "max_gap": "frame gap (s) that breaks continuous timers",
}


def replace(settings: MonitorSettings, **changes) -> MonitorSettings:
    """dataclasses.replace + validate."""
    return dataclasses.replace(settings, **changes).validate()
