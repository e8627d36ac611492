"""``report.html`` for a batch folder: the drives table (worst first, sortable) and a page per
drive (``report/<drive id>.html``) with its timeline plots and the annotated frames of its alerts.

Pages come from the jinja2 templates in app/batch/templates/, figures from matplotlib (PNG files
in ``report/<drive id>/``), the alert frames are the JPEG files each drive wrote (``alerts/``).
Every link is relative and nothing is fetched: the folder opens by double-click, offline, and can
be copied elsewhere whole. Every file is written to a temp name and renamed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from app.batch.drive import FRAMES, read_frames, read_summary
from app.batch.inputs import meta_columns

REPORT = "report.html"
REPORT_DIR = "report"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# alert kinds' colours in the plots and the tables
KIND_COLOURS = {"looking_around": "#e6550d", "time_sharing": "#fdae6b", "eyes_closed": "#3182bd",
                "drowsy": "#756bb1", "yawning": "#31a354", "nodding": "#a1d99b", "no_driver": "#636363"}


# the drives.parquet fields the index shows (a failed drive has none of them)
ROW_FIELDS = ("duration_s", "face_rate", "alerts_total", "alert_s", "head_off_road_s", "eyes_off_road_s",
              "perclos_max", "blinks_per_min", "error")


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, d=1: "" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
    return env


def _replace_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _spans(t: np.ndarray, on: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous runs of ``on`` as (start, end) times."""
    out, start = [], None
    for i, v in enumerate(on):
        if v and start is None:
            start = t[i]
        elif not v and start is not None:
            out.append((start, t[i]))
            start = None
    if start is not None:
        out.append((start, t[-1]))
    return out


def _frame_series(folder: Path):
    """One row per frame (the driver's, else the frame's only row) of frames.parquet as numpy."""
    cols = ["frame", "t", "driver", "face", "yaw", "pitch", "gaze_yaw", "gaze_pitch", "yaw_offset", "pitch_offset", "gaze_yaw_offset", "gaze_pitch_offset",
            "eye_open_rel", "eye_open_left", "eye_open_right", "perclos", "mouth_open", "alerts"]
    tb = read_frames(folder / FRAMES, columns=cols)
    d = tb.to_pydict()
    keep = {}
    for i, fr in enumerate(d["frame"]):
        if fr not in keep or d["driver"][i]:
            keep[fr] = i
    idx = [keep[k] for k in sorted(keep)]

    def arr(c):
        return np.array([np.nan if d[c][i] is None else d[c][i] for i in idx], dtype=np.float64)

    return {c: arr(c) for c in cols if c not in ("alerts", "driver", "face")} | {
        "alerts": [d["alerts"][i] or [] for i in idx]}


def timeline_png(folder: Path, summary: dict, path: Path) -> None:
    """The drive's timeline: head and gaze offsets, eye openness, PERCLOS, mouth, with the alert
    spans shaded and the thresholds drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = _frame_series(folder)
    t = s["t"] - (s["t"][0] if len(s["t"]) else 0.0)
    mon = (summary.get("settings") or {}).get("monitor") or {}
    fig, axes = plt.subplots(5, 1, figsize=(11, 9), sharex=True, constrained_layout=True)
    # head and gaze: the angles (thin) and their offsets from the driver's neutral (thick), which
    # the thresholds apply to (unknown until the monitor has calibrated)
    panels = [
        ("head (°)", [("yaw", "yaw"), ("pitch", "pitch"), ("yaw_offset", "yaw offset"), ("pitch_offset", "pitch offset")],
         [(mon.get("alert_yaw"), "yaw ±"), (-mon["alert_pitch"] if mon.get("alert_pitch") else None, "pitch down")]),
        ("gaze (°)", [("gaze_yaw", "yaw"), ("gaze_pitch", "pitch"), ("gaze_yaw_offset", "yaw offset"),
                      ("gaze_pitch_offset", "pitch offset")],
         [(mon.get("gaze_yaw"), "yaw ±"), (-mon["gaze_pitch"] if mon.get("gaze_pitch") else None, "pitch down")]),
        ("eye openness", [("eye_open_rel", "relative to baseline")], [(mon.get("eye_closed_ratio"), "closed")]),
        ("PERCLOS", [("perclos", "PERCLOS")], [(mon.get("perclos_threshold"), "drowsy")]),
        ("mouth openness", [("mouth_open", "mouth")], [(mon.get("mouth_threshold"), "yawn")]),
    ]
    kinds_seen = set()
    for ax, (title, series, thresholds) in zip(axes, panels):
        for col, label in series:
            ax.plot(t, s[col], lw=1.4 if "offset" in col else 0.7, alpha=1.0 if "offset" in col else 0.6,
                    label=label)
        if all(np.isnan(s[col]).all() for col, _ in series):
            ax.text(0.5, 0.5, "unknown on every frame (not measured in this drive)", transform=ax.transAxes,
                    ha="center", va="center", color="#777")
        for val, label in thresholds:
            if val is None:
                continue
            ax.axhline(val, color="r", ls="--", lw=0.8, label=f"threshold {label}")
            if label == "yaw ±":
                ax.axhline(-val, color="r", ls="--", lw=0.8)
        for kind, colour in KIND_COLOURS.items():
            on = np.array([kind in a for a in s["alerts"]])
            for a, b in _spans(t, on):
                ax.axvspan(a, b, color=colour, alpha=0.25, lw=0, label=kind if kind not in kinds_seen else None)
                kinds_seen.add(kind)
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=7, ncol=4)
    axes[-1].set_xlabel("drive time (s)")
    fig.suptitle(f"{summary['drive_id']}: alert spans shaded, thresholds dashed", fontsize=10)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def fleet_png(rows: list[dict], path: Path) -> None:
    """Alerts per drive by kind (stacked bars), worst first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.2), constrained_layout=True)
    names = [r["drive_id"] for r in rows]
    bottom = np.zeros(len(rows))
    for kind, colour in KIND_COLOURS.items():
        v = np.array([float(r.get(f"alerts_{kind}") or 0) for r in rows])
        if v.any():
            ax.bar(names, v, bottom=bottom, color=colour, label=kind)
            bottom += v
    ax.set_ylabel("alerts")
    ax.set_title("alerts per drive (worst first)", fontsize=10)
    if bottom.any():
        ax.legend(fontsize=7, ncol=4)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)


def _worst_key(r: dict):
    # failed drives first (someone must look), then by time in alerts, then by alert count
    return (r.get("status") != "failed", -(r.get("alert_s") or 0.0), -(r.get("alerts_total") or 0))


def write_report(out: Path, drives, rows: dict) -> Path:
    """report.html + report/<drive id>.html (+ figures) for the drives that have a row."""
    env = _env()
    rdir = out / REPORT_DIR
    rdir.mkdir(exist_ok=True)
    meta_cols = meta_columns(drives)
    table = []
    for d in drives:
        r = rows.get(d.drive_id)
        if r is None:
            continue
        rec = {k: None for k in ROW_FIELDS} | dict(r, meta=d.meta, page=None)
        summary: Optional[dict] = read_summary(out / d.drive_id) if r.get("status") in ("ok", "skipped") else None
        if summary is not None:
            fig_dir = rdir / d.drive_id
            fig_dir.mkdir(exist_ok=True)
            timeline_png(out / d.drive_id, summary, fig_dir / "timeline.png")
            page = rdir / f"{d.drive_id}.html"
            _replace_write(page, env.get_template("drive.html").render(
                s=summary, row=r, timeline=f"{d.drive_id}/timeline.png", drive_dir=f"../{d.drive_id}",
                colours=KIND_COLOURS, settings_json=json.dumps(summary.get("settings"), indent=1)))
            rec["page"] = f"{REPORT_DIR}/{d.drive_id}.html"
        table.append(rec)
    table.sort(key=_worst_key)
    fleet = None
    if any(r.get("status") in ("ok", "skipped") for r in table):
        fleet_png([r for r in table if r.get("status") in ("ok", "skipped")], rdir / "fleet.png")
        fleet = f"{REPORT_DIR}/fleet.png"
    n = {k: sum(r.get("status") == k for r in table) for k in ("ok", "skipped", "failed")}
    hours = sum(float(r.get("duration_s") or 0.0) for r in table) / 3600.0
    path = out / REPORT
    _replace_write(path, env.get_template("index.html").render(
        rows=table, meta_cols=meta_cols, counts=n, hours=hours, fleet=fleet, colours=KIND_COLOURS,
        total=len(list(drives))))
    return path
