"""Training losses for 62-parameter 3DMM regressors (Mobile-FRNet recipe): WPDC + Wing.

Parameters are the 3DDFA / SynergyNet 62-vector [P (3x4 row-major, = [s*R | t]), 40 shape,
10 expression] over the BFM in ``3dmm_data/``; the network predicts them *whitened*
((p - param_mean) / param_std) and the losses take whitened predictions and targets.

- ``WPDCLoss``: weighted parameter distance cost of 3DDFA (Zhu et al., TPAMI 2017, "Face
  Alignment in Full Pose Range", eq. 7-8): L = sum_i w_i (p_i - g_i)^2 on whitened parameters
  with w_i = ||V(g with g_i replaced by p_i) - V(g)||, the influence of a parameter's error on
  the reconstructed vertices, normalised by the per-sample maximum, detached from the graph.
  V is evaluated on the 68 landmark vertices plus ``resample`` random BFM vertices per call,
  as 3DDFA's ``WPDCLoss(opt_style='resample', resample_num=132)`` does. Because the vertices
  are linear in every single parameter, w_i is closed form: |p_i - g_i| times
    * pose entry P[r, c] (c < 3): the norm of the ground-truth shape's coordinate c over the
      vertices; the translation entries P[r, 3]: sqrt(#vertices);
    * shape/expression alpha_k: ||P_g[:, :3] @ W_k||_F (W_k: the basis vector as 3 x V).
  3DDFA uses a constant "magic" scale (0.00057) times ||W_k|| for the last case; we use the
  ground-truth P instead of that constant (the exact derivative norm). The z translation
  P[2, 3] gets weight 0 (it never affects the 2D image), as in 3DDFA. The loss is averaged over
  the batch and the 62 entries (3DDFA's ``loss.mean()``).
- ``wing_loss``: Wing loss (Feng et al., CVPR 2018): w ln(1 + |x|/eps) for |x| < w, else
  |x| - C with C = w - w ln(1 + w/eps); defaults w = 10, eps = 2 (the paper's). Averaged
  over every coordinate (so it does not grow with the number of points).
- ``FRNetLoss``: L = l_wpdc * WPDC + l_wing * Wing(68 reconstructed 3D landmarks, crop pixels).
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn


# ---------------------------------------------------------------- BFM / parameter statistics
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and lists only (the 3DDFA .pkl files); refuses anything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (only numpy arrays are allowed)")


def load_pickle_arrays(path) -> object:
    """Load a 3DDFA-style .pkl (numpy arrays in dicts/lists) without arbitrary code execution."""
    with open(path, "rb") as f:
        return _NumpyOnlyUnpickler(f, encoding="latin1").load()


def load_param_stats(path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of the 62 parameters from a .pkl with {'param_mean','param_std'} or {'mean','std'}."""
    d = load_pickle_arrays(path)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a dict with param_mean/param_std (or mean/std)")
    for km, ks in (("param_mean", "param_std"), ("mean", "std")):
        if km in d and ks in d:
            mean = np.asarray(d[km], np.float32).reshape(-1)
            std = np.asarray(d[ks], np.float32).reshape(-1)
            if mean.shape != (62,) or std.shape != (62,):
                raise ValueError(f"{path}: {km}/{ks} must have 62 entries, got {mean.shape}/{std.shape}")
            return mean, std
    raise ValueError(f"{path}: no param_mean/param_std (or mean/std) keys, found {sorted(d)}")


class BFMArrays:
    """The BFM of ``3dmm_data/`` as numpy: u (V,3), w (V,3,50) = [40 shape | 10 expression], landmarks (68,)."""

    def __init__(self, u: np.ndarray, w: np.ndarray, landmarks: np.ndarray):
        self.u = np.ascontiguousarray(u, np.float32)          # (V, 3)
        self.w = np.ascontiguousarray(w, np.float32)          # (V, 3, K)
        self.landmarks = np.asarray(landmarks, np.int64)      # (68,) vertex indices

    @classmethod
    def from_dir(cls, bfm_dir) -> "BFMArrays":
        d = Path(bfm_dir)
        names = ["u_shp.npy", "u_exp.npy", "w_shp_sim.npy", "w_exp_sim.npy", "keypoints_sim.npy"]
        for n in names:
            if not (d / n).is_file():
                raise FileNotFoundError(f"{d / n}: missing BFM file (--bfm-dir must be the 3dmm_data folder)")
        u = np.load(d / "u_shp.npy").astype(np.float32) + np.load(d / "u_exp.npy").astype(np.float32)
        w = np.concatenate([np.load(d / "w_shp_sim.npy"), np.load(d / "w_exp_sim.npy")], axis=1).astype(np.float32)
        kp = np.load(d / "keypoints_sim.npy").astype(np.int64)
        if u.size % 3 or w.shape[0] != u.size or w.shape[1] != 50 or kp.shape != (204,):
            raise ValueError(f"{d}: unexpected BFM shapes u {u.shape}, w {w.shape}, keypoints {kp.shape}")
        V = u.size // 3
        return cls(u.reshape(V, 3), w.reshape(V, 3, 50), kp[::3] // 3)

    @property
    def num_vertices(self) -> int:
        return self.u.shape[0]

    def vertices(self, params: np.ndarray, idx=None) -> np.ndarray:
        """De-normalised params (62,) -> (V or len(idx), 3) in the model's crop space (before any flip)."""
        p = np.asarray(params, np.float64)
        P = p[:12].reshape(3, 4)
        u = self.u if idx is None else self.u[idx]
        w = self.w if idx is None else self.w[idx]
        shape = u + w @ p[12:]
        return shape @ P[:, :3].T + P[:, 3]


def reconstruct(params: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """De-normalised params (N, 12+K) -> points (N, V, 3) = P[:, :3] (u + W alpha) + P[:, 3].

    u: (V, 3), w: (V, 3, K). Crop space of the 3DDFA parameterisation (no y flip / x-1 shift).
    """
    N = params.shape[0]
    P = params[:, :12].reshape(N, 3, 4)
    shape = u.unsqueeze(0) + torch.einsum("vck,nk->nvc", w, params[:, 12:])
    return shape @ P[:, :, :3].transpose(1, 2) + P[:, :, 3].unsqueeze(1)


# ---------------------------------------------------------------- losses
def wing_loss(pred: torch.Tensor, target: torch.Tensor, w: float = 10.0, eps: float = 2.0) -> torch.Tensor:
    """Wing loss (Feng et al. CVPR 2018) averaged over every element."""
    x = (pred - target).abs()
    C = w - w * math.log(1.0 + w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - C).mean()


class WPDCLoss(nn.Module):
    """3DDFA's weighted parameter distance cost (see the module docstring for the weights)."""

    def __init__(self, u, w, landmarks, param_mean, param_std, resample: int = 132, eps: float = 1e-6):
        super().__init__()
        self.register_buffer("u", torch.as_tensor(np.asarray(u, np.float32)))            # (V, 3)
        self.register_buffer("w", torch.as_tensor(np.asarray(w, np.float32)))            # (V, 3, K)
        self.register_buffer("landmarks", torch.as_tensor(np.asarray(landmarks, np.int64)))
        self.register_buffer("mean", torch.as_tensor(np.asarray(param_mean, np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(param_std, np.float32)))
        self.resample = int(resample)
        self.eps = float(eps)

    def _vertex_subset(self) -> torch.Tensor:
        if self.resample <= 0:
            return self.landmarks
        extra = torch.randint(0, self.u.shape[0], (self.resample,), device=self.u.device)
        return torch.cat([self.landmarks, extra])

    @torch.no_grad()
    def weights(self, pred_w: torch.Tensor, target_w: torch.Tensor, idx=None) -> torch.Tensor:
        """Per-sample, per-parameter weights (N, 12+K), max-normalised, z translation 0."""
        idx = self._vertex_subset() if idx is None else idx
        pred = pred_w * self.std + self.mean
        gt = target_w * self.std + self.mean
        N, D = gt.shape
        u, w = self.u[idx], self.w[idx]
        shape = u.unsqueeze(0) + torch.einsum("vck,nk->nvc", w, gt[:, 12:])      # (N, v, 3)
        coord_norm = shape.norm(dim=1)                                           # (N, 3)
        diff = (pred - gt).abs()
        weights = torch.zeros_like(gt)
        for r in range(3):
            weights[:, 4 * r:4 * r + 3] = diff[:, 4 * r:4 * r + 3] * coord_norm
            weights[:, 4 * r + 3] = diff[:, 4 * r + 3] * math.sqrt(len(idx))
        R = gt[:, :12].reshape(N, 3, 4)[:, :, :3]
        basis_norm = torch.einsum("nrc,vck->nvrk", R, w).pow(2).sum(dim=(1, 2)).sqrt()   # (N, K)
        weights[:, 12:] = diff[:, 12:] * basis_norm
        weights = weights + self.eps
        weights[:, 11] = 0.0
        return weights / weights.max(dim=1, keepdim=True).values

    def forward(self, pred_w: torch.Tensor, target_w: torch.Tensor, idx=None) -> torch.Tensor:
        wts = self.weights(pred_w.detach(), target_w, idx)
        return (wts * (pred_w - target_w) ** 2).mean()


class FRNetLoss(nn.Module):
    """L = l_wpdc * WPDC + l_wing * Wing(68 landmarks in crop pixels). Takes whitened params."""

    def __init__(self, bfm: BFMArrays, param_mean, param_std, *, l_wpdc: float = 1.0, l_wing: float = 0.1,
                 wing_w: float = 10.0, wing_eps: float = 2.0, resample: int = 132):
        super().__init__()
        self.wpdc = WPDCLoss(bfm.u, bfm.w, bfm.landmarks, param_mean, param_std, resample=resample)
        self.register_buffer("u68", torch.as_tensor(bfm.u[bfm.landmarks]))
        self.register_buffer("w68", torch.as_tensor(bfm.w[bfm.landmarks]))
        self.l_wpdc, self.l_wing = float(l_wpdc), float(l_wing)
        self.wing_w, self.wing_eps = float(wing_w), float(wing_eps)

    def landmarks(self, params_w: torch.Tensor) -> torch.Tensor:
        """Whitened params (N, 62) -> (N, 68, 3) landmarks in crop space (3DDFA parameterisation)."""
        return reconstruct(params_w * self.wpdc.std + self.wpdc.mean, self.u68, self.w68)

    def forward(self, pred_w: torch.Tensor, target_w: torch.Tensor) -> dict:
        wpdc = self.wpdc(pred_w, target_w)
        wing = wing_loss(self.landmarks(pred_w), self.landmarks(target_w), self.wing_w, self.wing_eps)
        return {"loss": self.l_wpdc * wpdc + self.l_wing * wing, "wpdc": wpdc.detach(), "wing": wing.detach()}
