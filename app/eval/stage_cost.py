"""Cost of the 3DMM stage per face: ``python -m app.eval.stage_cost [--image IMG] [--model M.onnx]
[--threads 1] [--rounds 10] [--calls 50]``.

Times ``Model3DMM.estimate`` (the whole stage the pipeline runs: crop, one onnxruntime run, flip
merge, mapping to the image) on one face of a real image, single pass against
``--flip-average`` (the crop and its mirror image in one run), and the two-pass landmark policy
(a second estimate on the crop from the first one's landmarks). The variants alternate in rounds
so that they share the machine's load; each row is the median over all calls of the process CPU
time (all threads; steadier than wall time on a shared machine) and of the wall time, per face.
Prints the 1-minute load average before and after.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv=None) -> int:
    import cv2

    from app import assets
    from app.core import geometry
    from app.core.types import Crop
    from app.detect import FaceDetector
    from app.model3dmm import Model3DMM

    ap = argparse.ArgumentParser(prog="python -m app.eval.stage_cost", description=__doc__.split("\n")[0])
    ap.add_argument("--image", default=str(ROOT.parent / "shared" / "media" / "portrait_glasses.jpg"))
    ap.add_argument("--model", default=str(assets.DEFAULT_3DMM))
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (the live default, 1)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--calls", type=int, default=50, help="calls per variant per round")
    a = ap.parse_args(argv)
    img = cv2.imread(a.image)
    if img is None:
        print(f"stage_cost: error: cannot read image {a.image}; give --image", file=sys.stderr)
        return 2
    dets = FaceDetector()(img, 1)
    if not dets:
        print(f"stage_cost: error: no face found in {a.image}; give --image with a face", file=sys.stderr)
        return 2
    crops = [Crop(geometry.roi_box_from_bbox(dets[0].box), None)]
    single = Model3DMM(a.model, "cpu", a.threads)
    flip = Model3DMM(a.model, "cpu", a.threads, flip_average=True)

    def two_pass():
        (e,), _ = single.estimate(img, crops)
        single.estimate(img, [Crop(geometry.roi_box_from_landmarks(e.landmarks), None)])

    variants = {"single pass": lambda: single.estimate(img, crops),
                "flip average (batch 2)": lambda: flip.estimate(img, crops),
                "landmark two-pass": two_pass}
    cpu = {k: [] for k in variants}
    wall = {k: [] for k in variants}
    load0 = os.getloadavg()[0]
    for fn in variants.values():
        for _ in range(5):
            fn()
    for _ in range(a.rounds):
        for k, fn in variants.items():
            for _ in range(a.calls):
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                cpu[k].append((time.process_time() - c0) * 1e3)
                wall[k].append((time.perf_counter() - t0) * 1e3)
    load1 = os.getloadavg()[0]
    base = statistics.median(cpu["single pass"])
    print(f"3DMM stage per face, {Path(a.model).name}, {a.threads} onnxruntime thread(s), "
          f"{a.rounds}x{a.calls} calls per variant, load average {load0:.2f} -> {load1:.2f}")
    print(f"{'variant':28s} {'CPU ms/face':>12s} {'wall ms/face':>13s} {'CPU vs single':>14s}")
    for k in variants:
        c, w = statistics.median(cpu[k]), statistics.median(wall[k])
        print(f"{k:28s} {c:12.2f} {w:13.2f} {c / base:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
