"""Eye availability on real and occluded clips: ``python -m app.eval.eye_visibility_eval``.

Makes the occluded clips with scripts/occlude_eyes.py (dark sunglasses, a cap brim, a hand, glare painted
from the app's own landmarks; the lenses on from ``--on`` s and off at ``--off`` s of a ping-pong
loop ``--seconds`` long; a dark, noisy night-time version and a grey-scale one), then runs the
app's default pipeline with the driver monitor over them and over every shared clip, as
``main.py --video CLIP --headless`` would, and prints per clip:

- the eye-visibility measure per eye (``FaceObservation.eye_visibility``: the eye patch's
  grey-level spread over the cheek's mean; 5th percentile / median / 95th) and the frames on which
  each eye, and both, were unavailable;
- on the hand-labelled clips (tests/data/eye_closure_labels.json), the labelled closed frames
  that read unavailable (a closed eye is a visible eye: goal 0);
- the events: ``unavailable_start`` / ``unavailable_end`` (what, why, time), eyes_closed / drowsy
  alert starts, and for the lenses the time from their first frame to ``unavailable_start``
  (eyes) and from their last one to ``unavailable_end``.

``--json OUT`` writes the numbers; ``--keep DIR`` keeps the made clips there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from app.io.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "media"
LABELS = ROOT / "tests" / "data" / "eye_closure_labels.json"
ORIGINALS = ("clips/expressions_d0.mp4", "clips/expressions_d3.mp4", "clips/expressions_d13.mp4",
             "clips/expressions_d14.mp4", "clips/expressions_d18.mp4", "talking_head_720p.mp4")


def occlude_module():
    """scripts/occlude_eyes.py as a module (the script that makes the occluded clips)."""
    spec = importlib.util.spec_from_file_location("occlude_eyes", ROOT / "scripts" / "occlude_eyes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def night_version(src: Path, dst: Path, gain: float = 0.3, noise: float = 4.0, grey: bool = True) -> None:
    """A dark, noisy grey-scale version of a clip (what a night-time IR camera gives): x gain,
    Gaussian noise of sd ``noise`` grey levels (fixed seed); ``gain`` 1, ``noise`` 0: grey only."""
    occ = occlude_module()
    frames, fps = occ.read_frames(src)
    rng = np.random.default_rng(0)
    out = []
    for img in frames:
        g = img.astype(np.float32)
        if grey:
            g = np.repeat(g.mean(axis=2, keepdims=True), 3, axis=2)
        g = g * gain + (rng.normal(0, noise, g.shape).astype(np.float32) if noise else 0)
        out.append(np.clip(g, 0, 255).astype(np.uint8))
    occ.write_h264(dst, out, fps)


def run_clip(path: Path, model=None) -> dict:
    """The default pipeline (or ``model``) with the monitor over a clip: per frame the driver's
    eye visibility, availability and openness; all monitor events."""
    import cv2

    from app.core.types import Frame
    from app.pipeline import Pipeline
    from app.settings import Settings

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    pipe = Pipeline(Settings() if model is None else Settings(model=model))
    vis, avail, eo, events, vis_ms = [], [], [], [], []
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            res = pipe.process(Frame(img, i / fps, i))
            d = res.driver
            vis.append(d.eye_visibility if d is not None else (math.nan, math.nan))
            avail.append([np.nan if a is None else float(a) for a in d.eye_available] if d is not None
                         else [np.nan, np.nan])
            eo.append(d.eye_open if d is not None else (math.nan, math.nan))
            vis_ms.append(res.stage_ms.get("eye vis", math.nan))
            events += [dict(e) for e in res.events]
            i += 1
        summary = pipe.monitor.summary()
    finally:
        cap.release()
        pipe.close()
    return {"fps": fps, "frames": i, "vis": np.array(vis, float).reshape(-1, 2),
            "avail": np.array(avail, float).reshape(-1, 2), "eye_open": np.array(eo, float).reshape(-1, 2),
            "events": events, "summary": summary, "vis_ms": np.array(vis_ms, float)}


def _idx(ranges) -> np.ndarray:
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges]) if ranges else np.zeros(0, int)


def score(name: str, r: dict, labels: dict, lens: tuple | None = None) -> dict:
    """The numbers printed for one clip. ``lens``: (first, last) frame with lenses painted."""
    vis, av = r["vis"], r["avail"]
    fin = vis[np.isfinite(vis)]
    ev = r["events"]
    unav = [e for e in ev if e["event"] in ("unavailable_start", "unavailable_end")]
    alerts = [e for e in ev if e["event"] == "start" and e["kind"] in ("eyes_closed", "drowsy")]
    out = {
        "clip": name, "frames": r["frames"], "fps": r["fps"],
        "faces": int(np.isfinite(av).all(axis=1).sum()),
        "vis_p5_med_p95": [round(float(v), 3) for v in np.percentile(fin, (5, 50, 95))] if fin.size else None,
        "vis_min_max": [round(float(fin.min()), 3), round(float(fin.max()), 3)] if fin.size else None,
        "unavailable_frames": [int((av[:, 0] == 0).sum()), int((av[:, 1] == 0).sum())],
        "both_unavailable_frames": int(((av[:, 0] == 0) & (av[:, 1] == 0)).sum()),
        "unavailable_events": [(e["event"], e["what"], e.get("why"), e["t"]) for e in unav],
        "eye_alerts": [(e["kind"], e["level"], e["t"]) for e in alerts],
        "unresponsive": [(e["event"], e["t"]) for e in ev if e["kind"] == "unresponsive"],
        "eye_vis_ms_median": round(float(np.nanmedian(r["vis_ms"])), 3),
    }
    lab = labels.get(name)
    if lab:
        c = _idx(lab["closed"])
        c = c[c < len(av)]
        out["closed_frames_unavailable"] = int(((av[c] == 0).any(axis=1)).sum())
        out["closed_frames"] = int(len(c))
        cv = vis[c]
        out["closed_vis_min"] = round(float(np.nanmin(cv)), 3) if np.isfinite(cv).any() else None
    if lens is not None:
        a, b = lens
        fps = r["fps"]
        st = [e for e in ev if e["event"] == "unavailable_start" and e["what"] == "eyes"]
        en = [e for e in ev if e["event"] == "unavailable_end" and e["what"] == "eyes"]
        out["lens_frames"] = [a, b]
        out["start_after_lens_s"] = round(st[0]["t"] - a / fps, 3) if st else None
        out["end_after_lens_off_s"] = (round(en[0]["t"] - (b + 1) / fps, 3)
                                       if en and b + 1 < r["frames"] else None)
        out["eye_alerts_during_lens"] = [x for x in out["eye_alerts"] if a / fps <= x[2] <= (b + 1) / fps]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="eye availability on real and occluded clips")
    ap.add_argument("--base", default=str(SHARED / "clips" / "expressions_d13.mp4"),
                    help="the clip the occluded versions are made from (d13: a man with glasses)")
    ap.add_argument("--on", type=float, default=3.0, help="lenses on at this second")
    ap.add_argument("--off", type=float, default=18.0, help="lenses off at this second (half-way)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the occluded clips")
    ap.add_argument("--only", default=None, help="comma-separated clip names to run (default all)")
    ap.add_argument("--model", default=None, help="as main.py --model (default: the app's default)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the made clips in this folder")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    base = Path(a.base)
    if not base.is_file():
        print(f"error: no clip {base}: the shared media folder (../shared) is needed", file=sys.stderr)
        return 2
    labels = json.loads(LABELS.read_text())["clips"]
    occ = occlude_module()
    work = a.keep or Path(tempfile.mkdtemp(prefix="eyevis-"))
    work.mkdir(parents=True, exist_ok=True)
    stem = base.stem.replace("expressions_", "")
    jobs = [(Path(p).name, SHARED / p, None) for p in ORIGINALS]
    made = {
        f"{stem}_sunglasses_off_halfway.mp4": dict(variant="sunglasses", on=a.on, off=a.off, seconds=a.seconds),
        f"{stem}_sunglasses.mp4": dict(variant="sunglasses", on=a.on, seconds=a.seconds),
        f"{stem}_cap.mp4": dict(variant="cap", on=a.on, seconds=a.seconds),
        f"{stem}_hand.mp4": dict(variant="hand", on=a.on, seconds=a.seconds),
        f"{stem}_glare.mp4": dict(variant="glare", on=a.on, seconds=a.seconds),
        f"{stem}_none.mp4": dict(variant="none", seconds=a.seconds),
    }
    only = set(a.only.split(",")) if a.only else None
    results = []
    for name, kw in made.items():
        if only and name not in only:
            continue
        info = occ.make(base, work / name, **kw)
        jobs.append((name, work / name, info["painted"]))
    for name, kw in ((f"{stem}_night.mp4", {}), (f"{stem}_grey.mp4", dict(gain=1.0, noise=0.0))):
        if only and name not in only:
            continue
        night_version(base, work / name, **kw)
        jobs.append((name, work / name, None))
    for name, path, lens in jobs:
        if only and name not in only:
            continue
        r = run_clip(path, a.model)
        sc = score(name, r, labels, lens)
        results.append(sc)
        print(json.dumps(sc), flush=True)
    if a.json:
        with atomic_write(a.json) as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
