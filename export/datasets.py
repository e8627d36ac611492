"""Training data for 62-parameter regressors: the 3DDFA / SynergyNet 300W-LP layout, and
distillation from a teacher ONNX model on unlabelled face frames.

Supervised layout (as 3DDFA / SynergyNet publish it), under ``--data DIR``::

    DIR/train_aug_120x120/*.jpg                 120x120 BGR crops
    DIR/train_aug_120x120.list.train            one image file name per line (relative to the folder)
    DIR/param_all_norm_v201.pkl | .npy          (N, 62) parameters, whitened with the stats below

The list and the parameter file are also looked up in ``DIR/train.configs/`` (3DDFA) and
``DIR/3dmm_data/`` (SynergyNet), or given with ``--list`` / ``--params``. ``param_all_norm.pkl``
(3DDFA v1 name) is accepted too. The whitening statistics are SynergyNet's
``3dmm_data/param_whitening.pkl`` unless ``--param-stats`` names others (the export must use the
same ones).

Geometry conventions (crop of ``size`` = 120 px): a de-normalised parameter vector gives model
points (x, y, z) = P[:, :3] (u + W alpha) + P[:, 3]; as 3DDFA-V2 does, crop pixel column =
x - 1 and row = size - y. Augmentations act on the crop and on the target together:
``transform_params`` applies a crop-space similarity to P; ``ParamFlipper`` mirrors a parameter
vector for a horizontally flipped crop (pose mirrored, shape/expression refitted through the
BFM's left/right vertex correspondence; see its docstring for the residual).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

from app.core import geometry
from export.losses import BFMArrays, load_pickle_arrays

SIZE = 120
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class DataError(Exception):
    """Bad training input (missing folder/list/params, undecodable image, bad teacher): exit 2."""


# ---------------------------------------------------------------- target geometry
def transform_params(params: np.ndarray, M: np.ndarray, size: int = SIZE) -> np.ndarray:
    """De-normalised params for a crop warped by the 2x3 similarity ``M`` (crop pixels -> new crop pixels)."""
    M = np.asarray(M, np.float64)
    A, b = M[:, :2], M[:, 2]
    # model xy -> pixel: G(x, y) = (x - 1, size - y); new model xy = G^-1(M(G(xy)))
    F = np.diag([1.0, -1.0])
    L = F @ A @ F
    g_off = np.array([-1.0, float(size)])
    o = F @ (A @ g_off + b - g_off)
    p = np.asarray(params, np.float64).copy()
    P = p[:12].reshape(3, 4)
    Pn = P.copy()
    Pn[:2, :] = L @ P[:2, :]
    Pn[:2, 3] += o
    Pn[2, :] = P[2, :] * math.sqrt(abs(np.linalg.det(A)))
    p[:12] = Pn.reshape(-1)
    return p


class ParamFlipper:
    """Parameters of the horizontally mirrored crop (cv2.flip(img, 1): column c -> size-1-c).

    The BFM is (nearly) left/right symmetric about a plane x = c0. Vertex j of the mirrored face
    is the mirror image of vertex pi(j) (nearest neighbour of the mirrored mean shape), so the
    mirrored shape is refitted once as a linear map alpha' = A alpha + b (least squares over a
    fixed vertex subset: the 68 landmarks + every 16th vertex), and the pose becomes
    P' = M P D (M: image mirror, D: model mirror) with the matching translation. On the real BFM
    the landmarks of flip(p) match the mirrored landmarks of p within ~1 px of a 120 px crop
    (measured in tests/test_train_data.py); flipping twice returns p within the same error.
    """

    def __init__(self, bfm: BFMArrays, size: int = SIZE, stride: int = 16):
        from scipy.spatial import cKDTree

        u = bfm.u.astype(np.float64)
        tree = cKDTree(u)
        m = u.copy()
        m[:, 0] = -m[:, 0]
        _, idx = tree.query(m)
        c0 = float(np.median((u[:, 0] + u[idx, 0]) / 2.0))
        m[:, 0] = 2 * c0 - u[:, 0]
        _, perm = tree.query(m)
        self.perm, self.c0, self.size = perm, c0, size
        sub = np.unique(np.concatenate([bfm.landmarks, np.arange(0, len(u), stride)]))
        D = np.diag([-1.0, 1.0, 1.0])
        w = bfm.w.astype(np.float64)
        K = w.shape[2]
        W_sub = w[sub].reshape(-1, K)
        Wm = np.einsum("rc,vck->vrk", D, w[perm[sub]]).reshape(-1, K)
        um = (u[perm[sub]] @ D.T + np.array([2 * c0, 0, 0])) - u[sub]
        self.A = np.linalg.lstsq(W_sub, Wm, rcond=None)[0]
        self.b = np.linalg.lstsq(W_sub, um.reshape(-1), rcond=None)[0]
        self.D = D

    def __call__(self, params: np.ndarray) -> np.ndarray:
        p = np.asarray(params, np.float64).copy()
        P = p[:12].reshape(3, 4)
        M = np.diag([-1.0, 1.0, 1.0])
        e = np.array([2 * self.c0, 0.0, 0.0])
        R = M @ P[:, :3] @ self.D
        # pixel column c -> size-1-c, column = x - 1  =>  x' = size + 1 - x
        t = M @ P[:, 3] + np.array([self.size + 1.0, 0, 0]) - R @ e
        out = p.copy()
        out[:12] = np.concatenate([R, t[:, None]], axis=1).reshape(-1)
        out[12:] = self.A @ p[12:] + self.b
        return out


# iBUG 300-W 68-point left/right correspondence (for checking flips)
IBUG_FLIP = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65])


# ---------------------------------------------------------------- photometric / geometric jitter
def colour_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness +-25, contrast x[0.75, 1.25], saturation x[0.6, 1.4], per-channel gain +-8 %, 10 % grey."""
    x = img.astype(np.float32)
    if rng.random() < 0.1 * strength:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        x = np.repeat(g[:, :, None], 3, axis=2)
    else:
        grey = x.mean(axis=2, keepdims=True)
        x = grey + (x - grey) * (1 + strength * rng.uniform(-0.4, 0.4))
        x = x * (1 + strength * rng.uniform(-0.08, 0.08, size=3)).astype(np.float32)
    m = x.mean()
    x = (x - m) * (1 + strength * rng.uniform(-0.25, 0.25)) + m + strength * rng.uniform(-25, 25)
    return np.clip(x, 0, 255).astype(np.uint8)


def random_similarity(rng: np.random.Generator, size: int = SIZE, rot_deg: float = 10.0, scale: float = 0.05,
                      shift: float = 4.0) -> np.ndarray:
    """2x3 similarity about the crop centre: rotation +-rot_deg, scale 1 +- scale, shift +-shift px."""
    a = math.radians(rng.uniform(-rot_deg, rot_deg))
    s = 1.0 + rng.uniform(-scale, scale)
    c = (size - 1) / 2.0
    M = cv2.getRotationMatrix2D((c, c), math.degrees(a), s)
    M[:, 2] += rng.uniform(-shift, shift, size=2)
    return M


# ---------------------------------------------------------------- supervised (300W-LP layout)
class _held_stderr:
    """Hold back what C libraries (libjpeg via cv2) print on file descriptor 2; ``.text`` afterwards."""

    def __enter__(self):
        import sys
        import tempfile

        self.text = ""
        try:
            sys.stderr.flush()
            self._tmp = tempfile.TemporaryFile(mode="w+b")
            self._saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except (OSError, ValueError):   # no real fd 2 (embedded interpreters): leave stderr alone
            self._saved = None
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            os.dup2(self._saved, 2)
            os.close(self._saved)
            self._tmp.seek(0)
            self.text = self._tmp.read().decode("utf-8", "replace")
            self._tmp.close()
        return False


def _find(data: Path, names: Sequence[str]) -> Optional[Path]:
    for sub in ("", "train.configs", "3dmm_data", "configs"):
        for n in names:
            p = data / sub / n
            if p.is_file():
                return p
    return None


def load_param_file(path: Path) -> np.ndarray:
    try:
        arr = np.load(path) if path.suffix == ".npy" else load_pickle_arrays(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read the parameter file ({e}); give a (N, 62) .pkl or .npy")
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 62:
        raise DataError(f"{path}: parameters must be (N, 62), got {arr.shape}")
    return arr


class SupervisedDataset:
    """120x120 crops + whitened 62-parameter targets in the 3DDFA / SynergyNet layout.

    ``param_mean/param_std`` de-whiten the parameter file; the targets are whitened again with
    ``target_mean/target_std`` (default: the same), e.g. a SynergyNet checkpoint's own buffers.
    """

    def __init__(self, data_dir, *, list_file=None, param_file=None, image_dir=None, param_mean, param_std,
                 augment: bool = True, flipper: Optional[ParamFlipper] = None, seed: int = 0,
                 target_mean=None, target_std=None):
        data = Path(data_dir)
        if not data.is_dir():
            raise DataError(f"--data {data}: not a directory (give the folder holding train_aug_120x120/)")
        self.image_dir = Path(image_dir) if image_dir else data / "train_aug_120x120"
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: image folder missing (expected DIR/train_aug_120x120/ with the crops)")
        lst = Path(list_file) if list_file else _find(data, ["train_aug_120x120.list.train"])
        if lst is None or not lst.is_file():
            raise DataError(f"{data}: no train_aug_120x120.list.train (looked in ., train.configs/, 3dmm_data/); "
                            "give --list FILE")
        pf = Path(param_file) if param_file else _find(
            data, ["param_all_norm_v201.pkl", "param_all_norm_v201.npy", "param_all_norm.pkl", "param_all_norm.npy"])
        if pf is None or not pf.is_file():
            raise DataError(f"{data}: no param_all_norm_v201.pkl/.npy (looked in ., train.configs/, 3dmm_data/); "
                            "give --params FILE")
        self.names = [ln.strip() for ln in lst.read_text().splitlines() if ln.strip()]
        self.params_w = load_param_file(pf)
        if len(self.names) != len(self.params_w):
            raise DataError(f"{lst} lists {len(self.names)} images but {pf} holds {len(self.params_w)} parameter rows")
        if not self.names:
            raise DataError(f"{lst}: empty image list")
        missing = [n for n in self.names[:1000] if not (self.image_dir / n).is_file()]
        if missing:
            raise DataError(f"{self.image_dir / missing[0]}: listed in {lst} but missing ({len(missing)} of the "
                            f"first {min(1000, len(self.names))} missing)")
        self.mean = np.asarray(param_mean, np.float64)
        self.std = np.asarray(param_std, np.float64)
        self.t_mean = self.mean if target_mean is None else np.asarray(target_mean, np.float64)
        self.t_std = self.std if target_std is None else np.asarray(target_std, np.float64)
        self.augment, self.flipper = augment, flipper
        self.rng = np.random.default_rng(seed)
        self.list_file, self.param_file = lst, pf

    def __len__(self) -> int:
        return len(self.names)

    def check_images(self, threads: int = 1, chunk: int = 256) -> float:
        """Pre-scan: every listed image exists, decodes (cv2, as training reads it) and, for JPEG, is not truncated.

        Raises DataError naming the first bad file (its line in the list) and how many are bad, before
        any training; returns the seconds it took. cv2.imread accepts a truncated JPEG (libjpeg fills
        the rest with grey and prints a warning), hence the end-of-image marker check. The decoder's own
        warnings on stderr are held back during the scan and kept in ``self.decoder_warnings``.
        cv2 releases the GIL, so ``threads`` > 1 overlaps reads.
        """
        t0 = time.time()
        names = self.names

        def bad(i: int) -> Optional[str]:
            path = self.image_dir / names[i]
            try:
                data = path.read_bytes()
            except OSError:
                return "listed but missing" if not path.exists() else "cannot be read"
            if not data:
                return "image is empty (0 bytes)"
            if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
                return "image is truncated (no JPEG end marker)"
            try:
                img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            except cv2.error:
                img = None
            return None if img is not None else "image does not decode"

        with _held_stderr() as held:
            if threads > 1:
                from concurrent.futures import ThreadPoolExecutor
                with ThreadPoolExecutor(threads) as ex:
                    res = list(ex.map(bad, range(len(names)), chunksize=chunk))
            else:
                res = [bad(i) for i in range(len(names))]
        self.decoder_warnings = sorted(set(ln.strip() for ln in held.text.splitlines() if ln.strip()))
        failed = [i for i, r in enumerate(res) if r is not None]
        if failed:
            i = failed[0]
            raise DataError(f"{self.image_dir / names[i]}: {res[i]} (line {i + 1} of {self.list_file}; {len(failed)} of "
                            f"{len(names)} listed images unreadable: re-extract the dataset or remove them from the list)")
        return time.time() - t0

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.image_dir / self.names[i]
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{path}: image does not decode (re-extract the dataset or remove it from the list)")
        if img.shape[:2] != (SIZE, SIZE):
            img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
        p = self.params_w[i].astype(np.float64) * self.std + self.mean
        if self.augment:
            r = self.rng
            if self.flipper is not None and r.random() < 0.5:
                img = cv2.flip(img, 1)
                p = self.flipper(p)
            M = random_similarity(r)
            img = cv2.warpAffine(img, M, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            p = transform_params(p, M)
            img = colour_jitter(img, r)
        return img, ((p - self.t_mean) / self.t_std).astype(np.float32)


# ---------------------------------------------------------------- teacher
class TeacherONNX:
    """A model following the export contract: input ``image`` uint8 [N,120,120,3] BGR -> ``params`` [N,62]."""

    def __init__(self, path, device: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        self.path = str(path)
        if not os.path.isfile(self.path):
            raise DataError(f"--distill-from {self.path}: file not found (export one with `python -m export 3ddfa-v2 ...`)")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        provs = (["CUDAExecutionProvider"] if device == "cuda" else []) + ["CPUExecutionProvider"]
        try:
            self.sess = ort.InferenceSession(self.path, sess_options=so, providers=provs)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"--distill-from {self.path}: not a loadable ONNX model ({first[:200]})")
        self.provider = self.sess.get_providers()[0]
        ins = {i.name: i for i in self.sess.get_inputs()}
        outs = {o.name: o for o in self.sess.get_outputs()}
        i = ins.get("image")
        o = outs.get("params")
        bad = []
        if i is None or i.type != "tensor(uint8)" or list(i.shape)[1:] != [SIZE, SIZE, 3]:
            bad.append(f"input 'image' uint8 [N,{SIZE},{SIZE},3] (has "
                       + ", ".join(f"{x.name} {x.type} {list(x.shape)}" for x in ins.values()) + ")")
        if o is None or (len(o.shape) != 2 or o.shape[1] != 62):
            bad.append("output 'params' [N,62] (has " + ", ".join(f"{x.name} {list(x.shape)}" for x in outs.values()) + ")")
        if bad:
            raise DataError(f"--distill-from {self.path}: does not follow the export contract: needs {'; '.join(bad)}")
        meta = self.sess.get_modelmeta().custom_metadata_map
        self.arch = meta.get("arch", "")
        # how the teacher's own landmarks are drawn from its params (export.contract.CONVENTIONS); '' = unknown
        self.convention = meta.get("landmark_convention", "")
        from export.contract import CONVENTIONS
        if self.convention not in CONVENTIONS:
            self.convention = ""

    def __call__(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        out = [self.sess.run(["params"], {"image": np.ascontiguousarray(crops[k:k + batch])})[0]
               for k in range(0, len(crops), batch)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 62))


# ---------------------------------------------------------------- distillation face cache
CTX = 192          # context crop side in pixels
CTX_SCALE = 1.6    # context side / roi side


@dataclass
class FaceCache:
    contexts: np.ndarray   # (N, CTX, CTX, 3) uint8, each centred on its face's roi box
    rois: np.ndarray       # (N, 2, 4) roi boxes in context pixels: [0] detector policy, [1] landmark policy
    group: np.ndarray      # (N,) int: source index (one clip / image folder)
    sources: list          # source names, by group
    frames: np.ndarray     # (N,) frame index inside the source

    def subset(self, mask: np.ndarray) -> "FaceCache":
        return FaceCache(self.contexts[mask], self.rois[mask], self.group[mask], self.sources, self.frames[mask])


def expand_sources(specs: Sequence[str]) -> list[Path]:
    """Videos, images and folders of them (folders not recursive) -> sorted files."""
    out = []
    for s in specs:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
            if not files:
                raise DataError(f"--frames {p}: folder holds no images or videos ({', '.join(IMAGE_EXTS + VIDEO_EXTS)})")
            out.extend(files)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_EXTS + VIDEO_EXTS:
                raise DataError(f"--frames {p}: not an image or video file ({', '.join(IMAGE_EXTS + VIDEO_EXTS)})")
            out.append(p)
        else:
            raise DataError(f"--frames {p}: no such file or folder")
    return out


def _iter_frames(path: Path, stride: int):
    if path.suffix.lower() in IMAGE_EXTS:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"{path}: image does not decode (remove it or replace it)")
        yield 0, img
        return
    from app.io.capture import open_source   # applies the display rotation of phone clips

    src = open_source(str(path))
    try:
        for fr in src:
            if fr.index % stride == 0:
                yield fr.index, fr.image
    finally:
        src.stop()      # an early exit (the caller stops iterating) ends the decode thread too


def _context_for(img: np.ndarray, rois: np.ndarray):
    """Square context around the rois (CTX_SCALE x the larger side), resampled to CTX px; rois mapped inside it."""
    c = rois[0, :2] / 2 + rois[0, 2:] / 2
    side = CTX_SCALE * max(float((rois[:, 2] - rois[:, 0]).max()), 1.0)
    side += 2 * float(np.abs(rois[1, :2] / 2 + rois[1, 2:] / 2 - c).max())
    box = np.array([c[0] - side / 2, c[1] - side / 2, c[0] + side / 2, c[1] + side / 2])
    M = geometry.crop_affine(box, CTX)
    ctx = cv2.warpAffine(img, M, (CTX, CTX), flags=cv2.INTER_AREA if side > 2 * CTX else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT)
    k = CTX / side
    mapped = np.stack([(r - np.array([box[0], box[1], box[0], box[1]])) * k for r in rois])
    return ctx, mapped


def build_face_cache(sources: Sequence[Path], teacher: TeacherONNX, *, stride: int = 2,
                     min_confidence: float = 0.6, max_faces: int = 4, min_face: int = 40,
                     log: Callable[[str], None] = print) -> FaceCache:
    """Detect faces (app.detect BlazeFace) in every ``stride``-th frame and keep context crops."""
    from app.detect import FaceDetector

    det = FaceDetector(min_confidence)
    ctxs, rois, groups, frames = [], [], [], []
    try:
        for g, path in enumerate(sources):
            n0 = len(ctxs)
            for fi, img in _iter_frames(path, stride):
                for d in det(img, max_faces=max_faces):
                    if min(d.box[2] - d.box[0], d.box[3] - d.box[1]) < min_face:
                        continue
                    roi_d = geometry.roi_box_from_bbox(d.box)
                    crop = cv2.warpAffine(img, geometry.crop_affine(roi_d), (SIZE, SIZE), flags=cv2.INTER_LINEAR)
                    p = teacher(crop[None])[0]
                    lm = landmarks_pixels(p)                      # crop pixels
                    k = (roi_d[2] - roi_d[0]) / SIZE
                    lm_img = lm * k + roi_d[:2]
                    roi_l = geometry.roi_box_from_landmarks(lm_img)
                    ctx, mapped = _context_for(img, np.stack([roi_d, roi_l]))
                    ctxs.append(ctx)
                    rois.append(mapped)
                    groups.append(g)
                    frames.append(fi)
            log(f"  {path.name}: {len(ctxs) - n0} faces")
    finally:
        det.close()
    if not ctxs:
        raise DataError("no face was detected in --frames (give videos/images with visible faces)")
    return FaceCache(np.stack(ctxs), np.stack(rois).astype(np.float64), np.array(groups), [str(s) for s in sources],
                     np.array(frames))


_BFM68 = {}


def set_landmark_bfm(bfm: BFMArrays) -> None:
    _BFM68["u"], _BFM68["w"] = bfm.u[bfm.landmarks].astype(np.float64), bfm.w[bfm.landmarks].astype(np.float64)


def landmarks_pixels(params: np.ndarray) -> np.ndarray:
    """De-normalised params (62,) -> (68, 2) crop pixel coordinates (column = x - 1, row = 120 - y)."""
    if "u" not in _BFM68:
        raise RuntimeError("set_landmark_bfm(bfm) first")
    p = np.asarray(params, np.float64)
    P = p[:12].reshape(3, 4)
    pts = (_BFM68["u"] + _BFM68["w"] @ p[12:]) @ P[:, :3].T + P[:, 3]
    return np.stack([pts[:, 0] - 1.0, SIZE - pts[:, 1]], axis=1)


def cache_key(sources: Sequence[Path], teacher_path: str, stride: int) -> str:
    h = hashlib.sha256()
    for s in list(sources) + [Path(teacher_path)]:
        st = s.stat()
        h.update(f"{s.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode())
    h.update(f"{stride}|blazeface_short|{CTX}|{CTX_SCALE}|v2".encode())
    return h.hexdigest()[:16]


def load_or_build_cache(path: Path, key: str, build: Callable[[], FaceCache], log=print) -> FaceCache:
    if path.is_file():
        try:
            z = np.load(path, allow_pickle=False)
            if str(z["key"]) == key:
                log(f"face cache: {path} ({len(z['group'])} faces)")
                return FaceCache(z["contexts"], z["rois"], z["group"], json.loads(str(z["sources"])), z["frames"])
        except Exception as e:   # a stale or broken cache is rebuilt, and we say so
            log(f"face cache {path} unreadable ({e}); rebuilding")
    fc = build()
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, key=key, contexts=fc.contexts, rois=fc.rois, group=fc.group, sources=json.dumps(fc.sources),
             frames=fc.frames)
    os.replace(tmp, path)
    log(f"face cache written: {path} ({len(fc.group)} faces)")
    return fc


class DistillDataset:
    """Jittered 120x120 crops from cached face contexts; targets = teacher params on the same crop.

    Per sample: the detector-policy or landmark-policy roi (50/50), scale x[0.9, 1.15], shift
    +-6 % of the side, rotation +-15 deg, horizontal flip 50 %, colour jitter. The teacher runs
    on the final crop (batched in ``batch()``), so flips and rotations need no target algebra.
    ``augment=False`` gives the plain detector-policy crop (validation).
    """

    def __init__(self, cache: FaceCache, teacher: TeacherONNX, param_mean, param_std, *, augment: bool = True,
                 seed: int = 0, target_shift=None):
        self.cache, self.teacher, self.augment = cache, teacher, augment
        self.mean = np.asarray(param_mean, np.float64)
        self.std = np.asarray(param_std, np.float64)
        # added to the teacher's de-normalised params (export.train.frame_shift: another landmark convention)
        self.shift = np.zeros(62) if target_shift is None else np.asarray(target_shift, np.float64)
        self.rng = np.random.default_rng(seed)
        self._fixed: Optional[tuple] = None

    def __len__(self) -> int:
        return len(self.cache.group)

    def crop(self, i: int) -> np.ndarray:
        r = self.rng
        if not self.augment:
            roi = self.cache.rois[i, 0]
            return cv2.warpAffine(self.cache.contexts[i], geometry.crop_affine(roi), (SIZE, SIZE), flags=cv2.INTER_LINEAR)
        roi = self.cache.rois[i, int(r.random() < 0.5)]
        side = roi[2] - roi[0]
        c = (roi[:2] + roi[2:]) / 2 + r.uniform(-0.06, 0.06, size=2) * side
        side *= r.uniform(0.9, 1.15)
        k = SIZE / side
        a = r.uniform(-15, 15)
        # context point -> crop: rotate about the roi centre, scale, move the centre to the crop centre
        M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), a, k)
        M[:, 2] += np.array([SIZE / 2.0, SIZE / 2.0]) - c
        img = cv2.warpAffine(self.cache.contexts[i], M, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT)
        if r.random() < 0.5:
            img = cv2.flip(img, 1)
        return colour_jitter(img, r)

    def batch(self, idx: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(crops uint8 (B,120,120,3), whitened teacher params float32 (B,62))."""
        if not self.augment:
            if self._fixed is None:
                crops = np.stack([self.crop(i) for i in range(len(self))])
                self._fixed = (crops, self._whiten(self.teacher(crops)))
            return self._fixed[0][list(idx)], self._fixed[1][list(idx)]
        crops = np.stack([self.crop(i) for i in idx])
        return crops, self._whiten(self.teacher(crops))

    def _whiten(self, p: np.ndarray) -> np.ndarray:
        return ((p + self.shift - self.mean) / self.std).astype(np.float32)


def split_holdout(cache: FaceCache, holdout: Sequence[str]) -> tuple[FaceCache, FaceCache]:
    """Hold out whole sources whose file name contains any of ``holdout``."""
    held = np.array([any(h in Path(s).name for h in holdout) for s in cache.sources])
    if holdout and not held.any():
        raise DataError(f"--holdout {' '.join(holdout)}: matches no --frames source ({', '.join(Path(s).name for s in cache.sources)})")
    mask = held[cache.group]
    return cache.subset(~mask), cache.subset(mask)

