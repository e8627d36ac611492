"""AFLW2000-3D evaluation of an exported ONNX model (the 3DDFA / SynergyNet benchmark protocol).

    python -m export.evaluate aflw2000 --model M.onnx --data DIR [--json OUT] [--batch 32]

Protocol, as the official 3DDFA benchmark code (benchmark_aflw2000.py / calc_nme_alfw2000):
- each image is cropped by its official roi box (AFLW2000-3D_crop.roi_box.npy) exactly as the
  official ``crop_img`` does (round the box, zero-pad outside the image) and resized to 120x120 with
  cv2.resize INTER_LINEAR. (cv2.warpAffine with app.core.geometry.crop_affine samples the same
  points but with OpenCV's coarser fixed-point weights: it moves the per-image NME by up to 0.03 %,
  more than the 0.01 % parity this module is tested to, so the official crop is used.)
- the model's landmarks (crop pixels in its own official convention, see export.contract) are mapped
  into the image with the official formula (app.core.geometry.crop_to_image);
- NME of an image = mean 2D point error over the 68 points / sqrt(w * h) of the box of the ground
  truth ``pt3d_68`` rows 0, 1; reported in %;
- yaw bins by |yaw| of the official yaw list: [0, 30], (30, 60], (60, 90+]; "mean" = mean of the
  three bin means (the number papers report); ``nme`` = plain mean over the images;
- head pose: app.core.geometry.pose_aflw_deg of the model rotation against ``Pose_Para`` (radians,
  [pitch, yaw, roll]) of each .mat, mean absolute error in degrees per angle (wrapped to +-180).

With the real 3DDFA-V2 x0.5 model this reproduces the official code's per-image NME on the shared
images to 2e-5 % (tests/test_evaluate.py).

DIR layouts:
1. ``official_protocol.npz`` (names, roi_box, yaw_deg) + imageNNNNN.jpg / .mat (as ../shared/media/aflw2000);
2. the 3DDFA test lists for the full set: AFLW2000-3D_crop.list (one file name per line),
   AFLW2000-3D_crop.roi_box.npy (N,4), AFLW2000-3D.pose.npy (N,) yaw degrees, AFLW2000-3D.pts68.npy
   (N,2|3,68) ground truth; images (and .mat files for the pose, optional) in DIR or DIR/AFLW2000.
   With layout 2 the landmarks come from pts68.npy, the pose from the .mat files when all are present.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from app.core.geometry import STD_SIZE, crop_to_image, pose_aflw_deg

BINS = (("0-30", 0.0, 30.0), ("30-60", 30.0, 60.0), ("60-90", 60.0, float("inf")))


class EvalInputError(Exception):
    """Bad input: reported as one line on stderr, exit status 2."""


@dataclass
class Sample:
    name: str
    image_path: Path
    roi_box: np.ndarray            # (4,) official crop box
    yaw_deg: float                 # official yaw list value (binning)
    pts68: Optional[np.ndarray]    # (2|3, 68) ground truth, image pixels; None = read from .mat
    mat_path: Optional[Path]


# ---------------------------------------------------------------- crop
def crop_official(img: np.ndarray, roi_box, size: int = STD_SIZE) -> np.ndarray:
    """3DDFA's crop_img (round the box, zero-pad outside the image) then cv2.resize INTER_LINEAR."""
    import cv2
    h, w = img.shape[:2]
    sx, sy, ex, ey = [int(round(float(v))) for v in roi_box[:4]]
    dh, dw = ey - sy, ex - sx
    if dh <= 0 or dw <= 0:
        raise EvalInputError(f"empty roi box {list(roi_box[:4])}")
    res = np.zeros((dh, dw) + img.shape[2:], dtype=img.dtype)
    sx0, dsx = (sx, 0) if sx >= 0 else (0, -sx)
    ex0, dex = (ex, dw) if ex <= w else (w, dw - (ex - w))
    sy0, dsy = (sy, 0) if sy >= 0 else (0, -sy)
    ey0, dey = (ey, dh) if ey <= h else (h, dh - (ey - h))
    if ex0 > sx0 and ey0 > sy0:
        res[dsy:dey, dsx:dex] = img[sy0:ey0, sx0:ex0]
    return cv2.resize(res, dsize=(size, size), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- metrics
def nme_aflw(pred_xy: np.ndarray, gt: np.ndarray) -> float:
    """NME (fraction) of one image: pred (68, 2+) image px, gt (2+, 68) image px; sqrt(w*h) of the gt box."""
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred_xy, dtype=np.float64)[:, :2]
    w = gt[0].max() - gt[0].min()
    h = gt[1].max() - gt[1].min()
    norm = math.sqrt(w * h)
    if not norm > 0:
        raise EvalInputError("degenerate ground-truth landmark box (zero width or height)")
    return float(np.mean(np.linalg.norm(pred - gt[:2].T, axis=1)) / norm)


def yaw_bins(nme_pct: np.ndarray, yaw_deg: np.ndarray) -> dict:
    """Mean NME (%) per |yaw| bin and the mean of the bin means (NaN for an empty bin)."""
    a = np.abs(np.asarray(yaw_deg, dtype=np.float64))
    out = {}
    for key, lo, hi in BINS:
        sel = (a <= hi) if lo == 0 else ((a > lo) & (a <= hi))
        out[key] = float(np.mean(nme_pct[sel])) if sel.any() else float("nan")
    out["mean"] = float(np.mean([out[k] for k, _, _ in BINS]))
    return out


def angle_diff_deg(a, b) -> np.ndarray:
    return np.abs((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------- data
def _load_mat(path: Path) -> dict:
    import scipy.io as sio
    try:
        return sio.loadmat(str(path))
    except Exception as e:  # noqa: BLE001 - any parse error is a bad input file
        raise EvalInputError(f"cannot read {path} ({e}); expected an AFLW2000-3D .mat file") from None


def _image_dir(d: Path, name: str) -> Path:
    for sub in (d, d / "AFLW2000"):
        if (sub / name).is_file():
            return sub
    raise EvalInputError(f"image {name} not found in {d} or {d / 'AFLW2000'}; put the AFLW2000-3D images there")


def load_aflw2000(data_dir) -> list[Sample]:
    """Samples of DIR in either supported layout (see the module docstring)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise EvalInputError(f"--data {d} is not a folder; give the AFLW2000-3D folder (images, .mat, lists)")
    proto = d / "official_protocol.npz"
    lists = [d / "AFLW2000-3D_crop.list", d / "AFLW2000-3D_crop.roi_box.npy", d / "AFLW2000-3D.pose.npy",
             d / "AFLW2000-3D.pts68.npy"]
    samples = []
    if proto.is_file():
        try:
            p = np.load(proto)
            names, rois, yaws = [str(n) for n in p["names"]], np.asarray(p["roi_box"], float), np.asarray(p["yaw_deg"], float)
        except Exception as e:  # noqa: BLE001
            raise EvalInputError(f"cannot read {proto} ({e}); it needs names, roi_box, yaw_deg") from None
        if not (len(names) == len(rois) == len(yaws)) or rois.ndim != 2 or rois.shape[1] < 4:
            raise EvalInputError(f"{proto}: names, roi_box (N,4), yaw_deg must have the same length")
        for n, r, y in zip(names, rois, yaws):
            stem = n[:-4] if n.endswith(".jpg") else n
            img, mat = d / f"{stem}.jpg", d / f"{stem}.mat"
            for f in (img, mat):
                if not f.is_file():
                    raise EvalInputError(f"{f} is missing (listed in {proto}); restore it or remove it from the list")
            samples.append(Sample(stem, img, r[:4], float(y), None, mat))
    elif all(f.is_file() for f in lists):
        try:
            names = [ln.strip() for ln in lists[0].read_text().splitlines() if ln.strip()]
            rois = np.asarray(np.load(lists[1]), float)
            yaws = np.asarray(np.load(lists[2]), float).reshape(-1)
            pts = np.asarray(np.load(lists[3]), float)
        except Exception as e:  # noqa: BLE001
            raise EvalInputError(f"cannot read the 3DDFA test lists in {d} ({e})") from None
        if not (len(names) == len(rois) == len(yaws) == len(pts)) or pts.ndim != 3 or pts.shape[2] != 68:
            raise EvalInputError(f"{d}: the 3DDFA lists disagree in length or pts68 is not (N,2|3,68): "
                                 f"{len(names)} names, {len(rois)} boxes, {len(yaws)} yaws, pts68 {pts.shape}")
        for n, r, y, g in zip(names, rois, yaws, pts):
            stem = Path(n).stem
            fname = stem + ".jpg"
            sub = _image_dir(d, fname)
            mat = sub / f"{stem}.mat"
            samples.append(Sample(stem, sub / fname, r[:4], float(y), g, mat if mat.is_file() else None))
    else:
        missing = [f.name for f in lists if not f.is_file()]
        raise EvalInputError(f"{d} has neither official_protocol.npz nor the 3DDFA lists (missing: "
                             f"{', '.join(missing)}); see python -m export.evaluate --help")
    if not samples:
        raise EvalInputError(f"{d}: the image list is empty")
    return samples


# ---------------------------------------------------------------- model
class ContractSession:
    """onnxruntime session of an exported model, checked against the export contract."""

    def __init__(self, model_path, providers=("CPUExecutionProvider",), threads: int = 0):
        import onnxruntime as ort
        p = Path(model_path)
        if not p.is_file():
            raise EvalInputError(f"--model {p} does not exist; export one with python -m export")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = threads
        try:
            self.sess = ort.InferenceSession(str(p), so, providers=list(providers))
        except Exception as e:  # noqa: BLE001
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EvalInputError(f"--model {p} is not a loadable ONNX model ({first})") from None
        self.path = p
        self.providers = self.sess.get_providers()
        ins = self.sess.get_inputs()
        if len(ins) != 1 or ins[0].name != "image" or ins[0].type != "tensor(uint8)" or \
                [d if isinstance(d, int) else None for d in ins[0].shape][1:] != [120, 120, 3]:
            got = [(i.name, i.type, i.shape) for i in ins]
            raise EvalInputError(f"--model {p} breaks the export contract: input must be image uint8 "
                                 f"[N,120,120,3], got {got}")
        self.outputs = [o.name for o in self.sess.get_outputs()]
        for need in ("landmarks", "rotation"):
            if need not in self.outputs:
                raise EvalInputError(f"--model {p} breaks the export contract: no '{need}' output "
                                     f"(outputs: {', '.join(self.outputs)})")
        self.meta = dict(self.sess.get_modelmeta().custom_metadata_map)

    def run(self, crops: np.ndarray, names=("landmarks", "rotation")) -> list[np.ndarray]:
        return self.sess.run(list(names), {"image": np.ascontiguousarray(crops, dtype=np.uint8)})


# ---------------------------------------------------------------- evaluation
def evaluate_aflw2000(model_path, data_dir, batch: int = 32, providers=("CPUExecutionProvider",)) -> dict:
    import cv2
    samples = load_aflw2000(data_dir)
    sess = ContractSession(model_path, providers)
    crops, gts, poses = [], [], []
    for s in samples:
        img = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if img is None:
            raise EvalInputError(f"cannot decode image {s.image_path}; replace the file")
        crops.append(crop_official(img, s.roi_box))
        mat = _load_mat(s.mat_path) if s.mat_path is not None else None
        if s.pts68 is not None:
            gt = s.pts68
        else:
            if mat is None or "pt3d_68" not in mat:
                raise EvalInputError(f"{s.mat_path} has no pt3d_68 ground truth")
            gt = mat["pt3d_68"]
        gts.append(np.asarray(gt, dtype=np.float64))
        if mat is not None and "Pose_Para" in mat:
            poses.append(np.degrees(np.asarray(mat["Pose_Para"], dtype=np.float64).reshape(-1)[:3]))
        else:
            poses.append(None)
    crops = np.stack(crops)
    lms, rots = [], []
    for i in range(0, len(crops), max(1, int(batch))):
        lm, R = sess.run(crops[i:i + batch])
        if lm.shape[1:] != (68, 3) or R.shape[1:] != (3, 3):
            raise EvalInputError(f"--model {model_path} breaks the export contract: landmarks {lm.shape}, "
                                 f"rotation {R.shape} (want [N,68,3], [N,3,3])")
        lms.append(lm)
        rots.append(R)
    lms, rots = np.concatenate(lms), np.concatenate(rots)

    per_image, nmes, yaws = {}, [], []
    pose_err, pose_pred = [], {}
    for s, lm, R, gt, pp in zip(samples, lms, rots, gts, poses):
        pred = crop_to_image(lm, s.roi_box)
        v = 100.0 * nme_aflw(pred, gt)
        per_image[s.name] = v
        nmes.append(v)
        yaws.append(s.yaw_deg)
        est = pose_aflw_deg(R)
        pose_pred[s.name] = {"pitch": float(est[0]), "yaw": float(est[1]), "roll": float(est[2])}
        if pp is not None:
            pose_err.append(angle_diff_deg(est, pp))
    nmes = np.asarray(nmes)
    res = {
        "model": str(model_path), "data": str(data_dir), "n_images": len(samples),
        "arch": sess.meta.get("arch", "unknown"),
        "landmark_convention": sess.meta.get("landmark_convention", "unknown"),
        "provider": sess.providers[0],
        "nme": float(nmes.mean()),
        "nme_bins": yaw_bins(nmes, np.asarray(yaws)),
        "per_image": per_image,
        "pose_pred_deg": pose_pred,
    }
    if pose_err and len(pose_err) == len(samples):
        e = np.asarray(pose_err)
        m = e.mean(0)
        res["pose_mae_deg"] = {"pitch": float(m[0]), "yaw": float(m[1]), "roll": float(m[2]), "mean": float(m.mean())}
    else:
        res["pose_mae_deg"] = None
        res["pose_note"] = f"Pose_Para available for {len(pose_err)} of {len(samples)} images: no pose MAE"
    return res


def format_table(res: dict) -> str:
    b = res["nme_bins"]
    lines = [f"AFLW2000-3D, {res['n_images']} images, model {res['model']} ({res['arch']}, {res['provider']})",
             "NME %   [0,30]   (30,60]  (60,90]  mean(bins)  mean(images)",
             f"        {b['0-30']:7.3f}  {b['30-60']:7.3f}  {b['60-90']:7.3f}  {b['mean']:10.3f}  {res['nme']:12.3f}"]
    p = res.get("pose_mae_deg")
    if p:
        lines.append(f"pose MAE deg  pitch {p['pitch']:.2f}  yaw {p['yaw']:.2f}  roll {p['roll']:.2f}  mean {p['mean']:.2f}")
    else:
        lines.append(res.get("pose_note", "no pose ground truth"))
    return "\n".join(lines)


def _nan_to_none(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    return x


def write_json_atomic(path, obj) -> None:
    path = Path(path)
    if path.is_dir():
        raise EvalInputError(f"--json {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise EvalInputError(f"--json {path}: folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(_nan_to_none(obj), f, indent=1)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise EvalInputError(f"cannot write --json {path} ({e.strerror or e})") from None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.evaluate", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="bench", required=True)
    a = sub.add_parser("aflw2000", help="AFLW2000-3D NME by yaw bin and head-pose MAE")
    a.add_argument("--model", required=True, help="exported ONNX model (export contract)")
    a.add_argument("--data", required=True, help="AFLW2000-3D folder (see the module docstring for layouts)")
    a.add_argument("--json", help="write the results to this JSON file")
    a.add_argument("--batch", type=int, default=32, help="crops per onnxruntime call (default 32)")
    a.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args(argv)
    try:
        if args.batch < 1:
            raise EvalInputError(f"--batch must be >= 1, got {args.batch}")
        providers = ("CPUExecutionProvider",) if args.device == "cpu" else ("CUDAExecutionProvider",)
        if args.device == "cuda":
            import onnxruntime as ort
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EvalInputError("--device cuda: onnxruntime has no CUDAExecutionProvider here; use --device cpu")
        if args.json:  # fail before the run, not after it
            jp = Path(args.json)
            if jp.is_dir() or not jp.parent.is_dir():
                raise EvalInputError(f"--json {jp}: not a writable file path (folder missing or is a folder)")
        res = evaluate_aflw2000(args.model, args.data, batch=args.batch, providers=providers)
        if res["provider"] != providers[0]:
            raise EvalInputError(f"asked for {providers[0]} but onnxruntime runs {res['provider']}")
        print(format_table(res))
        if args.json:
            write_json_atomic(args.json, res)
            print(f"wrote {args.json}")
    except EvalInputError as e:
        print(f"export.evaluate: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
