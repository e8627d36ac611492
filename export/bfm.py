"""BFM loading (3dmm_data layout, 3DDFA-V2's neck-less subset) and 62-d parameter statistics.

Everything is validated; a bad file raises ExportInputError naming it. Pickles are read with a
restricted unpickler that only rebuilds numpy arrays (no arbitrary code).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from export import ExportInputError

N_VERTS = 53215


@dataclass
class DenseBasis:
    u: np.ndarray                    # (3V,) float32, interleaved x, y, z per vertex
    w: np.ndarray                    # (3V, 50) float32: 40 shape then 10 expression columns
    triangles: Optional[np.ndarray]  # (T, 3) int32, 0-based, or None when unknown
    mesh: str                        # "full" | "noneck"

    @property
    def n_vertices(self) -> int:
        return self.u.shape[0] // 3


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def safe_pickle_load(path) -> object:
    p = Path(path)
    if not p.is_file():
        raise ExportInputError(f"file not found: {p} (check the path)")
    try:
        with open(p, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise ExportInputError(f"{p} is not a plain pickle of numpy arrays ({e}); "
                               "give a .pkl holding only numpy arrays") from None
    except Exception as e:  # truncated, not a pickle at all
        raise ExportInputError(f"{p} cannot be read as a pickle ({type(e).__name__}: {str(e)[:120]}); "
                               "give the .pkl file itself") from None


def load_param_stats(path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) (62,) float32 from {'mean','std'} (3DDFA-V2) or {'param_mean','param_std'} (3dmm_data)."""
    d = safe_pickle_load(path)
    if not isinstance(d, dict):
        raise ExportInputError(f"{path} holds a {type(d).__name__}, expected a dict with mean/std")
    for km, ks in (("mean", "std"), ("param_mean", "param_std")):
        if km in d and ks in d:
            mean = np.asarray(d[km], dtype=np.float32).reshape(-1)
            std = np.asarray(d[ks], dtype=np.float32).reshape(-1)
            if mean.shape != (62,) or std.shape != (62,):
                raise ExportInputError(f"{path}: mean/std have shapes {mean.shape}/{std.shape}, expected (62,)")
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
                raise ExportInputError(f"{path}: mean/std contain NaN or inf")
            return mean, std
    raise ExportInputError(f"{path} has keys {sorted(map(str, d))[:6]}, expected 'mean'/'std' or "
                           "'param_mean'/'param_std'")


def _npy(path: Path, shape_tail=None, dtype=None) -> np.ndarray:
    if not path.is_file():
        raise ExportInputError(f"BFM file missing: {path} (the BFM folder needs u_shp.npy, u_exp.npy, "
                               "w_shp_sim.npy, w_exp_sim.npy, keypoints_sim.npy, tri.mat)")
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ExportInputError(f"BFM file {path} is not a readable .npy ({type(e).__name__}: {str(e)[:100]}); "
                               "restore it from the BFM distribution") from None
    return a


def _expect(a: np.ndarray, shape: tuple, path: Path) -> np.ndarray:
    if a.shape != shape:
        raise ExportInputError(f"BFM file {path} has shape {a.shape}, expected {shape}; "
                               "restore it from the BFM distribution")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ExportInputError(f"BFM file {path} contains NaN or inf")
    return a


def load_bfm_arrays(bfm_dir) -> dict:
    """u (3V,), w (3V,50), keypoints (204,) from a 3dmm_data folder (u = u_shp + u_exp)."""
    d = Path(bfm_dir)
    if not d.is_dir():
        raise ExportInputError(f"BFM folder not found: {d} (give --bfm-dir the 3dmm_data folder)")
    n = 3 * N_VERTS
    u_shp = _expect(_npy(d / "u_shp.npy"), (n, 1), d / "u_shp.npy")
    u_exp = _expect(_npy(d / "u_exp.npy"), (n, 1), d / "u_exp.npy")
    w_shp = _expect(_npy(d / "w_shp_sim.npy"), (n, 40), d / "w_shp_sim.npy")
    w_exp = _expect(_npy(d / "w_exp_sim.npy"), (n, 10), d / "w_exp_sim.npy")
    kp = _expect(_npy(d / "keypoints_sim.npy"), (204,), d / "keypoints_sim.npy")
    if kp.dtype.kind not in "iu" or kp.min() < 0 or kp.max() >= n:
        raise ExportInputError(f"BFM file {d / 'keypoints_sim.npy'} does not hold 204 row indices < {n}")
    return {"u": (u_shp + u_exp)[:, 0].astype(np.float32),
            "w": np.concatenate([w_shp, w_exp], 1).astype(np.float32),
            "keypoints": kp.astype(np.int64)}


def load_full_triangles(bfm_dir) -> np.ndarray:
    """(T, 3) int32 0-based from <bfm_dir>/tri.mat ({'tri': 3 x T, 1-based})."""
    p = Path(bfm_dir) / "tri.mat"
    if not p.is_file():
        raise ExportInputError(f"BFM file missing: {p} (needed for the triangles; restore it or use --mesh noneck)")
    try:
        import scipy.io
        tri = scipy.io.loadmat(str(p))["tri"]
    except Exception as e:
        raise ExportInputError(f"BFM file {p} is not a MATLAB file with 'tri' ({type(e).__name__}: "
                               f"{str(e)[:100]}); restore it from the BFM distribution") from None
    tri = np.asarray(tri)
    if tri.ndim != 2 or 3 not in tri.shape:
        raise ExportInputError(f"BFM file {p}: 'tri' has shape {tri.shape}, expected 3 x T")
    tri = (tri if tri.shape[0] == 3 else tri.T).T.astype(np.int64) - 1
    if tri.min() < 0 or tri.max() >= N_VERTS:
        raise ExportInputError(f"BFM file {p}: triangle indices outside 1..{N_VERTS}")
    return tri.astype(np.int32)


def load_noneck(noneck_dir) -> tuple[np.ndarray, np.ndarray]:
    """(indices (38365,) into the 53215 BFM vertices, triangles (T, 3) int32 into the kept vertices)."""
    d = Path(noneck_dir)
    if not d.is_dir():
        raise ExportInputError(f"noneck mesh folder not found: {d} (give --noneck-dir, holding indices.npy and tri.npy)")
    idx = _npy(d / "indices.npy").reshape(-1)
    tri = _npy(d / "tri.npy")
    if idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= N_VERTS:
        raise ExportInputError(f"{d / 'indices.npy'}: expected vertex indices in 0..{N_VERTS - 1}")
    if tri.ndim != 2 or tri.shape[0] != 3:
        raise ExportInputError(f"{d / 'tri.npy'} has shape {tri.shape}, expected 3 x T")
    tri = tri.T.astype(np.int64)
    if tri.min() < 0 or tri.max() >= idx.size:
        raise ExportInputError(f"{d / 'tri.npy'}: triangle indices outside the {idx.size} kept vertices")
    return idx.astype(np.int64), tri.astype(np.int32)


def select_mesh(u: np.ndarray, w: np.ndarray, triangles: Optional[np.ndarray], mesh: str,
                noneck_dir=None) -> DenseBasis:
    """Dense basis for the chosen mesh: 'full' (53215 vertices) or 'noneck' (3DDFA-V2's 38365)."""
    u = np.asarray(u, dtype=np.float32).reshape(-1)
    w = np.asarray(w, dtype=np.float32)
    if mesh == "full":
        return DenseBasis(u, w, triangles, "full")
    if mesh != "noneck":
        raise ExportInputError(f"unknown --mesh {mesh!r}: use full or noneck")
    if noneck_dir is None:
        raise ExportInputError("--mesh noneck needs --noneck-dir (or a --bfm-dir with ../noneck beside it)")
    idx, tri = load_noneck(noneck_dir)
    rows = (3 * idx[:, None] + np.arange(3)[None, :]).reshape(-1)
    return DenseBasis(u[rows].copy(), w[rows].copy(), tri, "noneck")
