"""I/O cost: ``python -m app.io.bench [VIDEO] [--preset ultrafast]``.

Prints decode ms/frame (Source: PyAV decode + BGR conversion, through the capture thread) and
encode ms/frame (VideoWriter, libx264) for the frames of VIDEO (default
../shared/media/talking_head_720p.mp4). The recording goes to a temporary folder and is removed.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from app.io.capture import SourceError, open_source
from app.io.writer import DEFAULT_PRESET, OutputError, VideoWriter


def main(argv=None) -> int:
    default = Path(__file__).resolve().parents[3] / "shared" / "media" / "talking_head_720p.mp4"
    ap = argparse.ArgumentParser(prog="python -m app.io.bench", description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", default=str(default))
    ap.add_argument("--preset", default=DEFAULT_PRESET, help="libx264 preset (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=3, help="passes over the clip (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        src = open_source(args.video)
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    w, h = src.size
    src.stop()
    dec = []
    frames = []
    for rep in range(args.repeat):
        src = open_source(args.video)
        t = time.perf_counter()
        n = 0
        for f in src:
            n += 1
            if rep == 0 and len(frames) < 200:
                frames.append(f)
        dec.append((time.perf_counter() - t) / n)
    print(f"decode {Path(args.video).name} {w}x{h}: {np.median(dec) * 1e3:.2f} ms/frame "
          f"({n} frames, median of {args.repeat} passes)")
    with tempfile.TemporaryDirectory() as d:
        enc = []
        for _ in range(args.repeat):
            try:
                wr = VideoWriter(Path(d) / "bench.mp4", src.fps, (w, h), preset=args.preset)
            except OutputError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            t = time.perf_counter()
            for f in frames:
                wr.write(f.image, f.timestamp)
            wr.close()
            enc.append((time.perf_counter() - t) / len(frames))
        size = (Path(d) / "bench.mp4").stat().st_size
    print(f"encode {wr.backend} preset {args.preset} {w}x{h}: {np.median(enc) * 1e3:.2f} ms/frame "
          f"(incl. flush; {size / 1024:.0f} KiB for {len(frames)} frames)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
