"""The mobilefrnet subcommand: export.nets.mobilefrnet.MobileFRNet, randomly initialised, saved as a plain
state dict, exported with the BFM's param_whitening.pkl; outputs re-derived here with numpy."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, shared

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


def _bfm_landmarks_3ddfa(params, bfm):
    """Independent numpy: P[:, :3] @ (u + W a)[kp].reshape(3, -1, 'F') + P[:, 3]; x-1, 120-y, z-1."""
    u = (np.load(bfm / "u_shp.npy") + np.load(bfm / "u_exp.npy"))[:, 0].astype(np.float64)
    w = np.concatenate([np.load(bfm / "w_shp_sim.npy"), np.load(bfm / "w_exp_sim.npy")], 1).astype(np.float64)
    kp = np.load(bfm / "keypoints_sim.npy")
    P = params[:12].astype(np.float64).reshape(3, 4)
    pts = P[:, :3] @ (u[kp] + w[kp] @ params[12:]).reshape(3, -1, order="F") + P[:, 3:]
    return np.stack([pts[0] - 1, 120 - pts[1], pts[2] - 1], 1)


@pytest.mark.slow
def test_mobilefrnet_random_state_dict_exports_via_cli(tmp_path):
    mf = pytest.importorskip("export.nets.mobilefrnet")
    from export.convert import run_onnx
    torch.manual_seed(0)
    net = mf.MobileFRNet(num_params=62).eval()
    ck = tmp_path / "mobilefrnet.pth"
    torch.save(net.state_dict(), ck)  # a plain state dict
    bfm = shared("bfm", "3dmm_data")
    out = tmp_path / "mobilefrnet.onnx"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "export", "mobilefrnet", "--checkpoint", str(ck), "--bfm-dir", str(bfm),
                        "--out", str(out), "--mesh", "noneck", "-q"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "architecture   mobilefrnet" in r.stdout and "export.flops.count_flops" in r.stdout
    assert str(bfm / "param_whitening.pkl") in r.stdout
    crop = np.random.default_rng(3).integers(0, 256, (1, 120, 120, 3), dtype=np.uint8)
    o, _ = run_onnx(out, crop)
    st = pickle.load(open(bfm / "param_whitening.pkl", "rb"))
    with torch.no_grad():
        x = torch.from_numpy(crop).float().permute(0, 3, 1, 2).sub(127.5).div(128.0)
        want = net(x)[0].numpy() * st["param_std"] + st["param_mean"]
    np.testing.assert_allclose(o["params"][0], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(o["landmarks"][0], _bfm_landmarks_3ddfa(o["params"][0], bfm), atol=1e-3)
    assert o["vertices"].shape == (1, 38365, 3)
    meta = __import__("onnxruntime").InferenceSession(str(out), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert meta["arch"] == "mobilefrnet" and meta["landmark_convention"] == "3ddfa_v2" and meta["mesh"] == "noneck"


def test_mobilefrnet_wrong_checkpoint_and_missing_stats(tmp_path):
    mf = pytest.importorskip("export.nets.mobilefrnet")
    from export import ExportInputError
    from export.convert import export_checkpoint
    from export.nets.mobilenet_v1 import MobileNetV1
    ck = tmp_path / "mb1.pth"
    torch.save({"state_dict": MobileNetV1(0.5).state_dict()}, ck)
    with pytest.raises(ExportInputError, match="does not fit the mobilefrnet network"):
        export_checkpoint("mobilefrnet", ck, tmp_path / "m.onnx", bfm_dir=shared("bfm", "3dmm_data"))
    good = tmp_path / "mf.pth"
    torch.save(mf.MobileFRNet().state_dict(), good)
    with pytest.raises(ExportInputError, match="needs --bfm-dir"):
        export_checkpoint("mobilefrnet", good, tmp_path / "m.onnx")
    assert sorted(tmp_path.iterdir()) == sorted([ck, good])
