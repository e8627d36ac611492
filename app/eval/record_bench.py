"""Recording size vs cost: ``python -m app.eval.record_bench [--video CLIP] [--presets ...] [--crfs ...]``.

Runs the real pipeline once over CLIP (default ../shared/media/clips/expressions_d13.mp4, 720x1280
at 30 fps; the clip loops up to ``--frames``) and keeps the annotated frames losslessly
(libx264rgb qp 0) in a temp folder, with a mask of the pixels the overlays changed. Then, for each libx264
preset x crf (the recording's own settings: no B-frames, a keyframe every 2 s, fragmented MP4),
it encodes those frames with app.io.writer.VideoWriter on this thread and prints one table row:

- Mbit/s = file bytes * 8 / clip seconds; MB/h the same for an hour;
- enc ms/frame = wall time of write() (x264 runs its own threads), CPU ms/frame = CPU time of
  all the process's threads per frame (what it takes from the cores the pipeline shares; the
  reference's decoding, measured alone, is subtracted);
- delay = frames handed to the encoder before the first packet came out (added to what a crash
  can lose, on top of the fragment length);
- PSNR all / PSNR overlay = against the lossless frames, over every pixel / over the overlay
  pixels only (thin lines and text: the first to blur).

``--crops DIR`` writes a PNG per setting of the same overlay region, to look at.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from app.io.capture import SourceError, open_source
from app.io.writer import QUALITIES, VideoWriter

DEFAULT_CLIP = Path(__file__).resolve().parents[3] / "shared" / "media" / "clips" / "expressions_d13.mp4"


def _annotated_reference(video: str, frames: int, settings, ref_path: Path):
    """Annotated frames of ``video`` into a lossless file; per-frame overlay masks (packed)."""
    import av

    from app.pipeline import Pipeline
    from app.render import draw_result

    pipe = Pipeline(settings)
    src = open_source(video, loop=True)
    masks, ts = [], []
    c = None
    try:
        for f in src:
            raw = f.image.copy()
            ann = draw_result(pipe.process(f), pipe.layers)
            if c is None:
                c = av.open(str(ref_path), "w")
                s = c.add_stream("libx264rgb", rate=round(src.fps), options={"qp": "0", "preset": "ultrafast"})
                s.width, s.height, s.pix_fmt = ann.shape[1], ann.shape[0], "bgr24"
            for p in s.encode(av.VideoFrame.from_ndarray(ann, format="bgr24")):
                c.mux(p)
            diff = np.abs(ann.astype(np.int16) - raw.astype(np.int16)).max(axis=2) > 24
            masks.append(np.packbits(diff))
            ts.append(f.timestamp)
            if len(ts) >= frames:
                break
    finally:
        src.stop()
        pipe.close()
        if c is not None:
            for p in s.encode(None):
                c.mux(p)
            c.close()
    return masks, ts, src.fps, src.size


def _frames(path: Path):
    import av

    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield f.to_ndarray(format="bgr24")


def _psnr(se: float, n: int) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(se / max(n, 1), 1e-12)))


def decode_cpu_ms(ref: Path) -> float:
    """CPU ms per frame of decoding the lossless reference (subtracted from the encode rows)."""
    c0, n = time.process_time(), 0
    for _ in _frames(ref):
        n += 1
    return (time.process_time() - c0) * 1e3 / max(1, n)


def measure(ref: Path, masks, ts, fps: float, size, preset: str, crf: int, tmp: Path, crop=None,
            tune=None, dec_ms: float = 0.0) -> dict:
    out = tmp / f"{preset}_{crf}.mp4"
    w = VideoWriter(out, fps, size, preset=preset, crf=crf, tune=tune)
    wall = 0.0
    cpu0 = time.process_time()
    delay = None
    for img, t in zip(_frames(ref), ts):
        t0 = time.perf_counter()
        w.write(img, t)
        wall += time.perf_counter() - t0
        if delay is None and w.packets:
            delay = w.frames_written - w.packets
    t0 = time.perf_counter()
    w.close()
    wall += time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    n = len(ts)
    seconds = n / fps
    bits = out.stat().st_size * 8
    se_all = se_ov = 0.0
    n_all = n_ov = 0
    shot = None
    for i, (a, b) in enumerate(zip(_frames(ref), _frames(out))):
        d = (a.astype(np.float32) - b.astype(np.float32)) ** 2
        m = np.unpackbits(masks[i])[: a.shape[0] * a.shape[1]].reshape(a.shape[:2]).astype(bool)
        se_all += float(d.sum())
        n_all += d.size
        se_ov += float(d[m].sum())
        n_ov += int(m.sum()) * 3
        if crop is not None and i == n // 2:
            x, y, cw, ch = crop
            shot = np.hstack([a[y:y + ch, x:x + cw], b[y:y + ch, x:x + cw]])
    out.unlink()
    return {"preset": preset, "crf": crf, "mbps": bits / seconds / 1e6, "mb_per_h": bits / seconds * 3600 / 8e6,
            "enc_ms": wall * 1e3 / n, "cpu_ms": cpu * 1e3 / n - dec_ms, "delay": delay if delay is not None else n,
            "psnr_all": _psnr(se_all, n_all), "psnr_overlay": _psnr(se_ov, n_ov), "crop": shot}


def main(argv=None) -> int:
    from app import cli

    parser = cli.build_parser(prog="python -m app.eval.record_bench")
    g = parser.add_argument_group("recording benchmark")
    g.add_argument("--frames", type=int, default=300, help="frames of the clip (looped) (default %(default)s)")
    g.add_argument("--presets", default="ultrafast,superfast,veryfast,faster",
                   help="libx264 presets to try (default %(default)s)")
    g.add_argument("--crfs", default="20,23,25,28", help="crf values to try (default %(default)s)")
    g.add_argument("--tunes", default="none", help="libx264 tunes to try, none = no tune (default %(default)s)")
    g.add_argument("--crops", metavar="DIR", help="write reference|encoded crops of the overlay (PNG)")
    args = parser.parse_args(argv)
    video = args.video or str(DEFAULT_CLIP)
    settings = cli.settings_from_args(args)
    with tempfile.TemporaryDirectory(prefix="recbench_") as d:
        tmp = Path(d)
        ref = tmp / "reference.mkv"
        try:
            masks, ts, fps, size = _annotated_reference(video, args.frames, settings, ref)
        except SourceError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        w, h = size
        ov = np.zeros((h, w), bool)
        for m in masks:
            ov |= np.unpackbits(m)[: w * h].reshape(h, w).astype(bool)
        ys, xs = np.nonzero(ov)
        cw, ch = min(320, w), min(240, h)
        crop = (int(np.clip(np.median(xs) - cw // 2, 0, w - cw)), int(np.clip(np.median(ys) - ch // 2, 0, h - ch))) \
            if len(xs) else (0, 0)
        print(f"{Path(video).name} {w}x{h} @ {fps:.0f} fps, {len(ts)} annotated frames "
              f"({100.0 * np.mean([np.unpackbits(m).mean() for m in masks]):.1f} % overlay pixels); "
              f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
        dec_ms = decode_cpu_ms(ref)
        print(f"{'preset':<10} {'tune':<11} {'crf':>4} {'Mbit/s':>7} {'MB/h':>6} {'enc ms/f':>9} {'CPU ms/f':>9} "
              f"{'delay':>6} {'PSNR all':>9} {'PSNR ovl':>9}")
        grid = [(p, t, int(c)) for p in args.presets.split(",") for t in args.tunes.split(",")
                for c in args.crfs.split(",")]
        for preset, tune, crf in grid:
                tune = None if tune == "none" else tune
                r = measure(ref, masks, ts, fps, size, preset, crf, tmp, crop=(*crop, cw, ch), tune=tune,
                            dec_ms=dec_ms)
                tag = " ".join(f"{k} ({kind})" for k, q in QUALITIES.items() for kind, o in q.items()
                               if o == ({"preset": preset, "crf": crf} | ({"tune": tune} if tune else {})))
                print(f"{preset:<10} {tune or '-':<11} {crf:>4} {r['mbps']:>7.2f} {r['mb_per_h']:>6.0f} {r['enc_ms']:>9.2f} "
                      f"{r['cpu_ms']:>9.2f} {r['delay']:>6d} {r['psnr_all']:>9.2f} {r['psnr_overlay']:>9.2f}"
                      + (f"  <- --record-quality {tag}" if tag else ""), flush=True)
                if args.crops and r["crop"] is not None:
                    os.makedirs(args.crops, exist_ok=True)
                    cv2.imwrite(os.path.join(args.crops, f"{preset}_{tune or 'none'}_crf{crf}.png"), r["crop"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
