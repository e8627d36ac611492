"""export.contract.ContractModel: the channel-major dense head computes the vertex-major formula."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.contract import CONVENTIONS, ContractModel  # noqa: E402


class _Fixed(torch.nn.Module):
    """A 'network' returning given whitened parameters whatever the image."""

    def __init__(self, raw):
        super().__init__()
        self.register_buffer("raw", raw)

    def forward(self, x):
        return self.raw[: x.shape[0]]


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_dense_vertices_equal_the_vertex_major_formula(convention):
    rng = np.random.default_rng(3)
    n, V = 4, 257
    u = rng.normal(0, 50, 3 * V).astype(np.float32)
    w = rng.normal(0, 5, (3 * V, 50)).astype(np.float32)
    kp = rng.choice(V, 68, replace=False)
    rows = (3 * kp[:, None] + np.arange(3)).reshape(-1)
    mean = rng.normal(0, 1, 62).astype(np.float32)
    std = rng.uniform(0.5, 2, 62).astype(np.float32)
    raw = torch.from_numpy(rng.normal(0, 1, (n, 62)).astype(np.float32))
    m = ContractModel(_Fixed(raw), mean, std, u[rows], w[rows], dense_u=u, dense_w=w,
                      convention=convention).eval()
    with torch.no_grad():
        params, lmk, verts, *_ = m(torch.zeros(n, 120, 120, 3, dtype=torch.uint8))
    p = params.numpy().astype(np.float64)
    P = p[:, :12].reshape(n, 3, 4)
    ox, fy, oz = CONVENTIONS[convention]
    for i in range(n):   # the formula written out in float64, vertex by vertex
        model_pts = (u + w @ p[i, 12:]).reshape(V, 3)
        v = model_pts @ P[i, :, :3].T + P[i, :, 3]
        ref = np.stack([v[:, 0] + ox, fy - v[:, 1], v[:, 2] + oz], 1)
        scale = np.abs(ref).max()
        assert verts.shape == (n, V, 3)
        np.testing.assert_allclose(verts[i].numpy(), ref, atol=1e-5 * scale)
        np.testing.assert_allclose(lmk[i].numpy(), ref[kp], atol=1e-5 * scale)
