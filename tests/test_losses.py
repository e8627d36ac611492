"""WPDC and Wing checked against numbers computed by hand; the 68-landmark reconstruction on the real BFM."""
import math

import numpy as np
import pytest
torch = pytest.importorskip("torch")  # the export extra (not installed on every Python)

from export.losses import BFMArrays, FRNetLoss, WPDCLoss, load_param_stats, load_pickle_arrays, wing_loss
from tests.conftest import shared


def test_wing_loss_hand_values():
    pred = torch.tensor([0.5, -3.0, 12.0, 4.0])
    target = torch.tensor([0.0, 0.0, 0.0, 4.0])
    # w=10, eps=2: 10 ln(1.25) = 2.231436; 10 ln(2.5) = 9.162907; |12| >= w -> 12 - C with
    # C = 10 - 10 ln 6 = -7.917595 -> 19.917595; 0 -> 0. Mean of the four: 7.827985
    assert wing_loss(pred, target).item() == pytest.approx(7.827985, abs=1e-5)
    # w=4, eps=1: 4 ln 1.5 = 1.621860; |-3| < 4 -> 4 ln 4 = 5.545177; 12 - (4 - 4 ln 5) = 14.437752
    assert wing_loss(pred, target, w=4.0, eps=1.0).item() == pytest.approx((1.621860 + 5.545177 + 14.437752) / 4, abs=1e-5)


def test_wing_loss_continuous_at_w():
    a = wing_loss(torch.tensor([10.0 - 1e-4]), torch.tensor([0.0])).item()
    b = wing_loss(torch.tensor([10.0 + 1e-4]), torch.tensor([0.0])).item()
    assert abs(a - b) < 1e-3


def _tiny_wpdc():
    # two vertices v0 = (1, 0, 0), v1 = (0, 2, 0); one basis vector moving v0 along z
    u = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    w = np.zeros((2, 3, 1))
    w[0, 2, 0] = 1.0
    return WPDCLoss(u, w, landmarks=[0, 1], param_mean=np.zeros(13), param_std=np.ones(13), resample=0)


def test_wpdc_hand_values():
    loss = _tiny_wpdc()
    gt = torch.tensor([[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]])      # P = [I | 0], alpha = 0
    pred = gt.clone()
    pred[0, 0] = 1.5     # P[0,0] off by 0.5: weight 0.5 * ||x coords|| = 0.5 * 1
    pred[0, 3] = 2.0     # x translation off by 2: weight 2 * sqrt(2 vertices) = 2.828427
    pred[0, 11] = 7.0    # z translation: weight 0 whatever the error
    pred[0, 12] = 1.0    # alpha off by 1: weight 1 * ||I @ (0,0,1)|| = 1
    wts = loss.weights(pred, gt)[0]
    m = 2 * math.sqrt(2)
    assert wts[0].item() == pytest.approx(0.5 / m, abs=1e-5)
    assert wts[3].item() == pytest.approx(1.0, abs=1e-6)
    assert wts[12].item() == pytest.approx(1.0 / m, abs=1e-5)
    assert wts[11].item() == 0.0
    assert wts[1].item() < 1e-5          # no error -> only eps / max
    # mean over 13 entries of w * diff^2: (0.176777 * 0.25 + 1 * 4 + 0.353553 * 1) / 13 = 0.338288
    assert loss(pred, gt).item() == pytest.approx(0.338288, abs=1e-5)


def test_wpdc_pose_weight_uses_ground_truth_shape_and_scale():
    loss = _tiny_wpdc()
    gt = torch.tensor([[2.0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0, 3.0]])     # s = 2, alpha = 3: v0 = (1, 0, 3)
    pred = gt.clone()
    pred[0, 2] += 1.0    # P[0,2] (z column) off by 1: weight 1 * ||z coords|| = 3
    pred[0, 12] += 1.0   # alpha off by 1: weight 1 * ||2 I (0,0,1)|| = 2
    wts = loss.weights(pred, gt)[0]
    assert wts[2].item() == pytest.approx(1.0, abs=1e-6)
    assert wts[12].item() == pytest.approx(2.0 / 3.0, abs=1e-5)
    # whitening: the loss is on whitened params, weights on de-normalised ones
    loss2 = WPDCLoss(loss.u.numpy(), loss.w.numpy(), [0, 1], np.zeros(13), np.full(13, 2.0), resample=0)
    np.testing.assert_allclose(loss2.weights(pred / 2, gt / 2), wts[None], atol=1e-6)
    assert loss2(pred / 2, gt / 2).item() == pytest.approx(loss(pred, gt).item() / 4, rel=1e-5)


def test_wpdc_zero_for_equal_and_gradient_only_through_prediction():
    loss = _tiny_wpdc()
    gt = torch.tensor([[1.0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]])
    assert loss(gt.clone(), gt).item() == 0.0
    pred = (gt + 0.1).requires_grad_(True)
    loss(pred, gt).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_landmarks_real_bfm_match_official_3ddfa_v2():
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    mean, std = load_param_stats(shared("models", "3ddfa_v2_mb05", "param_mean_std_62d_120x120.pkl"))
    crit = FRNetLoss(bfm, mean, std)
    p = torch.tensor(d["params_denorm"], dtype=torch.float32)[None]
    lm = crit.landmarks((p - crit.wpdc.mean) / crit.wpdc.std)[0].numpy()
    # official similar_transform: x - 1, y = 120 - y, then roi scaling
    sx, sy, ex, ey = d["roi_box"][:4]
    k = (ex - sx) / 120
    x = (lm[:, 0] - 1) * k + sx
    y = (120 - lm[:, 1]) * ((ey - sy) / 120) + sy
    np.testing.assert_allclose(x, d["landmarks68_image"][0], atol=1e-2)
    np.testing.assert_allclose(y, d["landmarks68_image"][1], atol=1e-2)


def test_frnet_loss_real_bfm_terms_and_scale():
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    mean, std = load_param_stats(shared("bfm", "3dmm_data", "param_whitening.pkl"))
    crit = FRNetLoss(bfm, mean, std, l_wpdc=1.0, l_wing=0.1)
    d = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))
    gt = (torch.tensor(d["params_denorm"], dtype=torch.float32)[None] - crit.wpdc.mean) / crit.wpdc.std
    shifted = gt.clone()
    shifted[0, 3] += 2.0 / float(std[3])        # x translation +2 crop pixels
    out = crit(shifted, gt)
    # every landmark moves 2 px in x only: Wing = 10 ln(1 + 2/2) averaged over 68 * 3 coordinates
    assert out["wing"].item() == pytest.approx(10 * math.log(2.0) / 3, rel=1e-4)
    assert out["loss"].item() == pytest.approx(out["wpdc"].item() + 0.1 * out["wing"].item(), rel=1e-6)
    # only the x translation is wrong: its weight is the max (1), so WPDC = (2/std)^2 / 62
    assert out["wpdc"].item() == pytest.approx((2.0 / float(std[3])) ** 2 / 62, rel=1e-3)


def test_pickle_loader_refuses_code(tmp_path):
    import pickle
    p = tmp_path / "evil.pkl"
    with open(p, "wb") as f:
        pickle.dump({"param_mean": print}, f)
    with pytest.raises(pickle.UnpicklingError):
        load_pickle_arrays(p)
    good = tmp_path / "stats.pkl"
    with open(good, "wb") as f:
        pickle.dump({"mean": np.arange(62, dtype=np.float32), "std": np.ones(62, np.float32)}, f)
    m, s = load_param_stats(good)
    assert m[61] == 61 and s.sum() == 62
