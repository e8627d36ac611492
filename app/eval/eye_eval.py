"""Eye openness on hand-labelled clips, two measures side by side: ``python -m app.eval.eye_eval``.

Runs the app's landmark path (detector, tracked crops turned by the face's roll, the face landmark
model and its blendshape model; no smoothing: neither measure is smoothed in the app) once over
each clip of the labels file (tests/data/eye_closure_labels.json) and feeds each measure through
the real DriverMonitor:

- ``eyelid``: ``FaceObservation.eye_open`` (app.facemesh.eye_openness: eyelid gap / eye width),
  the app's measure, with the monitor's own settings;
- ``blendshape``: ``1 - eyeBlinkLeft`` / ``1 - eyeBlinkRight`` (MediaPipe's blendshape scores; its
  Left / Right are the subject's, like ``eye_open``: a wink of the subject's right eye on shared
  clip d3 frames 39-43 reads eyelid 0.09 / 1 - eyeBlinkRight 0.45 against 0.26 / 0.89 for the
  left eye), with ``--eye-shut-level`` / ``--eye-min-open`` set to this measure's own floor
  (BLENDSHAPE_LEVELS).

Scored as tests/test_monitor_clips.py scores the eyelid measure: relative openness below
``--eye-closed-ratio`` on the labelled closed / open frames (after the 2 s baseline); in the
``blinks.scored`` spans, a labelled episode is matched when exactly one blink is counted on the
first open frames after it (at most 3 frames later), ``extra`` = blinks counted there outside the
episodes, ``closures`` = closures (0.5-1 s) ending there, ``events`` = alert starts in the clip.
Each measure is printed at the monitor's ``--eye-closed-ratio`` and swept over ratios; its best
ratio is the middle of the range that detects the most closed frames with no open frame called
closed, every episode matched, no extra blink, closure or alert (chosen on the frames it scores:
a training figure, for comparing the two measures, each at its own best).

``--json OUT`` writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.io.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "tests" / "data" / "eye_closure_labels.json"
CLIPS = ROOT.parent / "shared" / "media" / "clips"

MEASURES = ("eyelid", "blendshape")
# The blendshape measure's floor and open-eye minimum, the counterparts of the monitor's
# eye_shut_level (0.08) / eye_min_open (0.18) for the eyelid measure: 1 - eyeBlink reads 0.15-0.40
# on the labelled shut frames of d0 / d14 (per eye; 0.27-0.33 on d0), 0.76-1.0 on the open ones
# (5th percentile 0.77 / 0.93); floor = the low end of the shut readings, open minimum = between
# the highest shut and the open readings. [measured]
BLENDSHAPE_LEVELS = {"eye_shut_level": 0.15, "eye_min_open": 0.55}
RATIOS = tuple(round(0.04 + 0.02 * i, 2) for i in range(39))     # 0.04 .. 0.80
BLINK_LATE_FRAMES = 3      # a blink is counted on the first open frame after the episode, <= 3 later


def frames_idx(ranges) -> np.ndarray:
    if not ranges:
        return np.zeros(0, int)
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges])


def run_clip(path: Path) -> dict:
    """Per frame of the largest face: ``eyelid`` (n, 2) eye_open, ``blendshape`` (n, 2)
    1 - eyeBlink (left, right: the subject's), ``mouth`` (n,); NaN = no face / not measured."""
    import cv2

    from app.core.types import Frame
    from app.pipeline import Pipeline
    from app.settings import MESH_MODEL, Settings

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    pipe = Pipeline(Settings(model=MESH_MODEL, monitor=None, smoothing=False))
    rows = []
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            obs = pipe.process(Frame(img, i / fps, i)).observations
            o = max(obs, key=lambda f: f.area) if obs else None
            nan2 = (math.nan, math.nan)
            eyelid = tuple(o.eye_open) if o is not None else nan2
            bs = o.blendshapes if o is not None else None
            blend = (1.0 - bs["eyeBlinkLeft"], 1.0 - bs["eyeBlinkRight"]) if bs else nan2
            rows.append((*eyelid, *blend, o.mouth_open if o is not None else math.nan))
            i += 1
    finally:
        cap.release()
        pipe.close()
    a = np.array(rows, dtype=float).reshape(-1, 5)
    return {"fps": fps, "eyelid": a[:, 0:2], "blendshape": a[:, 2:4], "mouth": a[:, 4]}


def settings_for(measure: str, base=None, ratio: float | None = None):
    """MonitorSettings for a measure: the monitor's own for ``eyelid``, the blendshape floor and
    open minimum (BLENDSHAPE_LEVELS) for ``blendshape``; ``ratio`` replaces --eye-closed-ratio."""
    from app.monitor.settings import MonitorSettings

    s = base or MonitorSettings()
    if measure == "blendshape":
        s = replace(s, **BLENDSHAPE_LEVELS)
    elif measure != "eyelid":
        raise ValueError(f"unknown eye measure {measure!r} (one of {', '.join(MEASURES)})")
    if ratio is not None:
        s = replace(s, eye_closed_ratio=float(ratio))
    s.validate()
    return s


def monitor_pass(eyes: np.ndarray, mouth: np.ndarray, fps: float, settings) -> dict:
    """The DriverMonitor over a clip's per-eye openness: relative openness per frame, the frames
    on which a blink / closure was counted (the first open frame after it) and all events."""
    from app.core.types import FaceObservation
    from app.monitor import DriverMonitor

    mon = DriverMonitor(settings)
    rel, blink_frames, closure_frames, events = [], [], [], []
    box, lm = np.array([0, 0, 100, 100.0]), np.zeros((68, 3))
    for i in range(len(eyes)):
        f = FaceObservation(box=box, landmarks=lm, model="mesh", yaw=0.0, pitch=0.0,
                            eye_open=(float(eyes[i, 0]), float(eyes[i, 1])), mouth_open=float(mouth[i]))
        blinks, closures = mon.blinks, mon.closures
        st = mon.update(i / fps, i, f)
        rel.append(st.signals["eye_open_rel"])
        blink_frames += [i] * (mon.blinks - blinks)
        closure_frames += [i] * (mon.closures - closures)
        events += st.events
    return {"rel": np.array(rel, dtype=float), "blink_frames": blink_frames,
            "closure_frames": closure_frames, "events": events, "blinks": mon.blinks}


def score_clip(eyes: np.ndarray, mouth: np.ndarray, fps: float, labels: dict, settings) -> dict:
    """The numbers of one clip and one measure (see the module docstring)."""
    m = monitor_pass(eyes, mouth, fps, settings)
    rel = m["rel"]
    ready = np.isfinite(rel)
    closed_i = [i for i in frames_idx(labels["closed"]) if ready[i]]
    open_i = [i for i in frames_idx(labels["open"]) if ready[i]]
    ratio = settings.eye_closed_ratio
    spans, episodes = labels["blinks"]["scored"], labels["blinks"]["episodes"]

    def in_spans(i):
        return any(a <= i <= b for a, b in spans)

    # a blink counted on frame i ends a closure whose last shut frame is i - 1
    scored = [i for i in m["blink_frames"] if in_spans(i - 1)]
    matched = []
    for lo, hi in episodes:
        got = [i for i in scored if hi < i <= hi + BLINK_LATE_FRAMES]
        if len(got) == 1:
            matched += got
    starts = [e for e in m["events"] if e["event"] == "start"]
    return {
        "closed_frames": len(closed_i), "closed_hit": int(np.sum(rel[closed_i] < ratio)),
        "open_frames": len(open_i), "open_false": int(np.sum(rel[open_i] < ratio)),
        "not_ready": int(len(frames_idx(labels["closed"])) + len(frames_idx(labels["open"]))
                         - len(closed_i) - len(open_i)),
        "episodes": len(episodes), "matched": len(matched),
        "extra": len([i for i in scored if i not in matched]),
        "closures": len([i for i in m["closure_frames"] if in_spans(i - 1)]),
        "events": [e["kind"] for e in starts],
        "blinks_total": m["blinks"],
        # separation on the labelled frames: lowest open and highest closed relative openness
        "open_rel_min": float(np.min(rel[open_i])) if open_i else math.nan,
        "closed_rel_max": float(np.max(rel[closed_i])) if closed_i else math.nan,
    }


def total(per_clip: dict) -> dict:
    """Sums over clips of the counts of score_clip."""
    keys = ("closed_frames", "closed_hit", "open_frames", "open_false", "episodes", "matched", "extra", "closures")
    out = {k: sum(r[k] for r in per_clip.values()) for k in keys}
    out["events"] = sum(len(r["events"]) for r in per_clip.values())
    out["open_rel_min"] = min(r["open_rel_min"] for r in per_clip.values())
    out["closed_rel_max"] = max(r["closed_rel_max"] for r in per_clip.values())
    return out


def clean(t: dict) -> bool:
    """No open frame called closed, every episode matched, nothing extra."""
    return (t["open_false"] == 0 and t["matched"] == t["episodes"] and t["extra"] == 0
            and t["closures"] == 0 and t["events"] == 0)


def best_ratio(sweep: dict) -> dict:
    """The ratio range (of RATIOS) that is clean with the most closed frames detected, and its middle."""
    ok = [(r, t) for r, t in sweep.items() if clean(t)]
    if not ok:
        return {"ratio": math.nan, "low": math.nan, "high": math.nan, "closed_hit": 0}
    top = max(t["closed_hit"] for _, t in ok)
    rs = sorted(r for r, t in ok if t["closed_hit"] == top)
    # the middle of the (first contiguous) range of best ratios
    run = [rs[0]]
    for r in rs[1:]:
        if round(r - run[-1], 6) <= 0.02 + 1e-9:
            run.append(r)
        else:
            break
    mid = run[len(run) // 2]
    return {"ratio": mid, "low": run[0], "high": run[-1], "closed_hit": top}


def evaluate(labels_path: Path = LABELS, clips_dir: Path = CLIPS, ratios=RATIOS, series=None) -> dict:
    """Per measure: ``default`` (per clip and total, the monitor's --eye-closed-ratio), ``sweep``
    (ratio -> total), ``best`` (best_ratio) and ``at_best`` (per clip and total at the best ratio).
    ``series``: {clip: run_clip(...)} already computed (else run here)."""
    clips = json.loads(Path(labels_path).read_text())["clips"]
    if series is None:
        series = {name: run_clip(Path(clips_dir) / name) for name in clips}
    res = {}
    for meas in MEASURES:
        def per(ratio=None):
            s = settings_for(meas, ratio=ratio)
            pc = {name: score_clip(series[name][meas], series[name]["mouth"], series[name]["fps"], lab, s)
                  for name, lab in clips.items()}
            return {"clips": pc, "total": total(pc), "ratio": s.eye_closed_ratio}

        default = per()
        sweep = {r: per(r)["total"] for r in ratios}
        best = best_ratio(sweep)
        at_best = per(best["ratio"]) if math.isfinite(best["ratio"]) else None
        res[meas] = {"levels": {"eye_shut_level": settings_for(meas).eye_shut_level,
                                "eye_min_open": settings_for(meas).eye_min_open},
                     "default": default, "sweep": sweep, "best": best, "at_best": at_best}
    return res


def _row(meas: str, ratio: float, clip: str, r: dict) -> str:
    return (f"{meas:<11} {ratio:>5.2f} {clip:<20} {r['closed_hit']:>4}/{r['closed_frames']:<4} "
            f"{r['closed_hit'] / max(1, r['closed_frames']) * 100:>4.0f}% {r['open_false']:>4}/{r['open_frames']:<4} "
            f"{r['matched']:>4}/{r['episodes']:<4} {r['extra']:>5} {r['closures']:>8} "
            f"{r['events'] if isinstance(r['events'], int) else len(r['events']):>6} "
            f"{r['open_rel_min']:>8.2f} {r['closed_rel_max']:>8.2f}")


def format_table(res: dict) -> str:
    head = (f"{'measure':<11} {'ratio':>5} {'clip':<20} {'closed hit':>10} {'':>5} {'open->closed':>12} "
            f"{'episodes':>9} {'extra':>5} {'closures':>8} {'alerts':>6} {'open min':>8} {'shut max':>8}")
    lines = [head]
    for meas, r in res.items():
        for label, block in (("default", r["default"]), ("best", r["at_best"])):
            if block is None:
                lines.append(f"{meas:<11} no clean ratio in the sweep")
                continue
            for clip, c in block["clips"].items():
                lines.append(_row(meas, block["ratio"], clip.replace("expressions_", "").replace(".mp4", ""), c))
            lines.append(_row(meas, block["ratio"], f"total ({label})", block["total"]))
    lines.append("")
    lines.append("clean ratio range (most closed frames, no open frame closed, every episode matched, nothing extra):")
    for meas, r in res.items():
        b = r["best"]
        lv = r["levels"]
        lines.append(f"  {meas:<11} shut level {lv['eye_shut_level']:.2f}, min open {lv['eye_min_open']:.2f}: "
                     f"ratio {b['low']:.2f}-{b['high']:.2f} (best {b['ratio']:.2f}), "
                     f"{b['closed_hit']} closed frames; clean ratios: "
                     f"{sum(clean(t) for t in r['sweep'].values())} of {len(r['sweep'])}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.eval.eye_eval", description=__doc__.split("\n")[0])
    p.add_argument("--labels", default=str(LABELS), help="labels file (default %(default)s)")
    p.add_argument("--clips", default=str(CLIPS), help="folder of the labelled clips (default %(default)s)")
    p.add_argument("--json", metavar="OUT.json", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    for path, what in ((Path(args.labels), "labels file"), (Path(args.clips), "clips folder")):
        if not path.exists():
            print(f"error: {what} {path} not found (give --labels / --clips)", file=sys.stderr)
            return 2
    try:
        res = evaluate(Path(args.labels), Path(args.clips))
    except FileNotFoundError as e:
        print(f"error: {e} (a clip of {args.labels} is missing from --clips)", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
