"""One Euro filter (Casiez, Roussel, Vogel, CHI 2012), vectorised over any array shape.

A first-order low-pass filter whose cutoff rises with the signal's speed:

    alpha(fc, dt) = 1 / (1 + tau / dt),  tau = 1 / (2 pi fc)
    dx_hat  = alpha(d_cutoff, dt) * (x - x_hat_prev) / dt + (1 - alpha) * dx_hat_prev
    fc      = min_cutoff + beta * |dx_hat|
    x_hat   = alpha(fc, dt) * x + (1 - alpha) * x_hat_prev

Each element has its own cutoff, so one filter smooths 68x3 landmarks, a (V, 3) dense mesh or the
3 head angles in a few numpy operations. Time comes from the frame timestamps (seconds), so the
smoothing is the same at any frame rate and with dropped frames.

- ``min_cutoff`` (Hz): lower = smoother at rest (more lag when slow). ``beta``: higher = less lag
  when moving fast. ``d_cutoff`` (Hz): cutoff for the speed estimate (paper default 1 Hz).
- dt == 0 (a repeated timestamp) returns the previous output unchanged; dt < 0 (time went back:
  a seek, a looping file) restarts the filter. A change of shape restarts it too.
- Non-finite inputs (NaN = "unknown") pass through as NaN and the element restarts from the next
  finite value.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


class OneEuroFilter:
    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0):
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError("min_cutoff and d_cutoff must be > 0 (Hz)")
        if beta < 0:
            raise ValueError("beta must be >= 0")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: Optional[np.ndarray] = None
        self._dx: Optional[np.ndarray] = None
        self._t: Optional[float] = None

    @staticmethod
    def _alpha(cutoff, dt: float):
        # 1 / (1 + tau/dt) with tau = 1 / (2 pi fc)  ==  r / (r + 1), r = 2 pi fc dt
        r = (2.0 * math.pi * dt) * cutoff
        return r / (r + 1.0)

    def __call__(self, x, t: float) -> np.ndarray:
        x = np.asarray(x)
        dtype = np.result_type(x.dtype, np.float32)
        x = x.astype(dtype, copy=False)
        t = float(t)
        if self._x is None or self._x.shape != x.shape or self._t is None or t < self._t:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            self._t = t
            return x.copy()
        dt = t - self._t
        if dt == 0.0:
            return self._x.copy()
        prev = self._x
        bad = ~np.isfinite(prev)
        if bad.any():  # elements that were unknown restart from the current value
            prev = np.where(bad, x, prev)
            self._dx = np.where(bad, 0, self._dx).astype(dtype, copy=False)
        a_d = self._alpha(self.d_cutoff, dt)
        # The formulas of the module docstring with four arrays per call, the steps written in place
        # (a dense mesh is 115,095 values: temporaries cost as much as the arithmetic); ``diff``
        # becomes the output and ``edx`` the derivative kept for the next call. Every
        # operation and operand type is that of the plain expressions, so results are bit for bit
        # theirs (tests/test_smoothing.py).
        diff = np.subtract(x, prev)                     # x - prev
        edx = np.multiply(diff, 1.0 / dt)               # dx = (x - prev) / dt
        np.multiply(edx, a_d, out=edx)                  # a_d * dx
        tmp = np.multiply(self._dx, 1.0 - a_d)          # (1 - a_d) * dx_prev
        np.add(edx, tmp, out=edx)                       # edx
        if self.beta:
            np.abs(edx, out=tmp)
            np.multiply(tmp, self.beta, out=tmp)
            np.add(tmp, self.min_cutoff, out=tmp)       # cutoff = min_cutoff + beta |edx|
            np.multiply(tmp, 2.0 * math.pi * dt, out=tmp)   # r = 2 pi dt cutoff
            np.divide(tmp, np.add(tmp, 1.0), out=tmp)  # alpha = r / (r + 1)
            np.multiply(tmp, diff, out=diff)
        else:
            np.multiply(diff, self._alpha(self.min_cutoff, dt), out=diff)
        out = np.add(prev, diff, out=diff)              # prev + alpha (x - prev)
        # NaN inputs give NaN outputs (the element restarts next call); their derivative restarts at 0
        self._x = out
        fin = np.isfinite(edx)
        self._dx = edx if fin.all() else np.where(fin, edx, 0).astype(dtype, copy=False)
        self._t = t
        return out.copy()
