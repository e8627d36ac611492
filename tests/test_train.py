"""Training loop on a tiny generated 3DDFA-layout set; checkpoints, resume, Ctrl-C; bad input exits 2."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from export import datasets as D
from export import train as T
from export.losses import BFMArrays, load_param_stats
from tests.conftest import ROOT, shared


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 5, 4, 2), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                               nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 62))

    def forward(self, x):
        return self.f(x)


def make_dataset(root: Path, n: int = 24, seed: int = 0) -> Path:
    """A tiny set in the 3DDFA layout: crops that draw the 68 landmarks of their own parameters."""
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    D.set_landmark_bfm(bfm)
    mean, std = load_param_stats(shared("bfm", "3dmm_data", "param_whitening.pkl"))
    base = np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))["params_denorm"].astype(np.float64)
    rng = np.random.default_rng(seed)
    (root / "train_aug_120x120").mkdir(parents=True)
    names, params = [], []
    for i in range(n):
        p = D.transform_params(base, D.random_similarity(rng, rot_deg=20, scale=0.15, shift=12))
        img = np.full((120, 120, 3), 90, np.uint8)
        for x, y in D.landmarks_pixels(p):
            cv2.circle(img, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
        name = f"img{i:03d}.jpg"
        cv2.imwrite(str(root / "train_aug_120x120" / name), img)
        names.append(name)
        params.append((p - mean) / std)
    (root / "train_aug_120x120.list.train").write_text("\n".join(names) + "\n")
    with open(root / "param_all_norm_v201.pkl", "wb") as f:
        pickle.dump(np.asarray(params, np.float32), f)
    return root


def _args(data, out, *extra):
    return T.build_parser().parse_args(["mobilefrnet", "--data", str(data), "--bfm-dir", str(shared("bfm", "3dmm_data")),
                                        "--out", str(out), "--batch", "8", "--threads", "1", *extra])


def test_supervised_tiny_set_loss_falls_and_checkpoints(tmp_path):
    data = make_dataset(tmp_path / "data")
    torch.manual_seed(0)
    out = tmp_path / "run"
    last = T.run(_args(data, out, "--epochs", "30", "--lr", "5e-3", "--warmup", "5", "--no-augment"),
                 model=TinyNet(), log=lambda m: None)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == list(range(1, 31))
    first, final = recs[0]["train_loss"], recs[-1]["train_loss"]
    assert final < 0.5 * first, (first, final)
    assert recs[-1]["train_wing"] < recs[0]["train_wing"]
    assert last["epoch"] == 30
    sd = torch.load(out / "last.pth", weights_only=True)
    assert set(sd) == set(TinyNet().state_dict())          # a plain state_dict
    assert (out / "best.pth").is_file() and (out / "resume.pth").is_file()
    assert not list(out.glob("*.tmp"))
    # resume continues at epoch 30 -> 32 with the optimizer state
    T.run(_args(data, out, "--epochs", "32", "--resume", str(out / "resume.pth"), "--no-augment"),
          model=TinyNet(), log=lambda m: None)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs][-2:] == [31, 32]


def test_augmented_supervised_sample_target_follows_the_image(tmp_path):
    """Flip + similarity + colour: the target's landmarks land on the drawn dots of the warped crop."""
    data = make_dataset(tmp_path / "data", n=4)
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    mean, std = load_param_stats(shared("bfm", "3dmm_data", "param_whitening.pkl"))
    ds = D.SupervisedDataset(data, param_mean=mean, param_std=std, augment=True, flipper=D.ParamFlipper(bfm), seed=3)
    for i in range(4):
        img, tw = ds[i]
        lm = D.landmarks_pixels(tw.astype(np.float64) * std + mean)
        grey = img.astype(np.float32).mean(axis=2)
        inside = [(0 <= x < 120 and 0 <= y < 120) for x, y in lm]
        vals = [grey[int(round(y)), int(round(x))] for (x, y), ok in zip(lm, inside) if ok]
        bg = np.median(grey)
        # dots are brighter than the background at (almost) every landmark
        assert np.mean(np.array(vals) > bg + 20) > 0.9, (i, np.mean(np.array(vals) > bg + 20))


def test_ctrl_c_saves_and_keeps_last_complete_epoch(tmp_path):
    data = make_dataset(tmp_path / "data", n=16)
    out = tmp_path / "run"

    class Boom(TinyNet):
        calls = 0

        def forward(self, x):
            Boom.calls += 1
            if Boom.calls == 3:           # first step of epoch 2 (2 steps per epoch: 16 images, batch 8)
                raise KeyboardInterrupt
            return super().forward(x)

    with pytest.raises(KeyboardInterrupt):
        T.run(_args(data, out, "--epochs", "3", "--no-augment"), model=Boom(), log=lambda m: None)
    assert (out / "interrupted.pth").is_file() and (out / "last.pth").is_file()
    recs = (out / "metrics.jsonl").read_text().splitlines()
    assert len(recs) == 1
    assert torch.load(out / "resume.pth", weights_only=True)["epoch"] == 1


def _cli(*argv, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "export.train", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_bad_input_missing_data_dir(tmp_path):
    r = _cli("mobilefrnet", "--data", str(tmp_path / "nope"), "--bfm-dir", str(shared("bfm", "3dmm_data")),
             "--out", str(tmp_path / "run"))
    assert r.returncode == 2
    assert "nope" in r.stderr and "not a directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_bad_input_missing_param_list_and_bad_image(tmp_path):
    data = make_dataset(tmp_path / "data", n=3)
    (data / "param_all_norm_v201.pkl").unlink()
    code = T.main(["mobilefrnet", "--data", str(data), "--bfm-dir", str(shared("bfm", "3dmm_data")),
                   "--out", str(tmp_path / "run")])
    assert code == 2
    data2 = make_dataset(tmp_path / "data2", n=3)
    (data2 / "train_aug_120x120" / "img002.jpg").write_bytes(b"not a jpeg")
    r = _cli("mobilefrnet", "--data", str(data2), "--bfm-dir", str(shared("bfm", "3dmm_data")), "--out", str(tmp_path / "r2"))
    assert r.returncode == 2 and "img002.jpg" in r.stderr and "does not decode" in r.stderr, r.stderr
    data3 = make_dataset(tmp_path / "data3", n=3)
    (data3 / "train_aug_120x120.list.train").write_text("img000.jpg\nimg001.jpg\n")
    r = _cli("mobilefrnet", "--data", str(data3), "--bfm-dir", str(shared("bfm", "3dmm_data")), "--out", str(tmp_path / "r3"))
    assert r.returncode == 2 and "lists 2 images but" in r.stderr, r.stderr


def test_bad_input_resume_of_another_architecture(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n=8)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, other)
    with pytest.raises(T.UsageError, match="does not fit the mobilefrnet network"):
        T.run(_args(data, tmp_path / "run", "--epochs", "1", "--resume", str(other)), model=TinyNet(), log=lambda m: None)
    torch.save({"arch": "synergynet", "epoch": 1, "step": 1, "best": 1.0, "model": {}, "optimizer": {}}, other)
    with pytest.raises(T.UsageError, match="a synergynet checkpoint, not mobilefrnet"):
        T.run(_args(data, tmp_path / "run", "--epochs", "1", "--resume", str(other)), model=TinyNet(), log=lambda m: None)


def test_bad_teacher_breaks_contract(tmp_path):
    # a valid ONNX file whose input is float NCHW: not the export contract
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 120 * 120, 62)).eval()
    bad = tmp_path / "bad_teacher.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 120, 120), str(bad), input_names=["x"], output_names=["params"],
                      dynamo=False)
    r = _cli("mobilefrnet", "--distill-from", str(bad), "--frames", str(shared("media", "portrait_glasses.jpg")),
             "--bfm-dir", str(shared("bfm", "3dmm_data")), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "does not follow the export contract" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage")
    r = _cli("mobilefrnet", "--distill-from", str(junk), "--frames", str(shared("media", "portrait_glasses.jpg")),
             "--bfm-dir", str(shared("bfm", "3dmm_data")), "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "not a loadable ONNX model" in r.stderr, r.stderr


@pytest.mark.slow
def test_trained_mobilefrnet_checkpoint_exports_and_matches(tmp_path):
    """last.pth of a (1-epoch) Mobile-FRNet run exports with `python -m export mobilefrnet`; ONNX landmarks = torch."""
    pytest.importorskip("export.nets.mobilefrnet")
    data = make_dataset(tmp_path / "data", n=8)
    out = tmp_path / "run"
    T.run(_args(data, out, "--epochs", "1", "--batch", "4", "--no-augment"), log=lambda m: None)
    onnx_path = tmp_path / "frnet.onnx"
    r = subprocess.run([sys.executable, "-m", "export", "mobilefrnet", "--checkpoint", str(out / "last.pth"),
                        "--bfm-dir", str(shared("bfm", "3dmm_data")), "--no-dense", "--out", str(onnx_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import onnxruntime as ort
    from export.losses import FRNetLoss
    from export.nets.mobilefrnet import MobileFRNet

    crop = cv2.imread(str(data / "train_aug_120x120" / "img000.jpg"))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    lm_onnx = sess.run(["landmarks"], {"image": crop[None]})[0][0]
    net = MobileFRNet(num_params=62).eval()
    net.load_state_dict(torch.load(out / "last.pth", weights_only=True))
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    mean, std = load_param_stats(shared("bfm", "3dmm_data", "param_whitening.pkl"))
    crit = FRNetLoss(bfm, mean, std)
    with torch.no_grad():
        lm_t = T.crop_pixels(crit.landmarks(net(T.to_input(crop[None], "cpu"))))[0].numpy()
    np.testing.assert_allclose(lm_onnx[:, :2], lm_t, atol=1e-2)


def test_init_head_sets_mean_target_bias():
    net = TinyNet()
    w0 = net.f[-1].weight.detach().clone()
    mean = np.linspace(-1, 1, 62).astype(np.float32)
    assert T.init_head(net, mean) == "f.6"
    np.testing.assert_allclose(net.f[-1].bias.detach().numpy(), mean)
    np.testing.assert_allclose(net.f[-1].weight.detach().numpy(), 0.1 * w0.numpy(), rtol=1e-6)
    with pytest.raises(T.UsageError, match="no Linear layer with 5 outputs"):
        T.init_head(net, np.zeros(5))
