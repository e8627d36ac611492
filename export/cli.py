"""python -m export {synergynet,3ddfa-v2,mobilefrnet} --checkpoint X --out Y.onnx [...]

Exit status: 0 written and verified; 1 verification failed (file removed); 2 usage or input error
(one line on stderr naming the file and what to do; nothing written).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EPILOG = """examples:
  python -m export synergynet --checkpoint best.pth.tar --out models/synergynet.onnx --bfm-dir 3dmm_data
  python -m export 3ddfa-v2 --checkpoint mb1_120x120.pth --bfm-dir 3dmm_data \\
      --param-stats param_mean_std_62d_120x120.pkl --out models/3ddfa_v2.onnx
  python -m export mobilefrnet --checkpoint mobilefrnet.pth --bfm-dir 3dmm_data --out models/mobilefrnet.onnx
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export", description="Export a 3DMM regressor checkpoint to a "
                                 "verified ONNX file (uint8 BGR 120x120 crops in; params, landmarks, mesh, pose out).",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="arch", required=True, metavar="{synergynet,3ddfa-v2,mobilefrnet}")
    helps = {"synergynet": "SynergyNet best.pth.tar (BFM buffers inside; --bfm-dir adds triangles)",
             "3ddfa-v2": "3DDFA-V2 MobileNet-V1 (any width) + --param-stats + --bfm-dir",
             "mobilefrnet": "Mobile-FRNet state dict + --bfm-dir [--param-stats]"}
    for arch, h in helps.items():
        p = sub.add_parser(arch, help=h, description=h)
        p.add_argument("--checkpoint", required=True, type=Path, help="the PyTorch checkpoint (.pth / .pth.tar)")
        p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
        p.add_argument("--bfm-dir", type=Path, help="BFM 3dmm_data folder (u_shp.npy, w_shp_sim.npy, tri.mat ...)")
        p.add_argument("--param-stats", type=Path, help="pickle with the 62-d mean/std ({'mean','std'} or "
                       "{'param_mean','param_std'})")
        p.add_argument("--fp16", action="store_true", help="fp16 network weights/compute; I/O and 3D geometry stay fp32")
        p.add_argument("--store-fp16", action="store_true",
                       help="store the large weights as fp16 (a ~2x smaller file), computed in fp32; verified "
                            "within 0.05 px on face crops")
        p.add_argument("--no-dense", action="store_true", help="leave out the dense `vertices` output")
        p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
        p.add_argument("--mesh", choices=["full", "noneck"], default="full",
                       help="dense mesh: full BFM (53215 vertices) or 3DDFA-V2's noneck (38365)")
        p.add_argument("--noneck-dir", type=Path, help="folder with indices.npy / tri.npy (default <bfm-dir>/../noneck)")
        p.add_argument("--check-crop", type=Path, action="append", default=[],
                       help="a 120x120 face crop image to verify on as well (repeatable); with --fp16 these "
                            "are held to 0.25 px")
        p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check (not recommended)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return ap


def _read_crops(paths):
    if not paths:
        return None
    import cv2
    import numpy as np

    from export import ExportInputError
    crops = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR) if Path(p).is_file() else None
        if img is None:
            raise ExportInputError(f"--check-crop {p} is not a readable image (give a 120x120 PNG/JPEG crop)")
        if img.shape[:2] != (120, 120):
            raise ExportInputError(f"--check-crop {p} is {img.shape[1]}x{img.shape[0]}, expected 120x120")
        crops.append(img)
    return np.stack(crops)


def format_summary(r: dict) -> str:
    lines = [f"architecture   {r['arch']}" + (f" (width {r['widen_factor']:g})" if "widen_factor" in r else ""),
             f"parameters     {r['n_params']:,}",
             f"cost           {r['gmacs']:.4f} GMACs = {r['gflops']:.4f} GFLOPs at 1x3x120x120 ({r['flops_source']})",
             f"precision      {'fp16 network, fp32 I/O and geometry' if r['fp16'] else ('fp32, large weights stored as fp16' if r['store_fp16'] else 'fp32')}, opset {r['opset']}",
             f"mesh           {r['mesh']} ({r['n_vertices']} vertices, {r['n_triangles']} triangles)",
             f"param stats    {r['param_stats']}",
             "outputs"]
    for n, shp in r["outputs"].items():
        lines.append(f"  {n:<13}{'x'.join(map(str, shp))}")
    for label, v in r.get("verification", {}).items():
        d = v["max_abs_diff"]
        lines.append(f"max |ONNX - PyTorch| on {v['n_crops']} {label} crops ({r['provider']}): landmarks "
                     f"{d['landmarks']:.2e} px" + (f", vertices {d['vertices']:.2e} px" if "vertices" in d else "")
                     + f", rotation {d['rotation']:.1e}, params rel {d['params_rel']:.1e} "
                     f"(tolerance {v['tolerance_px']:g} px)")
    if "verification" not in r:
        lines.append("verification   SKIPPED (--no-verify)")
    lines.append(f"file size      {r['file_size_bytes'] / 1e6:.1f} MB")
    lines.append(f"wrote          {r['out']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from export import ExportInputError, VerificationError
    try:
        import torch  # noqa: F401
        import onnx  # noqa: F401
    except ImportError as e:
        print(f"export: {e.name} is not installed; install the export extra: pip install -e '.[export]'",
              file=sys.stderr)
        return 2
    from export.convert import export_checkpoint
    progress = None if args.quiet else (lambda m: print(f"[export] {m}", file=sys.stderr, flush=True))
    try:
        report = export_checkpoint(
            args.arch, args.checkpoint, args.out, bfm_dir=args.bfm_dir, param_stats=args.param_stats,
            fp16=args.fp16, store_fp16=args.store_fp16, dense=not args.no_dense, opset=args.opset, mesh=args.mesh, verify=not args.no_verify,
            noneck_dir=args.noneck_dir, check_crops=_read_crops(args.check_crop), progress=progress)
    except ExportInputError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    except VerificationError as e:
        print(f"export: verification failed, {args.out} not written: {e}", file=sys.stderr)
        return 1
    print(format_summary(report))
    return 0
