"""Eyes-off-road accuracy on hand-labelled clips: ``python -m app.eval.gaze_eval``.

Runs the real pipeline (the face mesh with its iris points, One Euro smoothing as in the app, no
monitor) over each clip of the labels file (tests/data/gaze_labels.json), takes the neutral head
pose and gaze as the median over the clip's ``neutral`` frames (as if Recalibrate were pressed
there), and judges every frame with the monitor's own road-zone test (``off_road`` with
--gaze-yaw / --gaze-pitch, and --alert-yaw / --alert-pitch for the head). Prints per clip:

- agreement: labelled frames (``on`` = eyes on the camera, ``away`` = eyes-only glance) whose
  gaze verdict matches the label, over the labelled frames whose gaze was measured; ``unknown``
  = labelled frames without a gaze (an eye below the openness limit, a blink);
- glances: a labelled away range is a hit when at least half of its measured frames are off the
  road, else a miss; a false glance is a run of >= 3 consecutive off-road frames inside an ``on``
  range;
- head rule: how many labelled away frames the head rule alone calls away (eyes-only glances it
  cannot see);
- turned: ``head_turned_eyes_on`` frames (head turned, eyes counter-rotated onto the camera)
  that the gaze rule keeps on the road, and the largest head yaw offset among them;
- noise: on the ``on`` frames, the standard deviation of gaze yaw / pitch and the 95th percentile
  of the angle between the gaze direction and its median direction (degrees).

Two eye-in-head sources, scored in the same run on the same frames (same head rotation, same
openness gating, same One Euro smoothing of the per-eye angles, same neutral frames):

- ``iris``: the app's gaze (app.core.gaze.eye_angles, from the iris points), as the pipeline
  gives it;
- ``blendshape``: MediaPipe's eyeLook* blendshapes of the same frames
  (app.core.gaze.blendshape_eye_angles: yaw = gain x (look towards the subject's right), pitch =
  gain x (eyeLookUp - eyeLookDown) per eye). The gains (degrees per unit) are fitted by fixation,
  as the iris radii were: on the labelled ``on`` frames the eyes stay on the camera, so the
  eye-in-head angle must counter-rotate the head one to one; gain = -1 / (slope of the signal
  against the head angle), offsets from each clip's median, the clips pooled. By default on all
  clips (the iris radii were set the same way); ``--holdout`` scores each clip with gains fitted
  on the other clips only;
- ``mixed``: the blendshapes' yaw (gain as above) with the iris source's pitch.

``--json OUT`` writes the numbers; ``--no-smoothing`` measures the unsmoothed gaze; ``--model
M.onnx`` takes the head pose from a 3DMM (the iris still comes from the face mesh); ``--source``
scores one source only.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from app.io.files import atomic_write

ROOT = Path(__file__).resolve().parents[2]
LABELS = ROOT / "tests" / "data" / "gaze_labels.json"
CLIPS = ROOT.parent / "shared" / "media" / "clips"


def frames_idx(ranges) -> np.ndarray:
    if not ranges:
        return np.zeros(0, int)
    return np.concatenate([np.arange(a, b + 1) for a, b in ranges])


def run_clip(path: Path, smoothing: bool = True, model: str | None = None, flip_average: bool = False,
             landmark_crop_scale: float = 1.0) -> dict:
    """Per frame: head yaw / pitch, gaze yaw / pitch and eye-in-head yaw / pitch (NaN = no face /
    unknown) of the largest face. ``model``: an ONNX 3DMM (its head pose, the face mesh's iris),
    None = the face mesh alone; ``flip_average``, ``landmark_crop_scale``: those Settings of the 3DMM."""
    import cv2

    from app.core.gaze import blendshape_eye_angles
    from app.core.types import Frame
    from app.pipeline import Pipeline
    from app.settings import MESH_MODEL, Settings

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    pipe = Pipeline(Settings(model=model or MESH_MODEL, monitor=None, smoothing=smoothing, flip_average=flip_average,
                             landmark_crop_scale=landmark_crop_scale))
    rows, extra = [], []
    i = 0
    try:
        while True:
            ok, img = cap.read()
            if not ok:
                break
            obs = pipe.process(Frame(img, i / fps, i)).observations
            o = max(obs, key=lambda f: f.area) if obs else None
            g = o.gaze if o is not None else None
            rows.append((o.yaw if o else math.nan, o.pitch if o else math.nan,
                         g.yaw if g else math.nan, g.pitch if g else math.nan,
                         g.eye_yaw if g else math.nan, g.eye_pitch if g else math.nan))
            nan2 = (math.nan, math.nan)
            extra.append((np.asarray(o.rotation, float) if o is not None and o.rotation is not None
                          else np.full((3, 3), np.nan),
                          tuple(o.eye_open) if o is not None else nan2,
                          g.eyes if g is not None else np.full((2, 2), np.nan),
                          blendshape_eye_angles(o.blendshapes if o is not None else None, 1.0, 1.0,
                                                tuple(o.eye_open) if o is not None else nan2,
                                                o.yaw if o is not None else math.nan)))
            i += 1
    finally:
        cap.release()
        pipe.close()
    a = np.array(rows, dtype=float).reshape(-1, 6)
    n = len(a)
    return {"fps": fps, "head_yaw": a[:, 0], "head_pitch": a[:, 1], "gaze_yaw": a[:, 2], "gaze_pitch": a[:, 3],
            "eye_yaw": a[:, 4], "eye_pitch": a[:, 5],
            # for the blendshape sources: the (smoothed) head rotation, the openness, the iris
            # source's per-eye [yaw, pitch] (smoothed, as the pipeline gives them) and the eyeLook*
            # signals per eye (blendshape_eye_angles with unit gains: NaN = eye not used)
            "rotation": np.array([e[0] for e in extra]).reshape(n, 3, 3),
            "eye_open": np.array([e[1] for e in extra], dtype=float).reshape(n, 2),
            "iris_eyes": np.array([e[2] for e in extra], dtype=float).reshape(n, 2, 2),
            "look": np.array([e[3] for e in extra], dtype=float).reshape(n, 2, 2)}


def fixation_gains(series: dict, labels: dict) -> dict:
    """Gains (degrees per unit of eyeLook* signal) by fixation on the ``on`` frames of the given
    clips: per clip, the head angle and the mean signal of the measured eyes as offsets from
    their medians, pooled; gain = -1 / slope (the eyes counter-rotate the head one to one)."""
    out = {}
    for k, axis in enumerate(("yaw", "pitch")):
        pairs = []
        for name, s in series.items():
            on = frames_idx(labels[name]["on"])
            h = s[f"head_{axis}"][on]
            with np.errstate(invalid="ignore"):
                look = s["look"][on, :, k]
                cnt = np.isfinite(look).sum(axis=1)
                sig = np.where(cnt > 0, np.nansum(look, axis=1) / np.maximum(cnt, 1), np.nan)
            ok = np.isfinite(h) & np.isfinite(sig)
            if ok.sum() >= 2:
                pairs.append(np.stack([h[ok] - np.median(h[ok]), sig[ok] - np.median(sig[ok])], axis=1))
        a = np.vstack(pairs)
        slope = float(np.polyfit(a[:, 0], a[:, 1], 1)[0])
        out[axis] = -1.0 / slope
        out[f"{axis}_slope"] = slope
        out[f"{axis}_frames"] = int(len(a))
    out["clips"] = sorted(series)
    return out


def blendshape_series(series: dict, gains: dict, smoothing=None, iris_pitch: bool = False) -> dict:
    """The clip's series with the gaze from the eyeLook* blendshapes instead of the iris: per-eye
    angles = gains x signals, One Euro smoothed like the pipeline's per-eye angles when
    ``smoothing`` (an app.settings.Settings) is given (restarted after a frame without a face),
    turned into the camera frame with the same head rotation (app.core.gaze.gaze_from_angles).
    ``iris_pitch``: the yaw from the blendshapes, the pitch from the iris source (an eye is used
    when both are measured)."""
    from app.core.gaze import gaze_from_angles
    from app.smoothing import OneEuroFilter

    n = len(series["head_yaw"])
    k = np.array([gains["yaw"], gains["pitch"]])
    filt = (OneEuroFilter(smoothing.smooth_min_cutoff, smoothing.smooth_beta, smoothing.smooth_d_cutoff)
            if smoothing is not None else None)
    out = np.full((n, 4), np.nan)
    for i in range(n):
        R = series["rotation"][i]
        if not np.all(np.isfinite(R)):
            if filt is not None:
                filt.reset()
            continue
        ang = series["look"][i] * k
        if filt is not None:
            ang = filt(ang, i / series["fps"])
        if iris_pitch:
            ang = np.stack([ang[:, 0], series["iris_eyes"][i, :, 1]], axis=1)
            ang[~np.isfinite(ang).all(axis=1)] = np.nan
        g = gaze_from_angles(ang, R)
        out[i] = (g.yaw, g.pitch, g.eye_yaw, g.eye_pitch)
    return {**series, "gaze_yaw": out[:, 0], "gaze_pitch": out[:, 1], "eye_yaw": out[:, 2], "eye_pitch": out[:, 3]}


def _direction(yaw, pitch) -> np.ndarray:
    y, p = np.radians(yaw), np.radians(pitch)
    return np.stack([-np.sin(y), np.sin(p) * np.cos(y), np.cos(p) * np.cos(y)], axis=-1)


def score_clip(series: dict, labels: dict, settings) -> dict:
    """The accuracy numbers of one clip (see the module docstring)."""
    from app.monitor.states import off_road

    s = settings
    n = len(series["gaze_yaw"])
    neu = frames_idx(labels["neutral"])
    hy0 = float(np.nanmedian(series["head_yaw"][neu]))
    hp0 = float(np.nanmedian(series["head_pitch"][neu]))
    gy0 = float(np.nanmedian(series["gaze_yaw"][neu]))
    gp0 = float(np.nanmedian(series["gaze_pitch"][neu]))

    def verdicts(yaw, pitch, y0, p0, ylim, plim):
        out = np.full(n, -1, int)          # -1 unknown, 0 on the road, 1 off
        for i in range(n):
            if math.isfinite(yaw[i]) and math.isfinite(pitch[i]):
                out[i] = int(off_road(yaw[i] - y0, s.pitch_down_sign * (pitch[i] - p0), ylim, plim))
        return out

    gv = verdicts(series["gaze_yaw"], series["gaze_pitch"], gy0, gp0, s.gaze_yaw, s.gaze_pitch)
    hv = verdicts(series["head_yaw"], series["head_pitch"], hy0, hp0, s.alert_yaw, s.alert_pitch)
    on, away = frames_idx(labels["on"]), frames_idx(labels["away"])
    lab = np.concatenate([on, away])
    truth = np.concatenate([np.zeros(len(on), int), np.ones(len(away), int)])
    known = gv[lab] >= 0
    agree = int(np.sum(gv[lab][known] == truth[known]))

    hits = misses = 0
    for a, b in labels["away"]:
        v = gv[a:b + 1]
        v = v[v >= 0]
        if len(v) and np.sum(v == 1) >= 0.5 * len(v):
            hits += 1
        else:
            misses += 1
    false_glances = 0
    for a, b in labels["on"]:
        run = 0
        for x in list(gv[a:b + 1]) + [0]:
            if x == 1:
                run += 1
            else:
                false_glances += run >= 3
                run = 0

    turned = frames_idx(labels.get("head_turned_eyes_on", []))
    tv = gv[turned]
    noise = {}
    if len(on):
        y, p = series["gaze_yaw"][on], series["gaze_pitch"][on]
        ok = np.isfinite(y) & np.isfinite(p)
        if ok.sum() >= 2:
            d = _direction(y[ok], p[ok])
            m = _direction(np.median(y[ok]), np.median(p[ok]))
            ang = np.degrees(np.arccos(np.clip(d @ m, -1.0, 1.0)))
            noise = {"yaw_std": float(np.std(y[ok])), "pitch_std": float(np.std(p[ok])),
                     "angle_p95": float(np.percentile(ang, 95)), "frames": int(ok.sum())}
    return {
        "frames": n,
        "labelled": int(len(lab)), "measured": int(known.sum()), "agree": agree,
        "agreement": agree / known.sum() if known.sum() else math.nan,
        "on_frames": int(len(on)), "on_off_road": int(np.sum(gv[on] == 1)),
        "away_frames": int(len(away)), "away_off_road": int(np.sum(gv[away] == 1)),
        "away_by_head": int(np.sum(hv[away] == 1)),
        "glances": len(labels["away"]), "hits": hits, "misses": misses, "false_glances": false_glances,
        "turned_frames": int(len(turned)), "turned_on_road": int(np.sum(tv == 0)),
        "turned_max_head_yaw_offset": (float(np.nanmax(np.abs(series["head_yaw"][turned] - hy0)))
                                       if len(turned) else math.nan),
        "noise": noise,
        "neutral": {"head_yaw": hy0, "head_pitch": hp0, "gaze_yaw": gy0, "gaze_pitch": gp0},
    }


SOURCES = ("iris", "blendshape", "mixed")


def evaluate(labels_path: Path = LABELS, clips_dir: Path = CLIPS, settings=None, smoothing: bool = True,
             model: str | None = None, sources=SOURCES, holdout: bool = False, series=None,
             flip_average: bool = False, landmark_crop_scale: float = 1.0) -> dict:
    """{source: {clip: score_clip(...)}} for each of ``sources``, plus ``gains`` (the blendshape
    gains: ``all`` fitted on every clip, and per clip the ones it was scored with). ``series``:
    {clip: run_clip(...)} already computed (else run here)."""
    from app.monitor.settings import MonitorSettings
    from app.settings import Settings

    settings = settings or MonitorSettings()
    clips = json.loads(Path(labels_path).read_text())["clips"]
    if series is None:
        series = {name: run_clip(Path(clips_dir) / name, smoothing, model, flip_average, landmark_crop_scale)
                  for name in clips}
    res: dict = {}
    if "iris" in sources:
        res["iris"] = {name: score_clip(series[name], lab, settings) for name, lab in clips.items()}
    bs_sources = [src for src in ("blendshape", "mixed") if src in sources]
    if bs_sources:
        gains = {"all": fixation_gains(series, clips), "holdout": holdout}
        smooth = Settings() if smoothing else None
        for src in bs_sources:
            res[src] = {}
        for name, lab in clips.items():
            g = (fixation_gains({k: v for k, v in series.items() if k != name}, clips) if holdout
                 else gains["all"])
            gains[name] = g
            for src in bs_sources:
                ser = blendshape_series(series[name], g, smooth, iris_pitch=src == "mixed")
                res[src][name] = score_clip(ser, lab, settings)
        res["gains"] = gains
    return res


def format_table(res: dict) -> str:
    """One block per source (the output of evaluate)."""
    out = []
    for src in SOURCES:
        if src not in res:
            continue
        title = f"source: {src}"
        if src == "mixed":
            title += " (yaw from the blendshapes, pitch from the iris;"
        elif src == "blendshape":
            title += " ("
        if src in ("blendshape", "mixed"):
            g = res["gains"]
            if g["holdout"]:
                per = ", ".join(f"{k.replace('expressions_', '').replace('.mp4', '')} {v['yaw']:.1f} / "
                                f"{v['pitch']:.1f}" for k, v in g.items() if k not in ("all", "holdout"))
                title += f" gains yaw / pitch deg per unit by fixation on the other clips: {per})"
            else:
                a = g["all"]
                title += (f" gains by fixation on all clips' on frames: yaw {a['yaw']:.1f}, pitch "
                          f"{a['pitch']:.1f} deg per unit; slopes {a['yaw_slope']:.4f} / {a['pitch_slope']:.4f} "
                          f"over {a['yaw_frames']} / {a['pitch_frames']} frames)")
        out += [title.replace("( ", "("), _clip_table(res[src]), ""]
    return "\n".join(out).rstrip()


def _clip_table(res: dict) -> str:
    head = (f"{'clip':<20} {'agree':>12} {'unknown':>8} {'glances hit/miss':>17} {'false':>6} "
            f"{'head rule':>10} {'turned on-road':>15} {'noise yaw/pitch sd, p95 angle':>31}")
    lines = [head]
    for name, r in res.items():
        nz = r["noise"]
        noise = (f"{nz['yaw_std']:.1f} / {nz['pitch_std']:.1f}, {nz['angle_p95']:.1f}" if nz else "-")
        turned = (f"{r['turned_on_road']}/{r['turned_frames']} (<= {r['turned_max_head_yaw_offset']:.0f} deg)"
                  if r["turned_frames"] else "-")
        lines.append(
            f"{name:<20} {r['agree']:>4}/{r['measured']:<4} {r['agreement'] * 100:>3.0f}% "
            f"{r['labelled'] - r['measured']:>7} {r['hits']:>8}/{r['misses']:<8} {r['false_glances']:>6} "
            f"{(str(r['away_by_head']) + '/' + str(r['away_frames'])) if r['away_frames'] else '-':>10} "
            f"{turned:>15} {noise:>31}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.eval.gaze_eval", description=__doc__.split("\n")[0])
    p.add_argument("--labels", default=str(LABELS), help="labels file (default %(default)s)")
    p.add_argument("--clips", default=str(CLIPS), help="folder of the labelled clips (default %(default)s)")
    p.add_argument("--no-smoothing", action="store_true", help="measure the unsmoothed gaze")
    p.add_argument("--model", metavar="M.onnx", help="a 3DMM model for the head pose (default: the face mesh's own)")
    p.add_argument("--flip-average", action="store_true",
                   help="with --model: the 3DMM averaged with its mirror image (Settings.flip_average)")
    p.add_argument("--landmark-crop-scale", type=float, default=1.0,
                   help="with --model: Settings.landmark_crop_scale (default 1)")
    p.add_argument("--source", choices=("both",) + SOURCES, default="both",
                   help="eye-in-head source(s) to score (default %(default)s)")
    p.add_argument("--holdout", action="store_true",
                   help="blendshape gains fitted on the other clips for each clip (default: on all clips)")
    p.add_argument("--json", metavar="OUT.json", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    checks = [(Path(args.labels), "labels file"), (Path(args.clips), "clips folder")]
    if args.model:
        checks.append((Path(args.model), "model"))
    for path, what in checks:
        if not path.exists():
            print(f"error: {what} {path} not found (give --labels / --clips)", file=sys.stderr)
            return 2
    sources = SOURCES if args.source == "both" else (args.source,)
    try:
        res = evaluate(Path(args.labels), Path(args.clips), smoothing=not args.no_smoothing, model=args.model,
                       sources=sources, holdout=args.holdout, flip_average=args.flip_average,
                       landmark_crop_scale=args.landmark_crop_scale)
    except FileNotFoundError as e:
        print(f"error: {e} (a clip of {args.labels} is missing from --clips)", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
