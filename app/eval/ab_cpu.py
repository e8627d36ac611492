"""Two pipeline settings, same decoded frames, alternating: ``python -m app.eval.ab_cpu --video FILE
[--frames 300] [--rounds 3] --a "FLAGS" --b "FLAGS"``.

Decodes the first N frames once, then runs ``Pipeline.process`` over them with settings A and B
(each a string of main.py's pipeline flags, e.g. ``--landmark-crop-scale 1``), in ``--rounds``
rounds whose order alternates (AB, BA, ...), with no overlay, recording or source thread: the
process CPU time per frame of the pipeline alone, detector calls and 3DMM runs, per run and the
mean per setting. For settings that should do the same work, on a shared machine, where the whole
benchmark (app.eval.bench) is too noisy to see a few per cent. Prints the load average.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time


def main(argv=None) -> int:
    import cv2

    from app import cli
    from app.core.types import Frame
    from app.pipeline import Pipeline

    ap = argparse.ArgumentParser(prog="python -m app.eval.ab_cpu", description=__doc__.split("\n")[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--a", default="", help="pipeline flags of setting A (default: none, the defaults)")
    ap.add_argument("--b", default="", help="pipeline flags of setting B")
    a = ap.parse_args(argv)
    cap = cv2.VideoCapture(a.video)
    frames = []
    while len(frames) < a.frames:
        ok, im = cap.read()
        if not ok:
            break
        frames.append(im)
    cap.release()
    if not frames:
        print(f"ab_cpu: error: no frame decoded from {a.video}; give a readable --video", file=sys.stderr)
        return 2
    settings = {k: cli.parse(shlex.split(v))[0] for k, v in (("A", a.a), ("B", a.b))}
    cpu = {"A": [], "B": []}
    load0 = os.getloadavg()[0]
    for rnd in range(a.rounds):
        for k in (("A", "B") if rnd % 2 == 0 else ("B", "A")):
            p = Pipeline(settings[k])
            c0 = time.process_time()
            for i, im in enumerate(frames):
                p.process(Frame(im, i / 30.0, i))
            c = (time.process_time() - c0) * 1e3 / len(frames)
            cpu[k].append(c)
            runs = p.model.runs if p.model is not None else 0
            print(f"round {rnd} {k} ({getattr(a, k.lower()) or 'defaults'}): {len(frames)} frames, "
                  f"detector calls {p.tracker.detections}, 3DMM runs {runs}, CPU {c:.2f} ms/frame", flush=True)
            p.close()
    ma, mb = sum(cpu["A"]) / len(cpu["A"]), sum(cpu["B"]) / len(cpu["B"])
    print(f"mean CPU ms/frame: A {ma:.2f}, B {mb:.2f} (B/A {mb / ma:.3f}); load average {load0:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
