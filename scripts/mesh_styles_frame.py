"""One frame of a clip with the mesh in several styles, side by side (docs/shaded_vs_wire.png).

    python scripts/mesh_styles_frame.py --video ../shared/media/clips/expressions_d13.mp4 --frame 150 \
        --panel wire:/tmp/3ddfa_v2_full.onnx --panel wire:/tmp/3ddfa_v2_noneck.onnx \
        --panel shaded:/tmp/3ddfa_v2_noneck.onnx --out docs/shaded_vs_wire.png

Each ``--panel STYLE:MODEL.onnx`` runs the real pipeline (smoothing on, as in the app) over the
first FRAME + 1 frames with that model and draws only the mesh layer in that style; the panels
are cropped around the face (the same crop for all) and labelled. The PNG is written to a
temporary file and renamed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.core.types import Frame  # noqa: E402
from app.pipeline import Pipeline  # noqa: E402
from app.render import MESH_STYLES, Layers, annotate  # noqa: E402
from app.settings import Settings  # noqa: E402


def frame_and_faces(video: str, index: int, model: str):
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise SystemExit(f"error: cannot open {video}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    pipe = Pipeline(Settings(model=model, monitor=None))
    try:
        for i in range(index + 1):
            ok, img = cap.read()
            if not ok:
                raise SystemExit(f"error: {video} has only {i} frames (asked for frame {index})")
            obs = pipe.process(Frame(img, i / fps, i)).observations
    finally:
        pipe.close()
        cap.release()
    return img, obs, pipe.model_name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/mesh_styles_frame.py")
    ap.add_argument("--video", required=True)
    ap.add_argument("--frame", type=int, default=150)
    ap.add_argument("--panel", action="append", required=True, metavar="STYLE:MODEL.onnx")
    ap.add_argument("--out", required=True)
    ap.add_argument("--height", type=int, default=640, help="panel height in pixels (default %(default)s)")
    args = ap.parse_args(argv)
    panels, box = [], None
    for spec in args.panel:
        style, _, model = spec.partition(":")
        if style not in MESH_STYLES or not Path(model).is_file():
            print(f"error: --panel {spec!r}: want STYLE:MODEL.onnx with STYLE one of "
                  f"{', '.join(MESH_STYLES)} and an existing model file", file=sys.stderr)
            return 2
        img, obs, name = frame_and_faces(args.video, args.frame, model)
        if not obs:
            print(f"error: no face in frame {args.frame} of {args.video}", file=sys.stderr)
            return 2
        lay = Layers(**{n: False for n in Layers.NAMES}, mesh_style=style)
        lay.mesh = True
        out = annotate(img, obs, layers=lay)
        if box is None:                      # one crop for every panel: the first face's box, padded
            b = obs[0].box
            s = max(b[2] - b[0], b[3] - b[1])
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2 - 0.12 * s
            half = 0.85 * s
            box = [int(max(0, cx - half)), int(max(0, cy - 1.15 * half)),
                   int(min(img.shape[1], cx + half)), int(min(img.shape[0], cy + 1.15 * half))]
        crop = out[box[1]:box[3], box[0]:box[2]]
        k = args.height / crop.shape[0]
        crop = cv2.resize(crop, (round(crop.shape[1] * k), args.height), interpolation=cv2.INTER_AREA)
        n_v = len(obs[0].vertices) if obs[0].vertices is not None else 0
        label = f"{style}, {name} ({n_v} vertices)"
        for col, th in (((0, 0, 0), 4), ((255, 255, 255), 1)):
            cv2.putText(crop, label, (10, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.7, col, th, cv2.LINE_AA)
        panels.append(crop)
    sheet = np.hstack([np.pad(p, ((0, 0), (0, 4), (0, 0))) for p in panels])[:, :-4]
    ok, buf = cv2.imencode(".png", sheet)
    tmp = args.out + ".partial"
    with open(tmp, "wb") as f:
        f.write(buf.tobytes())
    os.replace(tmp, args.out)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
