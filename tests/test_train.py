"""Training loop on a tiny generated 3DDFA-layout set; checkpoints, resume, Ctrl-C; bad input exits 2."""
import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
torch = pytest.importorskip("torch")  # the export extra (not installed on every Python)
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


# ---------------------------------------------------------------- pre-scan of the image list
def test_corrupt_image_mid_list_exits_2_before_training(tmp_path):
    data = make_dataset(tmp_path / "data", n=9)
    (data / "train_aug_120x120" / "img004.jpg").write_bytes(b"<html>an error page saved as a jpg</html>")
    out = tmp_path / "run"
    r = _cli("mobilefrnet", "--data", str(data), "--bfm-dir", str(shared("bfm", "3dmm_data")), "--out", str(out),
             "--threads", "1", "--epochs", "1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "img004.jpg" in lines[0] and "does not decode" in lines[0] and "line 5 of" in lines[0], lines[0]
    assert "1 of 9 listed images" in lines[0], lines[0]
    # nothing of a training run was started
    assert not (out / "train_config.json").exists() and not (out / "metrics.jsonl").exists()


def test_check_images_counts_every_bad_file_and_passes_a_clean_list(tmp_path):
    from export.losses import load_param_stats as lps

    data = make_dataset(tmp_path / "data", n=12)
    mean, std = lps(shared("bfm", "3dmm_data", "param_whitening.pkl"))
    ds = D.SupervisedDataset(data, param_mean=mean, param_std=std, augment=False)
    assert ds.check_images(threads=2) >= 0.0
    (data / "train_aug_120x120" / "img007.jpg").write_bytes(b"")
    (data / "train_aug_120x120" / "img010.jpg").write_bytes(b"GIF89a nonsense")
    for threads in (1, 3):
        with pytest.raises(D.DataError, match=r"img007\.jpg: image is empty \(0 bytes\) \(line 8 of .*2 of 12 listed"):
            ds.check_images(threads=threads)
    # a file deleted after the list was read is reported as missing
    (data / "train_aug_120x120" / "img007.jpg").unlink()
    with pytest.raises(D.DataError, match=r"img007\.jpg: listed but missing"):
        ds.check_images()
    # cv2.imread accepts a truncated JPEG (libjpeg fills it with grey): caught by the end marker
    good = (data / "train_aug_120x120" / "img003.jpg").read_bytes()
    (data / "train_aug_120x120" / "img003.jpg").write_bytes(good[: len(good) // 2])
    assert cv2.imread(str(data / "train_aug_120x120" / "img003.jpg")) is not None
    with pytest.raises(D.DataError, match=r"img003\.jpg: image is truncated \(no JPEG end marker\) \(line 4 of .*3 of 12"):
        ds.check_images(threads=2)


# ---------------------------------------------------------------- SynergyNet fine-tuning
SYN_CKPT = ("fixtures", "synergynet", "synergynet_random_weights.pth.tar")


def _syn_args(out, *extra):
    return T.build_parser().parse_args(["synergynet", "--checkpoint", str(shared(*SYN_CKPT)), "--bfm-dir",
                                        str(shared("bfm", "3dmm_data")), "--out", str(out), "--threads", "1", *extra])


def _load_official(path):
    from export.nets.synergynet import SynergyNet

    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert set(obj) == {"epoch", "state_dict"}
    assert all(k.startswith("module.") for k in obj["state_dict"])
    net = SynergyNet()
    net.load_state_dict({k[len("module."):]: v for k, v in obj["state_dict"].items()}, strict=True)
    return obj, net.eval()


@pytest.mark.slow
def test_synergynet_finetune_supervised_loss_falls_saves_official_format_and_exports(tmp_path):
    from export.convert import export_checkpoint
    from export.losses import FRNetLoss

    data = make_dataset(tmp_path / "data", n=32)
    out = tmp_path / "run"
    logs = []
    last = T.run(_syn_args(out, "--data", str(data), "--batch", "8", "--epochs", "16", "--lr", "3e-3",
                           "--warmup", "2", "--no-augment"), log=logs.append)
    assert any("fine-tuning synergynet" in m for m in logs)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == list(range(1, 17)) and last["epoch"] == 16
    # train-mode losses are noisy (dropout, batch-8 BatchNorm): compare the first two and last three epochs
    loss = np.array([r["train_loss"] for r in recs])
    wing = np.array([r["train_wing"] for r in recs])
    assert np.isfinite(loss).all() and loss[-3:].mean() < 0.7 * loss[:2].mean(), loss
    assert wing[-3:].mean() < 0.7 * wing[:2].mean(), wing
    assert (out / "last.pth.tar").is_file() and (out / "best.pth.tar").is_file() and (out / "resume.pth").is_file()
    assert not (out / "last.pth").exists()
    obj, net = _load_official(out / "last.pth.tar")
    assert obj["epoch"] == 16
    _, ref = _load_official(shared(*SYN_CKPT))
    ref_sd, sd = ref.state_dict(), net.state_dict()
    # BFM / whitening buffers and the frozen refinement MLPs are carried over unchanged; I2P was trained
    for k in ("param_mean", "param_std", "u", "w_shp", "w_exp", "u_base", "w_shp_base", "w_exp_base",
              "forwardDirection.conv1.weight", "reverseDirection.conv6_1.weight"):
        assert torch.equal(sd[k], ref_sd[k]), k
    for k in ("I2P.backbone.features.0.0.weight", "I2P.backbone.classifier_ori.1.weight",
              "I2P.backbone.classifier_exp.1.bias"):
        assert not torch.equal(sd[k], ref_sd[k]), k
    # deterministic check (eval mode, landmarks only): the fine-tuned network fits the training set better
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    crit = FRNetLoss(bfm, ref.param_mean.numpy(), ref.param_std.numpy(), resample=0)
    ds = D.SupervisedDataset(data, param_mean=ref.param_mean.numpy(), param_std=ref.param_std.numpy(), augment=False)
    crops, targets = map(np.stack, zip(*[ds[i] for i in range(len(ds))]))
    with torch.no_grad():
        y = torch.from_numpy(targets)
        before = float(crit(ref(T.to_input(crops, "cpu")), y)["wing"])
        after = float(crit(net(T.to_input(crops, "cpu")), y)["wing"])
    print(f"synergynet fine-tune: train loss {loss[:2].mean():.3f} -> {loss[-3:].mean():.3f}, "
          f"eval Wing on the set {before:.2f} -> {after:.2f}")
    assert after < 0.7 * before, (before, after)
    # the trained file exports (strict load + onnxruntime verification inside export_checkpoint) ...
    onnx_path = tmp_path / "syn.onnx"
    rep = export_checkpoint("synergynet", out / "best.pth.tar", onnx_path, bfm_dir=shared("bfm", "3dmm_data"),
                            dense=False)
    assert onnx_path.is_file() and rep
    # ... and its contract landmarks are what training validated: the SynergyNet convention of our loss geometry
    import onnxruntime as ort

    _, best = _load_official(out / "best.pth.tar")
    crops = crops[:3]
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    lm_onnx = sess.run(["landmarks"], {"image": crops})[0]
    with torch.no_grad():
        lm_t = T.crop_pixels(crit.landmarks(best(T.to_input(crops, "cpu"))), "synergynet").numpy()
    np.testing.assert_allclose(lm_onnx[..., :2], lm_t, atol=2e-2)
    # the app's model loader accepts the exported fine-tuned file and runs it
    from app.model3dmm import Model3DMM

    app_model = Model3DMM(str(onnx_path), device="cpu")
    assert app_model.arch == "synergynet" and app_model.landmark_convention == "synergynet"
    np.testing.assert_allclose(app_model.infer(crops)["landmarks"], lm_onnx, atol=1e-4)


def test_synergynet_bad_input(tmp_path):
    data = make_dataset(tmp_path / "data", n=4)
    bfm = str(shared("bfm", "3dmm_data"))
    r = _cli("synergynet", "--data", str(data), "--bfm-dir", bfm, "--out", str(tmp_path / "r1"))
    assert r.returncode == 2 and "synergynet needs --checkpoint" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with pytest.raises(T.UsageError, match="--checkpoint is for synergynet"):
        T.run(_args(data, tmp_path / "r2", "--checkpoint", str(shared(*SYN_CKPT))), model=TinyNet(), log=lambda m: None)
    other = tmp_path / "frnet_like.pth"
    torch.save({"state_dict": {"module.conv.weight": torch.zeros(3, 3, 3, 3)}}, other)
    args = T.build_parser().parse_args(["synergynet", "--checkpoint", str(other), "--data", str(data),
                                        "--bfm-dir", bfm, "--out", str(tmp_path / "r3")])
    with pytest.raises(T.UsageError, match="does not fit the synergynet network"):
        T.run(args, log=lambda m: None)
    # the checkpoint's landmark buffers must be the --bfm-dir BFM the losses use
    net = T.load_synergynet(shared(*SYN_CKPT))
    assert not any(p.requires_grad for p in net.forwardDirection.parameters())
    assert all(p.requires_grad for p in net.I2P.parameters())
    bfm_arrays = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    T.check_synergynet_bfm(net, bfm_arrays, "ckpt")                     # the fixture's buffers are the real BFM
    with torch.no_grad():
        net.u_base[30] += 0.01 * net.u_base.abs().max()      # 1 % of the mean shape's extent
    with pytest.raises(T.UsageError, match="BFM landmark buffers differ from --bfm-dir"):
        T.check_synergynet_bfm(net, bfm_arrays, "ckpt")


# ---------------------------------------------------------------- distillation with the real teacher
@pytest.fixture(scope="module")
def teacher_nodense(tmp_path_factory):
    """The real 3DDFA-V2 x0.5 teacher, exported without the dense mesh (faster than conftest's tddfa_onnx)."""
    from export.convert import export_checkpoint

    m = shared("models", "3ddfa_v2_mb05")
    out = tmp_path_factory.mktemp("teacher") / "teacher_nodense.onnx"
    export_checkpoint("3ddfa-v2", m / "mb05_120x120.pth", out, bfm_dir=shared("bfm", "3dmm_data"),
                      param_stats=m / "param_mean_std_62d_120x120.pkl", dense=False)
    return out


def _frames():
    return [str(shared("media", n)) for n in ("portrait_glasses.jpg", "portrait_large.jpg", "two_faces.jpg")]


@pytest.mark.slow
def test_distill_mobilefrnet_from_the_real_teacher_with_holdout(tmp_path, teacher_nodense):
    pytest.importorskip("export.nets.mobilefrnet")
    from export.nets.mobilefrnet import MobileFRNet

    out = tmp_path / "run"
    logs = []
    args = T.build_parser().parse_args(
        ["mobilefrnet", "--distill-from", str(teacher_nodense), "--frames", *_frames(), "--holdout", "two_faces",
         "--bfm-dir", str(shared("bfm", "3dmm_data")), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2",
         "--batch", "4", "--threads", "1", "--warmup", "1"])
    T.run(args, log=logs.append)
    import re

    split = [re.search(r"distillation: (\d+) training faces, (\d+) held-out faces \(two_faces\)", m) for m in logs]
    n_train, n_held = next(map(int, m.groups()) for m in split if m)
    assert n_train >= 2 and n_held == 2, logs      # two_faces.jpg (2 faces) is held out whole
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and recs[0]["step"] == 2 and recs[0]["train_samples"] == 8
    v = recs[0]["val_nme_teacher"]
    assert np.isfinite(v) and 0 < v < 100, v
    assert np.isfinite(recs[0]["train_loss"]) and recs[0]["best"] == v
    print(f"mobilefrnet distilled 1x2 steps: train_loss {recs[0]['train_loss']:.3f}, val_nme_teacher {v:.3f} %")
    for name in ("last.pth", "best.pth"):
        MobileFRNet(num_params=62).load_state_dict(torch.load(out / name, weights_only=True), strict=True)
    assert (out / "face_cache.npz").is_file() and (out / "resume.pth").is_file()


@pytest.mark.slow
def test_distill_synergynet_targets_in_its_landmark_frame_and_aflw_matches_export(tmp_path, teacher_nodense):
    """3DDFA-V2 teacher -> SynergyNet student: the targets, drawn in SynergyNet's convention, are the
    teacher's own contract landmarks; the per-epoch AFLW NME equals export.evaluate on the exported file."""
    import onnxruntime as ort

    from export.convert import export_checkpoint
    from export.evaluate import evaluate_aflw2000
    from export.losses import FRNetLoss

    out = tmp_path / "run"
    logs = []
    T.run(_syn_args(out, "--distill-from", str(teacher_nodense), "--frames", *_frames(), "--holdout", "two_faces",
                    "--epochs", "1", "--steps-per-epoch", "2", "--batch", "2", "--warmup", "1",
                    "--aflw", str(shared("media", "aflw2000"))), log=logs.append)
    assert any("from the 3ddfa_v2 into the synergynet landmark convention (translation -1, +1, -1" in m
               for m in logs), logs
    rec = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(rec["val_nme_teacher"]) and np.isfinite(rec["val_nme_aflw"]), rec
    _, net = _load_official(out / "best.pth.tar")
    _load_official(out / "last.pth.tar")

    # the held-out targets as the student's convention draws them = the teacher's contract landmarks
    teacher = D.TeacherONNX(teacher_nodense, threads=1)
    assert teacher.convention == "3ddfa_v2"
    bfm = BFMArrays.from_dir(shared("bfm", "3dmm_data"))
    D.set_landmark_bfm(bfm)
    mean, std = net.param_mean.numpy(), net.param_std.numpy()
    cache = D.build_face_cache(D.expand_sources([_frames()[2]]), teacher, log=lambda m: None)
    val = D.DistillDataset(cache, teacher, mean, std, augment=False,
                           target_shift=T.frame_shift(teacher.convention, "synergynet"))
    crops, tw = val.batch(range(len(val)))
    crit = FRNetLoss(bfm, mean, std)
    lm_target = T.crop_pixels(crit.landmarks(torch.from_numpy(tw)), "synergynet").numpy()
    sess = ort.InferenceSession(str(teacher_nodense), providers=["CPUExecutionProvider"])
    lm_teacher = sess.run(["landmarks"], {"image": crops})[0][..., :2]
    np.testing.assert_allclose(lm_target, lm_teacher, atol=2e-3)
    # without the shift the same targets would sit ~1 px off in x and y
    raw = T.crop_pixels(crit.landmarks(torch.from_numpy(
        D.DistillDataset(cache, teacher, mean, std, augment=False).batch(range(len(val)))[1])), "synergynet").numpy()
    np.testing.assert_allclose((raw - lm_teacher).mean(axis=(0, 1)), [1.0, 1.0], atol=1e-2)

    # the exported fine-tuned model gives the AFLW NME the training run reported
    onnx_path = tmp_path / "syn.onnx"
    export_checkpoint("synergynet", out / "best.pth.tar", onnx_path, bfm_dir=shared("bfm", "3dmm_data"), dense=False)
    res = evaluate_aflw2000(onnx_path, shared("media", "aflw2000"))
    print(f"synergynet distilled: val_nme_teacher {rec['val_nme_teacher']:.3f} %, val_nme_aflw "
          f"{rec['val_nme_aflw']:.4f} %, export.evaluate {res['nme']:.4f} %")
    assert res["landmark_convention"] == "synergynet"
    assert res["nme"] == pytest.approx(rec["val_nme_aflw"], abs=0.02)
