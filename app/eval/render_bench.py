"""Mesh drawing cost at 1280x720: ``python -m app.eval.render_bench [--bfm DIR] [--repeat N]``.

Draws the BFM mean face (350 px tall) in each mesh style of ``app.render`` on the full and the
neck-less mesh, and the alternatives that were not chosen (one polylines call over every edge /
every 8th edge), and prints the median time of each (docs/benchmarks.md section 6).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import scipy.io as sio

from app.core.types import FaceObservation, MonitorState
from app.render import C_MESH, MESH_STYLES, Layers, _clip_int, _unique_edges, annotate, mesh_edges, shaded_layer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.eval.render_bench")
    ap.add_argument("--bfm", default=None, help="folder with u_shp.npy, u_exp.npy, tri.mat "
                                                 "(default ../shared/bfm/3dmm_data)")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    bfm = Path(args.bfm) if args.bfm else Path(__file__).resolve().parents[3] / "shared" / "bfm" / "3dmm_data"
    if not (bfm / "tri.mat").exists():
        print(f"error: BFM not found in {bfm} (pass --bfm DIR with u_shp.npy, u_exp.npy, tri.mat)",
              file=sys.stderr)
        return 2
    u = (np.load(bfm / "u_shp.npy") + np.load(bfm / "u_exp.npy")).reshape(-1, 3)
    tri = sio.loadmat(str(bfm / "tri.mat"))["tri"].T.astype(np.int32) - 1
    v = u.astype(np.float64)
    v[:, 1] *= -1
    v -= v.mean(0)
    v *= 350.0 / np.ptp(v[:, 1])
    v[:, 0] += 640
    v[:, 1] += 360
    v = v.astype(np.float32)
    base = np.full((720, 1280, 3), 80, np.uint8)
    obs = FaceObservation(box=np.array([640 - 180, 360 - 180, 640 + 180, 360 + 180], float),
                          landmarks=np.full((68, 3), np.nan, np.float32), model="bench",
                          vertices=v, triangles=tri)
    t = time.perf_counter()
    mesh_edges(tri, v)
    print(f"edge list (once per mesh): {(time.perf_counter() - t) * 1e3:.1f} ms")
    # the alternatives that were not chosen, for the record
    all_e = _unique_edges(tri.astype(np.int64))
    for name, e in (("every edge", all_e), ("every 8th edge", all_e[::8])):
        ts = []
        for _ in range(max(3, args.repeat // 5)):
            img = base.copy()
            t = time.perf_counter()
            cv2.polylines(img, _clip_int(v[:, :2][e]), False, C_MESH, 1, cv2.LINE_8)
            ts.append(time.perf_counter() - t)
        print(f"(not used) one polylines call, {name} ({len(e)} edges): median {np.median(ts) * 1e3:.2f} ms")
    meshes = [("full BFM", obs)]
    noneck = bfm.parent / "noneck"
    if (noneck / "indices.npy").exists():
        keep = np.load(noneck / "indices.npy")
        meshes.append(("neck-less BFM", FaceObservation(
            box=obs.box, landmarks=obs.landmarks, model="bench", vertices=np.ascontiguousarray(v[keep]),
            triangles=np.ascontiguousarray(np.load(noneck / "tri.npy").T.astype(np.int32)))))
    for mesh_name, o in meshes:
        for style in MESH_STYLES:
            lay = Layers(box=False, landmarks=False, axes=False, text=False, fps=False, model=False,
                         monitor=False, mesh_style=style)
            t = time.perf_counter()
            annotate(base, [o], layers=lay)
            first = time.perf_counter() - t
            ts = []
            for _ in range(args.repeat):
                img = base.copy()
                t = time.perf_counter()
                annotate(img, [o], layers=lay, inplace=True)
                ts.append(time.perf_counter() - t)
            extra = ""
            if style == "shaded":
                sl = shaded_layer(o.vertices, o.triangles, base.shape)
                extra = f", grid cell {sl.cell:.2f} px, {sl.holes:.0%} of the cells filled (first call {first * 1e3:.0f} ms)"
            print(f"mesh {style:<6} {mesh_name} ({len(o.vertices)} vertices, {len(o.triangles)} triangles), "
                  f"1280x720: median {np.median(ts) * 1e3:.2f} ms, min {np.min(ts) * 1e3:.2f} ms{extra}")
    img = base.copy()
    ts = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        annotate(base, [obs], state=MonitorState(signals={"yaw_offset": 10, "perclos": 0.1}),
                 info={"fps": 25, "model": "bench"})
        ts.append(time.perf_counter() - t)
    print(f"all layers (copy + mesh {Layers().mesh_style} + HUD): median {np.median(ts) * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
