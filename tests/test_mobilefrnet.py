"""Mobile-FRNet and the MAC counter: parameter budget of the paper, exact MACs of hand-computed nets."""
import numpy as np
import pytest
torch = pytest.importorskip("torch")  # the export extra (not installed on every Python)
from torch import nn

from export.flops import count_flops
from export.nets.mobilefrnet import SGE, MobileFRNet, mobilenet_v2


def test_count_flops_tiny_net_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True),   # out 8x5x5
                        nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),  # depth-wise, out 8x5x5
                        nn.Conv2d(8, 4, 1, bias=False),                       # out 4x5x5
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    r = count_flops(net, (1, 3, 10, 10))
    macs = 8 * 5 * 5 * 3 * 9 + 8 * 5 * 5 * 9 + 4 * 5 * 5 * 8 + 2 * 4
    assert r["macs"] == macs == 8008
    assert r["flops"] == 2 * macs
    assert r["params"] == (8 * 27 + 8) + 16 + 8 * 9 + 32 + (8 + 2)
    assert r["other_ops"] == 200 + 200 + 100  # BN out, ReLU out, pool input
    assert r["macs"] == count_flops(net, (2, 3, 10, 10))["macs"] // 2  # linear in the batch


def test_mobilenet_v2_matches_published_counts():
    r = count_flops(mobilenet_v2(num_params=1000), (1, 3, 224, 224))
    assert r["params"] == 3_504_872               # torchvision mobilenet_v2(): 3,504,872
    assert r["macs"] == pytest.approx(300e6, rel=0.01)  # MobileNetV2 paper: 300 M multiply-adds


def test_mobilefrnet_parameter_budget_of_the_paper():
    frnet = count_flops(MobileFRNet(), (1, 3, 120, 120))
    base = count_flops(mobilenet_v2(), (1, 3, 120, 120))
    assert frnet["params"] == pytest.approx(2.60e6, rel=0.05)
    assert base["params"] == pytest.approx(2.38e6, rel=0.05)
    # the paper's table: Mobile-FRNet costs ~10 % more than its MobileNetV2 baseline (0.12 vs 0.109)
    assert 1.05 < frnet["macs"] / base["macs"] < 1.25
    assert 0.10e9 < frnet["macs"] < 0.13e9        # MACs scale of the paper's "0.12 GFLOPs"


def test_mobilefrnet_forward_and_batch_independence():
    torch.manual_seed(0)
    net = MobileFRNet().eval()
    with torch.no_grad():  # give SGE and BN non-trivial values so the test can fail
        for m in net.modules():
            if isinstance(m, SGE):
                m.weight.normal_()
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        net.fc.weight.normal_(0, 0.05)
    x = torch.randn(3, 3, 120, 120)
    with torch.no_grad():
        y = net(x)
        y1 = net(x[1:2])
    assert y.shape == (3, 62) and torch.isfinite(y).all()
    torch.testing.assert_close(y[1:2], y1, rtol=1e-4, atol=1e-5)
    # an untrained net's pooled output hardly depends on its input: check the SGE / SE stages directly
    early = nn.Sequential(net.stem, net.stages[:3]).eval()
    with torch.no_grad():
        f, f1 = early(x), early(x[1:2])
    torch.testing.assert_close(f[1:2], f1, rtol=1e-4, atol=1e-5)
    assert (f[0] - f[2]).abs().mean() > 0.1 * f.abs().mean()  # different inputs, different features


def test_sge_matches_reference_formula():
    torch.manual_seed(1)
    m = SGE(8, groups=2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.5, -1.0]).view(1, 2, 1, 1))
        m.bias.copy_(torch.tensor([0.2, 0.1]).view(1, 2, 1, 1))
    x = torch.randn(2, 8, 3, 4)
    want = torch.empty_like(x)
    for n in range(2):
        for g in range(2):
            xg = x[n, 4 * g:4 * g + 4]                         # (4, 3, 4)
            t = (xg * xg.mean((1, 2), keepdim=True)).sum(0)    # (3, 4)
            t = (t - t.mean()) / (t.std() + 1e-5)              # torch.std: unbiased, as in the SGE paper code
            t = t * m.weight[0, g, 0, 0] + m.bias[0, g, 0, 0]
            want[n, 4 * g:4 * g + 4] = xg * torch.sigmoid(t)
    torch.testing.assert_close(m(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mobilefrnet_exports_to_onnx_dynamic_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = MobileFRNet().eval()
    path = tmp_path / "frnet.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 120, 120),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, opset_version=17, dynamo=False)
    x = np.random.default_rng(0).standard_normal((4, 3, 120, 120)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
