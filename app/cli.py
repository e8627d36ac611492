"""Command line: ``build_parser()`` and ``settings_from_args(args) -> Settings``.

main.py (headless and GUI), ``python -m app.gui`` and ``python -m app.bench`` share this parser.
Every pipeline setting of app/settings.py is a flag; the driver-monitoring flags come from
app.monitor.add_monitor_args when that package is installed.
"""
from __future__ import annotations

import argparse
import sys

from app.settings import Settings

DESCRIPTION = "Real-time 3D face analysis and driver monitoring."


def _monitor_module():
    try:
        import app.monitor as mon
    except ImportError:
        return None
    return mon if hasattr(mon, "add_monitor_args") else None


def build_parser(prog: str = "main.py") -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    src = p.add_argument_group("input (one of)")
    src.add_argument("--video", metavar="FILE", help="video file (or an image: a one-frame clip)")
    src.add_argument("--camera", metavar="N", type=int, help="camera index (0 = first camera)")
    src.add_argument("--loop", action="store_true", help="restart the video at its end (until Ctrl-C)")

    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="M.onnx|mesh", default=d.model,
                   help='3DMM model following the export contract, or "mesh" for the built-in mediapipe '
                        'face mesh (default: the first models/*.onnx, else the face mesh)')
    m.add_argument("--device", choices=("auto", "cuda", "cpu"), default=d.device,
                   help="onnxruntime device: auto = CUDA if it starts, else CPU (default %(default)s)")
    m.add_argument("--threads", type=int, default=d.threads, metavar="N",
                   help="onnxruntime intra-op threads, 0 = its default (default %(default)s)")

    t = p.add_argument_group("detection and tracking")
    t.add_argument("--detect-every", type=int, default=d.detect_every, metavar="K",
                   help="run the face detector every K frames and when a face is lost (default %(default)s)")
    t.add_argument("--detector", choices=("short", "full"), default=d.detector,
                   help="BlazeFace short range (< 2 m) or full range (< 5 m) (default %(default)s)")
    t.add_argument("--min-detection-confidence", type=float, default=d.min_detection_confidence, metavar="P",
                   help="detector score threshold (default %(default)s)")
    t.add_argument("--max-faces", type=int, default=d.max_faces, metavar="N",
                   help="most faces per frame, largest-score first (default %(default)s)")
    t.add_argument("--no-eyes", action="store_true",
                   help="3DMM mode: skip the face mesh per face (eye / mouth openness unknown)")

    s = p.add_argument_group("smoothing (One Euro filter)")
    s.add_argument("--no-smoothing", action="store_true", help="raw per-frame outputs")
    s.add_argument("--smooth-min-cutoff", type=float, default=d.smooth_min_cutoff, metavar="HZ",
                   help="cutoff at rest (default %(default)s)")
    s.add_argument("--smooth-beta", type=float, default=d.smooth_beta, metavar="B",
                   help="speed coefficient: higher = less lag when moving (default %(default)s)")

    o = p.add_argument_group("output")
    o.add_argument("--headless", action="store_true", help="no window: process, record, dump, print progress")
    o.add_argument("--record", metavar="OUT.mp4", help="write the annotated video (H.264)")
    o.add_argument("--dump", metavar="OUT.jsonl", help="one JSON line per frame with every face")
    o.add_argument("--events", metavar="OUT.jsonl", help="driver-monitoring events (JSON lines)")
    o.add_argument("--sound", action="store_true", help="play the alert sound on new alerts")
    o.add_argument("--layers", metavar="SPEC", default="all",
                   help='overlays: "all", "none", a list "box,landmarks,mesh,axes,text,fps,model,monitor", '
                        'or changes "-mesh,+axes"; mesh style "shaded" (default), "wire" or "points" '
                        '(default %(default)s)')
    o.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    o.add_argument("--quiet", action="store_true", help="no progress lines (the summary is still printed)")

    mon = _monitor_module()
    if mon is not None:
        p.add_argument("--no-monitor", action="store_true", help="turn driver monitoring off")
        mon.add_monitor_args(p)
    return p


def _fail(msg: str, prog: str = "main.py") -> None:
    print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(2)


def settings_from_args(args) -> Settings:
    """Settings from parsed flags; a bad value prints one line and exits 2."""
    from app.render import Layers

    try:
        layers = Layers.from_spec(args.layers) if getattr(args, "layers", None) else Layers()
    except ValueError as e:
        _fail(f"--layers: {e}")
    monitor = None
    mon = _monitor_module()
    if mon is not None and not getattr(args, "no_monitor", False):
        monitor = mon.settings_from_args(args)   # exits 2 itself on a bad threshold
    st = Settings(
        model=args.model, device=args.device, threads=args.threads,
        detect_every=args.detect_every, detector=args.detector,
        min_detection_confidence=args.min_detection_confidence, max_faces=args.max_faces,
        eyes_from_mesh=not args.no_eyes, smoothing=not args.no_smoothing,
        smooth_min_cutoff=args.smooth_min_cutoff, smooth_beta=args.smooth_beta,
        layers=layers, monitor=monitor)
    try:
        st.validate()
    except ValueError as e:
        _fail(str(e))
    return st
