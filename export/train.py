"""Train a 62-parameter 3DMM regressor (Mobile-FRNet) or fine-tune SynergyNet: 300W-LP recipe or
distillation from a teacher.

    python -m export.train mobilefrnet --data DIR --bfm-dir 3dmm_data --out runs/NAME [--epochs N]
            [--batch B] [--lr LR] [--device cpu|cuda] [--resume CKPT]
    python -m export.train mobilefrnet --distill-from models/teacher.onnx --frames VIDEO_OR_DIR [...]
            --bfm-dir 3dmm_data --out runs/NAME [--holdout NAME] [--aflw DIR]
    python -m export.train synergynet --checkpoint best.pth.tar (--data DIR | --distill-from ... --frames ...)
            --bfm-dir 3dmm_data --out runs/NAME [...]

SynergyNet fine-tuning trains the image-to-parameter network (I2P backbone + its three heads),
whitened by the checkpoint's own param_mean/param_std buffers; the refinement MLPs and the BFM
buffers are kept as loaded, and last.pth.tar / best.pth.tar are written in the official format
({'epoch', 'state_dict': {'module.<key>': tensor}}) so that `python -m export synergynet` takes them.

Loss: L = l_wpdc * WPDC + l_wing * Wing(68 landmarks) on whitened parameters (export/losses.py).
Writes into --out: last.pth (plain state_dict of the last complete epoch; synergynet: last.pth.tar
in the official format), best.pth (synergynet: best.pth.tar; best validation NME), resume.pth
(model + optimizer + schedule + epoch, for --resume), metrics.jsonl (one line per epoch),
train_config.json, and face_cache.npz in distillation mode. Every file is written to a temporary
name in the same folder and then renamed, so an interrupted run keeps the last complete
checkpoint; Ctrl-C saves interrupted.pth and exits (status 130).
See docs/training.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ARCHS = ("mobilefrnet", "synergynet")
SIZE = 120
# the landmark convention `python -m export ARCH` bakes into the ONNX file (export.contract.CONVENTIONS)
ARCH_CONVENTION = {"mobilefrnet": "3ddfa_v2", "synergynet": "synergynet"}
# weights files per architecture: plain state_dict (.pth) or the official SynergyNet format (.pth.tar)
WEIGHTS_SUFFIX = {"mobilefrnet": ".pth", "synergynet": ".pth.tar"}
DEFAULT_LR = {"mobilefrnet": 2e-3, "synergynet": 1e-4}


class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


# ---------------------------------------------------------------- small utilities
def atomic_save(obj, path: Path) -> None:
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Progress:
    """One-line progress (tqdm-like): rewritten in place on a terminal, a line every ``every`` steps otherwise."""

    def __init__(self, total: int, prefix: str, stream=sys.stderr, every: int = 10):
        self.total, self.prefix, self.stream, self.every = total, prefix, stream, every
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.time()
        self.n = 0

    def update(self, n_items: int, step: int, info: dict) -> None:
        self.n += n_items
        dt = max(time.time() - self.t0, 1e-9)
        frac = step / max(self.total, 1)
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        eta = dt / max(frac, 1e-9) - dt
        terms = " ".join(f"{k} {v:.4g}" for k, v in info.items())
        line = f"{self.prefix} [{bar}] {step}/{self.total} {terms} | {self.n / dt:.1f} img/s eta {eta:.0f}s"
        if self.tty:
            self.stream.write("\r" + line[:160].ljust(160))
            if step == self.total:
                self.stream.write("\n")
        elif step % self.every == 0 or step == self.total:
            self.stream.write(line + "\n")
        self.stream.flush()


def to_input(crops: np.ndarray, device):
    """uint8 (B,120,120,3) BGR -> float NCHW (x - 127.5) / 128 on device."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
    return (x.permute(0, 3, 1, 2).float() - 127.5) / 128.0


def build_model(arch: str, checkpoint=None):
    if arch == "mobilefrnet":
        from export.nets.mobilefrnet import MobileFRNet

        return MobileFRNet(num_params=62)
    if arch == "synergynet":
        return load_synergynet(checkpoint)
    raise UsageError(f"unknown architecture {arch!r} (choose from {', '.join(ARCHS)})")


def load_synergynet(path):
    """SynergyNet from an official-format checkpoint (strict), refinement MLPs frozen (only I2P trains)."""
    from export import ExportInputError
    from export.checkpoint import load_state_dict, strict_load
    from export.nets.synergynet import SynergyNet

    if path is None:
        raise UsageError("synergynet needs --checkpoint best.pth.tar (the official-format weights to fine-tune)")
    net = SynergyNet()
    try:
        strict_load(net, load_state_dict(path), path, "synergynet")
    except ExportInputError as e:
        raise UsageError(f"--checkpoint: {e}") from None
    std = net.param_std.detach().cpu().numpy()
    if not (np.isfinite(std).all() and (std > 0).all()):
        raise UsageError(f"--checkpoint {path}: its param_std buffer is not positive (not a trained SynergyNet file)")
    for m in (net.forwardDirection, net.reverseDirection):
        m.requires_grad_(False)
    return net


def synergynet_state(model, epoch: int) -> dict:
    """The official SynergyNet checkpoint format: {'epoch', 'state_dict': {'module.<key>': tensor}}."""
    return {"epoch": int(epoch), "state_dict": {"module." + k: v.detach().cpu() for k, v in model.state_dict().items()}}


def check_synergynet_bfm(net, bfm, path) -> None:
    """The checkpoint's landmark buffers must be the --bfm-dir BFM's (the losses use the latter)."""
    u_base = net.u_base.detach().cpu().numpy().reshape(68, 3).astype(np.float64)
    w_base = np.concatenate([net.w_shp_base.detach().cpu().numpy(), net.w_exp_base.detach().cpu().numpy()], 1)
    u_ref = bfm.u[bfm.landmarks].astype(np.float64)
    w_ref = bfm.w[bfm.landmarks].reshape(204, 50).astype(np.float64)
    du = np.abs(u_base - u_ref).max() / max(np.abs(u_ref).max(), 1e-12)
    dw = np.abs(w_base - w_ref).max() / max(np.abs(w_ref).max(), 1e-12)
    if du > 1e-4 or dw > 1e-4:
        raise UsageError(f"--checkpoint {path}: its BFM landmark buffers differ from --bfm-dir's BFM "
                         f"(relative {max(du, dw):.2g}); give the 3dmm_data folder the checkpoint was trained with")


def frame_shift(src: str, dst: str) -> np.ndarray:
    """62-vector to add to de-normalised params so that convention ``dst`` draws what ``src`` drew.

    Crop pixels are (v_x + ox, fy - v_y, v_z + oz) (export.contract.CONVENTIONS); the same pixels in
    convention dst need v' = v + (ox_s - ox_d, fy_d - fy_s, oz_s - oz_d), i.e. a change of the
    translation column P[:, 3] (params 3, 7, 11) only.
    """
    from export.contract import CONVENTIONS

    ox_s, fy_s, oz_s = CONVENTIONS[src]
    ox_d, fy_d, oz_d = CONVENTIONS[dst]
    d = np.zeros(62)
    d[3], d[7], d[11] = ox_s - ox_d, fy_d - fy_s, oz_s - oz_d
    return d


def init_head(model, target_mean: np.ndarray) -> str:
    """Start the last Linear(.., 62) at the mean target (bias) with weights scaled by 0.1.

    A randomly initialised head starts far from any face; starting at the mean face (the constant
    predictor's optimum) lets a short run spend its steps on the residual.
    """
    import torch
    from torch import nn

    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == len(target_mean):
            last = (name, m)
    if last is None:
        raise UsageError(f"no Linear layer with {len(target_mean)} outputs to initialise (use --no-head-init)")
    with torch.no_grad():
        last[1].weight.mul_(0.1)
        if last[1].bias is None:
            raise UsageError(f"{last[0]} has no bias (use --no-head-init)")
        last[1].bias.copy_(torch.as_tensor(np.asarray(target_mean, np.float32)))
    return last[0]


# ---------------------------------------------------------------- evaluation
def nme_2d(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-sample 68-point 2D NME (fraction), normalised by sqrt(w*h) of the ground-truth landmark box."""
    pred, gt = np.asarray(pred)[..., :2], np.asarray(gt)[..., :2]
    wh = gt.max(axis=1) - gt.min(axis=1)
    norm = np.sqrt(wh[:, 0] * wh[:, 1])
    return np.linalg.norm(pred - gt, axis=2).mean(axis=1) / norm


def crop_pixels(lm_model, convention: str = "3ddfa_v2"):
    """(N,68,3) model crop-space points -> (N,68,2) crop pixels in ``convention`` (export.contract.CONVENTIONS):
    3DDFA-V2 (x - 1, 120 - y; the default) or SynergyNet (x, 121 - y)."""
    from export.contract import CONVENTIONS

    ox, fy, _ = CONVENTIONS[convention]
    out = lm_model[..., :2].clone() if hasattr(lm_model, "clone") else lm_model[..., :2].copy()
    out[..., 0] = lm_model[..., 0] + ox
    out[..., 1] = fy - lm_model[..., 1]
    return out


class AFLWSet:
    """AFLW2000-3D with the official protocol of export.evaluate (B): official rounded crop, 68-pt 2D NME
    normalised by sqrt(w*h) of the ground-truth box; either layout export.evaluate reads."""

    def __init__(self, folder):
        import cv2

        from export import evaluate as E

        try:
            samples = E.load_aflw2000(folder)
            crops, gts = [], []
            for s in samples:
                img = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
                if img is None:
                    raise UsageError(f"--aflw {s.image_path}: image does not decode (replace the file)")
                crops.append(E.crop_official(img, s.roi_box))
                gt = s.pts68 if s.pts68 is not None else E._load_mat(s.mat_path)["pt3d_68"]
                gts.append(np.asarray(gt, np.float64))
        except E.EvalInputError as e:
            raise UsageError(f"--aflw {folder}: {e}") from None
        self._nme = E.nme_aflw
        self.crops, self.gt = np.stack(crops), gts
        self.rois = np.stack([np.asarray(s.roi_box[:4], np.float64) for s in samples])
        self.names = [s.name for s in samples]

    def nme(self, lm_crop_px: np.ndarray) -> np.ndarray:
        """(N,68,2) crop pixels (3DDFA-V2 convention) -> per-image NME (fraction), official mapping to the image."""
        from app.core.geometry import crop_to_image

        pts = np.concatenate([lm_crop_px, np.zeros(lm_crop_px.shape[:2] + (1,))], axis=2)
        return np.array([self._nme(crop_to_image(p, r), g) for p, r, g in zip(pts, self.rois, self.gt)])


# ---------------------------------------------------------------- the trainer
class Trainer:
    """Generic loop over any nn.Module mapping normalised NCHW crops to whitened (N, 62) params."""

    def __init__(self, model, criterion, out: Path, *, arch: str, epochs: int, lr: float, optimizer: str = "adamw",
                 weight_decay: float = 1e-4, schedule: str = "cosine", warmup_steps: int = 100, device: str = "cpu",
                 steps_per_epoch: int, log: Callable[[str], None] = print, max_minutes: float = 0.0,
                 convention: str = "3ddfa_v2", weights_suffix: str = ".pth",
                 weights_state: Optional[Callable[[object, int], object]] = None):
        import torch

        self.model, self.crit = model.to(device), criterion.to(device)
        self.out, self.arch, self.epochs, self.device = out, arch, epochs, device
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = epochs * steps_per_epoch
        params = [p for p in model.parameters() if p.requires_grad]
        if optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
        else:
            raise UsageError(f"--optimizer must be adamw or sgd, got {optimizer!r}")
        self.base_lr, self.schedule, self.warmup = lr, schedule, warmup_steps
        self.step, self.epoch, self.best = 0, 0, math.inf
        self.log, self.max_minutes = log, max_minutes
        self.convention = convention              # landmark convention of the exported model (validation)
        self.weights_suffix = weights_suffix      # last<suffix>, best<suffix>
        self.weights_state = weights_state or (lambda model, epoch: model.state_dict())

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        if self.schedule == "cosine":
            return self.base_lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
        if self.schedule == "step":          # 3DDFA: x0.2 at 60 % and 80 % of training
            return self.base_lr * (0.2 ** ((frac >= 0.6) + (frac >= 0.8)))
        raise UsageError(f"--schedule must be cosine or step, got {self.schedule!r}")

    def state(self) -> dict:
        return {"arch": self.arch, "epoch": self.epoch, "step": self.step, "best": self.best,
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict()}

    def resume(self, path: Path) -> None:
        import torch

        from export import ExportInputError
        from export.checkpoint import load_state_dict, strict_load

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            obj = None
        try:
            if isinstance(obj, dict) and "model" in obj and "arch" in obj:
                if obj["arch"] != self.arch:
                    raise UsageError(f"--resume {path}: a {obj['arch']} checkpoint, not {self.arch}")
                strict_load(self.model, obj["model"], path, self.arch)
                self.opt.load_state_dict(obj["optimizer"])
                self.epoch, self.step, self.best = int(obj["epoch"]), int(obj["step"]), float(obj["best"])
                self.log(f"resumed {path}: epoch {self.epoch}, step {self.step}")
            else:   # plain weights (last.pth / best.pth): fine-tune from them
                strict_load(self.model, load_state_dict(path), path, self.arch)
                self.log(f"initialised from weights {path}")
        except ExportInputError as e:
            raise UsageError(f"--resume: {e}") from None

    def train_epoch(self, batches, progress: Progress) -> dict:
        import torch

        self.model.train()
        sums, n = {}, 0
        for k, (crops, target) in enumerate(batches, 1):
            for g in self.opt.param_groups:
                g["lr"] = self.lr_at(self.step)
            x = to_input(crops, self.device)
            y = torch.from_numpy(target).to(self.device)
            out = self.crit(self.model(x), y)
            self.opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            self.opt.step()
            self.step += 1
            for key, v in out.items():
                sums[key] = sums.get(key, 0.0) + float(v.detach()) * len(crops)
            n += len(crops)
            progress.update(len(crops), k, {key: float(v.detach()) for key, v in out.items()} | {"lr": self.lr_at(self.step)})
            if self.time_up():
                break
        return {f"train_{k}": v / max(n, 1) for k, v in sums.items()} | {"train_samples": n}

    def time_up(self) -> bool:
        return bool(self.max_minutes) and (time.time() - self.t_start) > 60 * self.max_minutes

    def predict_landmarks(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        """Crop pixels (N,68,2) of the model's predictions (eval mode)."""
        import torch

        self.model.eval()
        outs = []
        with torch.no_grad():
            for k in range(0, len(crops), batch):
                pw = self.model(to_input(crops[k:k + batch], self.device))
                outs.append(crop_pixels(self.crit.landmarks(pw), self.convention).cpu().numpy())
        return np.concatenate(outs)

    def fit(self, make_batches: Callable[[int], object], steps_per_epoch: int,
            validate: Callable[["Trainer"], dict], batch_size: int) -> dict:
        """Train until ``epochs`` (or --max-minutes); checkpoints + metrics.jsonl each epoch."""
        self.t_start = time.time()
        metrics_path = self.out / "metrics.jsonl"
        last: dict = {}
        try:
            while self.epoch < self.epochs and not self.time_up():
                t0 = time.time()
                prog = Progress(steps_per_epoch, f"epoch {self.epoch + 1}/{self.epochs}")
                rec = self.train_epoch(make_batches(self.epoch), prog)
                self.epoch += 1
                rec["epoch"] = self.epoch
                rec["step"] = self.step
                rec["epoch_seconds"] = round(time.time() - t0, 2)
                rec.update(validate(self))
                key = rec.get("val_nme_teacher", rec.get("val_nme_aflw", rec.get("train_loss")))
                is_best = key is not None and key < self.best
                if is_best:
                    self.best = float(key)
                rec["best"] = self.best
                rec["images_per_second"] = round(rec["train_samples"] / max(rec["epoch_seconds"], 1e-9), 2)
                weights = self.weights_state(self.model, self.epoch)
                atomic_save(weights, self.out / f"last{self.weights_suffix}")
                if is_best:
                    atomic_save(weights, self.out / f"best{self.weights_suffix}")
                atomic_save(self.state(), self.out / "resume.pth")
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                self.log("epoch {epoch}: ".format(**rec) + " ".join(
                    f"{k} {v:.4g}" for k, v in rec.items() if isinstance(v, float)) + (" (best)" if is_best else ""))
                last = rec
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            atomic_save(self.state(), self.out / "interrupted.pth")
            raise
        return last


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m export.train",
                                 description="Train a 62-parameter 3DMM regressor or fine-tune SynergyNet "
                                             "(see docs/training.md).")
    ap.add_argument("arch", choices=ARCHS)
    ap.add_argument("--checkpoint", help="synergynet: the official-format best.pth.tar to fine-tune (required); "
                                         "its param_mean/param_std buffers whiten the targets")
    src = ap.add_argument_group("data (one of --data or --distill-from)")
    src.add_argument("--data", help="300W-LP training folder in the 3DDFA layout (train_aug_120x120/ ...)")
    src.add_argument("--list", help="image list (default: DIR/train_aug_120x120.list.train)")
    src.add_argument("--params", help="(N,62) whitened parameters (default: DIR/param_all_norm_v201.pkl|.npy)")
    src.add_argument("--distill-from", help="teacher ONNX model following the export contract")
    src.add_argument("--frames", nargs="+", help="videos, images or folders of them (distillation)")
    src.add_argument("--holdout", nargs="*", default=None,
                     help="hold out sources whose file name contains this (default: the last video)")
    src.add_argument("--stride", type=int, default=2, help="use every k-th video frame (default 2)")
    src.add_argument("--target-frame", choices=("pixels", "params"), default="pixels",
                     help="distillation: 'pixels' (default) moves the teacher's parameters into the student's "
                          "landmark convention (export.contract.CONVENTIONS), so that the exported student draws "
                          "the teacher's landmarks; 'params' uses the teacher's parameters unchanged")
    src.add_argument("--no-check-images", action="store_true",
                     help="supervised: skip the pre-scan that decodes every listed image before training")
    ap.add_argument("--bfm-dir", required=True, help="the 3dmm_data folder (BFM + param_whitening.pkl)")
    ap.add_argument("--param-stats", help="whitening stats .pkl of the targets (default: BFM-DIR/param_whitening.pkl); "
                                          "synergynet: only the whitening of the --params file (the network "
                                          "uses its checkpoint's buffers)")
    ap.add_argument("--out", required=True, help="run folder (created)")
    ap.add_argument("--aflw", help="AFLW2000-3D folder with official_protocol.npz: NME after each epoch "
                                   "(opt-in: without it nothing is validated on AFLW2000)")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--steps-per-epoch", type=int, default=0, help="default: one pass over the training set")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=None, help="default 2e-3 (mobilefrnet), 1e-4 (synergynet fine-tuning)")
    ap.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--schedule", choices=("cosine", "step"), default="cosine")
    ap.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    ap.add_argument("--l-wpdc", type=float, default=1.0, help="weight of WPDC")
    ap.add_argument("--l-wing", type=float, default=0.1, help="weight of the Wing loss on the 68 landmarks")
    ap.add_argument("--no-flip", action="store_true", help="supervised: no horizontal flip augmentation")
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--workers", type=int, default=0, help="supervised: DataLoader worker processes")
    ap.add_argument("--resume", help="resume.pth of a run, or weights (last.pth/best.pth) to start from")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop (and save) after this wall time")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-head-init", action="store_true",
                    help="keep the random output layer (default: its bias starts at the mean training target)")
    return ap


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_args(args) -> None:
    """Combinations of flags that cannot train: one line each (UsageError)."""
    import torch

    if bool(args.data) == bool(args.distill_from):
        raise UsageError("give either --data DIR (supervised) or --distill-from TEACHER.onnx --frames ... (distillation)")
    if args.distill_from and not args.frames:
        raise UsageError("--distill-from needs --frames VIDEO_OR_DIR [...]")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: torch sees no CUDA device here; use --device cpu")
    if args.epochs < 1 or args.batch < 1:
        raise UsageError("--epochs and --batch must be >= 1")
    synergy = args.arch == "synergynet"
    if args.checkpoint and not synergy:
        raise UsageError(f"--checkpoint is for synergynet fine-tuning; {args.arch} starts from scratch or from "
                         "--resume WEIGHTS")
    if synergy and not args.checkpoint:
        raise UsageError("synergynet needs --checkpoint best.pth.tar (the official-format weights to fine-tune)")
    if synergy and args.param_stats and not args.data:
        raise UsageError("--param-stats: synergynet whitens with its checkpoint's param_mean/param_std; in "
                         "distillation there is no parameter file to de-whiten")


@dataclass
class _Whitening:
    """The BFM and the parameter whitening: ``mean``/``std`` of the target file (supervised) and
    ``net_mean``/``net_std`` the network's own (its checkpoint's buffers for synergynet)."""
    bfm: object
    bfm_dir: Path
    stats_path: Optional[Path]
    mean: np.ndarray
    std: np.ndarray
    net_mean: np.ndarray
    net_std: np.ndarray


def _load_whitening(args, model):
    """(_Whitening, model): the BFM, the whitening stats, and for synergynet the network to
    fine-tune (loaded from --checkpoint unless given)."""
    from export import datasets as D
    from export.losses import BFMArrays, load_param_stats

    synergy = args.arch == "synergynet"
    bfm_dir = Path(args.bfm_dir)
    stats_path = mean = std = None
    try:
        bfm = BFMArrays.from_dir(bfm_dir)
        if args.data or not synergy:   # the whitening of the target file (supervised) / of the network (mobilefrnet)
            stats_path = Path(args.param_stats) if args.param_stats else bfm_dir / "param_whitening.pkl"
            if not stats_path.is_file():
                raise FileNotFoundError(f"{stats_path}: whitening stats missing (give --param-stats FILE)")
            mean, std = load_param_stats(stats_path)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise UsageError(str(e)) from None
    D.set_landmark_bfm(bfm)
    if synergy:
        # the network's own whitening: its checkpoint's buffers (what `python -m export synergynet` uses)
        if model is None:
            model = build_model("synergynet", args.checkpoint)
        check_synergynet_bfm(model, bfm, args.checkpoint)
        net_mean = model.param_mean.detach().cpu().numpy().astype(np.float32)
        net_std = model.param_std.detach().cpu().numpy().astype(np.float32)
        if stats_path is None:
            mean, std = net_mean, net_std
    else:
        net_mean, net_std = mean, std
    return _Whitening(bfm, bfm_dir, stats_path, mean, std, net_mean, net_std), model


def _writable_out(folder: str) -> Path:
    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test.tmp"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror})") from None
    return out


@dataclass
class _Data:
    """What one training run reads: batches per epoch, steps, the held-out set (distillation) and
    the mean training target in the network's whitening (the output layer's initial bias)."""
    make_batches: Callable[[int], object]
    steps: int
    n_train: int
    val: object
    target_mean: Callable[[], np.ndarray]


def _supervised_data(args, w: _Whitening, rng, log) -> _Data:
    """Crops and 3DMM parameters from a 300W-LP-style folder (--data)."""
    import torch

    from export import datasets as D

    augment = not args.no_augment
    flipper = None if (args.no_flip or not augment) else D.ParamFlipper(w.bfm)
    ds = D.SupervisedDataset(args.data, list_file=args.list, param_file=args.params, param_mean=w.mean,
                             param_std=w.std, augment=augment, flipper=flipper, seed=args.seed,
                             target_mean=w.net_mean, target_std=w.net_std)
    if args.no_check_images:
        for i in (0, len(ds) - 1):   # fail early on undecodable images at both ends of the list
            ds[i]
    else:                            # every listed image exists and decodes, before any training
        secs = ds.check_images(threads=args.threads or min(8, os.cpu_count() or 1))
        log(f"checked {len(ds)} images in {secs:.1f} s (skip with --no-check-images)")
        if ds.decoder_warnings:
            log(f"image decoder warnings during the check (the images still decode): "
                f"{'; '.join(ds.decoder_warnings[:3])}")
    n_train = len(ds)
    log(f"supervised: {n_train} crops from {ds.image_dir} ({ds.list_file.name}, {ds.param_file.name})")

    def make_batches(epoch):
        if args.workers > 0:
            dl = torch.utils.data.DataLoader(
                ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                worker_init_fn=lambda k: setattr(ds, "rng", np.random.default_rng(args.seed * 1000 + epoch * 97 + k)),
                collate_fn=lambda b: (np.stack([x[0] for x in b]), np.stack([x[1] for x in b])))
            yield from dl
            return
        order = rng.permutation(n_train)
        for k in range(0, n_train - args.batch + 1 if n_train >= args.batch else 1, args.batch):
            items = [ds[i] for i in order[k:k + args.batch]]
            yield np.stack([x[0] for x in items]), np.stack([x[1] for x in items])
    steps = args.steps_per_epoch or max(1, n_train // args.batch)
    return _Data(make_batches, steps, n_train, None, lambda: ds.params_w.mean(axis=0))


def _distill_data(args, w: _Whitening, out: Path, convention: str, rng, log) -> _Data:
    """Faces found in unlabelled videos / images (--frames), the teacher's parameters as targets,
    the last video held out for validation unless --holdout says otherwise."""
    from export import datasets as D

    teacher = D.TeacherONNX(args.distill_from, device=args.device, threads=args.threads)
    log(f"teacher {args.distill_from} ({teacher.arch or 'unknown arch'}, landmark convention "
        f"{teacher.convention or 'unknown'}) on {teacher.provider}")
    shift = np.zeros(62)
    if args.target_frame == "pixels" and teacher.convention and teacher.convention != convention:
        shift = frame_shift(teacher.convention, convention)
        log(f"targets: teacher params moved from the {teacher.convention} into the {convention} landmark "
            f"convention (translation {shift[3]:+g}, {shift[7]:+g}, {shift[11]:+g}; --target-frame params keeps them)")
    sources = D.expand_sources(args.frames)
    key = D.cache_key(sources, args.distill_from, args.stride)

    def build():
        log(f"detecting faces in {len(sources)} sources (every {args.stride} frames) ...")
        return D.build_face_cache(sources, teacher, stride=args.stride, log=log)
    cache = D.load_or_build_cache(out / "face_cache.npz", key, build, log=log)
    holdout = args.holdout
    if holdout is None:
        vids = [s for s in cache.sources if Path(s).suffix.lower() in D.VIDEO_EXTS]
        holdout = [Path(vids[-1]).name] if len(vids) >= 2 else []
    tr_cache, va_cache = D.split_holdout(cache, holdout)
    if len(tr_cache.group) == 0:
        raise UsageError("--holdout leaves no training faces")
    augment = not args.no_augment
    ds = D.DistillDataset(tr_cache, teacher, w.net_mean, w.net_std, augment=augment, seed=args.seed,
                          target_shift=shift)
    val = (D.DistillDataset(va_cache, teacher, w.net_mean, w.net_std, augment=False, target_shift=shift)
           if len(va_cache.group) else None)
    n_train = len(ds)
    log(f"distillation: {n_train} training faces, {len(va_cache.group)} held-out faces "
        f"({', '.join(holdout) or 'none held out'})")
    steps = args.steps_per_epoch or max(1, math.ceil(n_train / args.batch))

    def make_batches(epoch):
        order = rng.permutation(n_train)
        total = steps * args.batch
        order = np.resize(order, total) if total > n_train else order[:total]
        for k in range(0, len(order), args.batch):
            yield ds.batch(order[k:k + args.batch])

    def target_mean():
        return D.DistillDataset(tr_cache, teacher, w.mean, w.std, augment=False,
                                target_shift=shift).batch(range(n_train))[1].mean(0)
    return _Data(make_batches, steps, n_train, val, target_mean)


def _prepare_model(args, model, data: _Data, log):
    """The network to train: synergynet as loaded (its refinement frozen by the Trainer), any other
    built fresh with its output layer started at the mean target (unless --no-head-init)."""
    if model is None:
        model = build_model(args.arch)
    if args.arch == "synergynet":
        log(f"fine-tuning synergynet from {args.checkpoint}: I2P backbone + heads train, refinement MLPs frozen, "
            "whitening = the checkpoint's param_mean/param_std")
    elif not args.no_head_init:
        head = init_head(model, data.target_mean())
        log(f"output layer {head}: bias = mean training target, weights x0.1")
    return model


def _validator(val, aflw: Optional[AFLWSet]) -> Callable[[Trainer], dict]:
    """The per-epoch validation: NME against the teacher on the held-out faces, and on AFLW2000."""
    import torch

    def validate(tr: Trainer) -> dict:
        rec = {}
        if val is not None:
            crops, tw = val.batch(range(len(val)))
            t_lm = crop_pixels(tr.crit.landmarks(torch.from_numpy(tw).to(tr.device)), tr.convention).cpu().numpy()
            rec["val_nme_teacher"] = float(nme_2d(tr.predict_landmarks(crops), t_lm).mean() * 100)
        if aflw is not None:
            per = aflw.nme(tr.predict_landmarks(aflw.crops))
            rec["val_nme_aflw"] = float(per.mean() * 100)
        return rec
    return validate


def run(args, model=None, log: Callable[[str], None] = _log) -> dict:
    """Train as the CLI does; ``model`` replaces the architecture's network (tests: any nn.Module)."""
    import torch

    from export.losses import FRNetLoss

    _check_args(args)
    synergy = args.arch == "synergynet"
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.arch]
    convention = ARCH_CONVENTION[args.arch]
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    w, model = _load_whitening(args, model)
    out = _writable_out(args.out)
    aflw = AFLWSet(args.aflw) if args.aflw else None
    rng = np.random.default_rng(args.seed)
    data = (_supervised_data(args, w, rng, log) if args.data
            else _distill_data(args, w, out, convention, rng, log))
    model = _prepare_model(args, model, data, log)
    crit = FRNetLoss(w.bfm, w.net_mean, w.net_std, l_wpdc=args.l_wpdc, l_wing=args.l_wing)
    trainer = Trainer(model, crit, out, arch=args.arch, epochs=args.epochs, lr=lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, schedule=args.schedule, warmup_steps=args.warmup,
                      device=args.device, steps_per_epoch=data.steps, log=log, max_minutes=args.max_minutes,
                      convention=convention, weights_suffix=WEIGHTS_SUFFIX[args.arch],
                      weights_state=synergynet_state if synergy else None)
    if args.resume:
        trainer.resume(Path(args.resume))
    config = {k: v for k, v in vars(args).items()} | {
        "param_stats_used": str(w.stats_path) if w.stats_path else None, "lr_used": lr, "n_train": data.n_train,
        "steps_per_epoch": data.steps, "landmark_convention": convention,
        "network_whitening": "checkpoint buffers param_mean/param_std" if synergy else str(w.stats_path)}
    atomic_write_text(out / "train_config.json", json.dumps(config, indent=1))
    log(f"training {args.arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params, "
        f"{args.epochs} epochs x {data.steps} steps x batch {args.batch}, {args.optimizer} lr {lr} {args.schedule}, "
        f"device {args.device} ({torch.get_num_threads()} threads)")
    t0 = time.time()
    last = trainer.fit(data.make_batches, data.steps, _validator(data.val, aflw), args.batch)
    last["total_seconds"] = round(time.time() - t0, 1)
    stats_opt = "" if (synergy or not args.param_stats) else f" --param-stats {w.stats_path}"
    suf = WEIGHTS_SUFFIX[args.arch]
    log(f"done in {last['total_seconds']:.0f} s: {out / ('last' + suf)}, {out / ('best' + suf)}; export with\n"
        f"  python -m export {args.arch} --checkpoint {out / ('best' + suf)} --bfm-dir {w.bfm_dir}{stats_opt} "
        f"--out models/{args.arch}.onnx")
    return last


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    from export import ExportInputError
    from export.datasets import DataError

    try:
        run(args)
    except (UsageError, DataError, ExportInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: current weights in {Path(args.out) / 'interrupted.pth'}; the last complete epoch is "
              f"{Path(args.out) / ('last' + WEIGHTS_SUFFIX.get(args.arch, '.pth'))} (continue with --resume {Path(args.out) / 'resume.pth'})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
