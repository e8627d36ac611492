"""python -m export through subprocess: bad input -> one stderr line, exit 2, nothing written;
verification failure -> exit 1, file removed; a good run prints the summary."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, shared

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "export", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_input_error(r, out: Path, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    errs = [ln for ln in r.stderr.splitlines() if ln.startswith("export: error:")]
    assert len(errs) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for w in words:
        assert w.lower() in errs[0].lower(), (w, errs[0])
    assert not out.exists()
    assert not out.with_name(out.name + ".tmp").exists()
    return errs[0]


def _tddfa_args(ck, out, bfm=None, stats=None):
    m = shared("models", "3ddfa_v2_mb05")
    return ["3ddfa-v2", "--checkpoint", ck, "--out", out,
            "--bfm-dir", bfm or shared("bfm", "3dmm_data"),
            "--param-stats", stats or m / "param_mean_std_62d_120x120.pkl"]


def test_missing_checkpoint(tmp_path):
    out = tmp_path / "m.onnx"
    r = run_cli("synergynet", "--checkpoint", tmp_path / "nope.pth.tar", "--out", out)
    assert_input_error(r, out, "not found", "nope.pth.tar")


@pytest.mark.slow
def test_jpeg_and_truncated_checkpoints(tmp_path):
    import cv2
    jpg = tmp_path / "face.jpg"
    cv2.imwrite(str(jpg), np.full((32, 32, 3), 128, np.uint8))
    out = tmp_path / "m.onnx"
    assert_input_error(run_cli("synergynet", "--checkpoint", jpg, "--out", out), out, str(jpg), "checkpoint")
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(16, 3, 3, 3), "fc.bias": torch.zeros(62)}}, good)
    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_input_error(run_cli(*_tddfa_args(trunc, out)), out, str(trunc), "truncated")


@pytest.mark.slow
def test_pickle_that_is_not_a_state_dict(tmp_path):
    out = tmp_path / "m.onnx"
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    assert_input_error(run_cli(*_tddfa_args(lst, out)), out, "not a state dict", "list")
    mixed = tmp_path / "mixed.pth"
    torch.save({"epoch": 3, "conv1.weight": torch.zeros(1)}, mixed)
    assert_input_error(run_cli(*_tddfa_args(mixed, out)), out, "epoch", "not a tensor")


def test_checkpoint_needing_arbitrary_unpickling_is_refused(tmp_path):
    import argparse
    out = tmp_path / "m.onnx"
    evil = tmp_path / "obj.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, evil)
    line = assert_input_error(run_cli(*_tddfa_args(evil, out)), out, "arbitrary unpickling", str(evil))
    assert "re-save" in line


@pytest.mark.slow
def test_checkpoint_of_another_architecture(tmp_path):
    from export.nets.mobilenet_v1 import MobileNetV1
    ck = tmp_path / "mb1.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in MobileNetV1(1.0).state_dict().items()}}, ck)
    out = tmp_path / "m.onnx"
    line = assert_input_error(run_cli("synergynet", "--checkpoint", ck, "--out", out), out,
                              "does not fit the synergynet network", "missing keys", "unexpected keys")
    assert "param_mean" in line and "conv1.weight" in line
    # a 3DDFA-V2 checkpoint whose fc has another output size: the mismatched shape is named
    sd = MobileNetV1(0.5, num_classes=10).state_dict()
    ck2 = tmp_path / "mb05_10.pth"
    torch.save(sd, ck2)
    line = assert_input_error(run_cli(*_tddfa_args(ck2, out)), out, "shape mismatch", "fc.weight")
    assert "(10, 512) vs (62, 512)" in line


def _small_3ddfa_ckpt(tmp_path, width=0.25):
    from export.nets.mobilenet_v1 import MobileNetV1
    torch.manual_seed(0)
    ck = tmp_path / "mb025.pth"
    sd = MobileNetV1(width).state_dict()
    sd["fc_param.weight"] = sd.pop("fc.weight") * 0.01  # 3DDFA-V2 naming, small outputs
    sd["fc_param.bias"] = sd.pop("fc.bias") * 0.0
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, ck)
    return ck


@pytest.mark.slow
def test_missing_and_malformed_bfm(tmp_path):
    ck = _small_3ddfa_ckpt(tmp_path)
    out = tmp_path / "m.onnx"
    assert_input_error(run_cli(*_tddfa_args(ck, out, bfm=tmp_path / "no_bfm")), out, "BFM folder not found")
    bad = tmp_path / "bfm_bad"
    bad.mkdir()
    n = 3 * 53215
    np.save(bad / "u_shp.npy", np.zeros((n, 1), np.float32))
    np.save(bad / "u_exp.npy", np.zeros((n, 1), np.float32))
    line = assert_input_error(run_cli(*_tddfa_args(ck, out, bfm=bad)), out, "w_shp_sim.npy", "missing")
    np.save(bad / "w_shp_sim.npy", np.zeros((n, 39), np.float32))
    line = assert_input_error(run_cli(*_tddfa_args(ck, out, bfm=bad)), out, "w_shp_sim.npy", "(159645, 40)")
    (bad / "w_shp_sim.npy").write_bytes(b"not numpy")
    assert_input_error(run_cli(*_tddfa_args(ck, out, bfm=bad)), out, "w_shp_sim.npy", "not a readable .npy")


@pytest.mark.slow
def test_bad_param_stats(tmp_path):
    ck = _small_3ddfa_ckpt(tmp_path)
    out = tmp_path / "m.onnx"
    txt = tmp_path / "stats.pkl"
    txt.write_text("hello")
    assert_input_error(run_cli(*_tddfa_args(ck, out, stats=txt)), out, str(txt), "pickle")
    wrong = tmp_path / "wrong.pkl"
    pickle.dump({"mean": np.zeros(61), "std": np.ones(61)}, open(wrong, "wb"))
    assert_input_error(run_cli(*_tddfa_args(ck, out, stats=wrong)), out, str(wrong), "(62,)")
    evil = tmp_path / "evil.pkl"
    pickle.dump({"mean": Path("x")}, open(evil, "wb"))
    assert_input_error(run_cli(*_tddfa_args(ck, out, stats=evil)), out, str(evil), "refusing")


@pytest.mark.slow
def test_unwritable_out(tmp_path):
    ck = _small_3ddfa_ckpt(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "m.onnx"  # parent is a regular file
    assert_input_error(run_cli(*_tddfa_args(ck, out)), out, "cannot write --out", str(out))
    d = tmp_path / "adir"
    d.mkdir()
    assert_input_error(run_cli(*_tddfa_args(ck, d)), d / "x", "is a folder")


def test_usage_error_exit_2(tmp_path):
    r = run_cli("3ddfa-v2", "--out", tmp_path / "m.onnx")
    assert r.returncode == 2 and "--checkpoint" in r.stderr
    r = run_cli("resnet", "--checkpoint", "x", "--out", "y")
    assert r.returncode == 2


@pytest.mark.slow
def test_cli_exports_width_025_and_prints_summary(tmp_path):
    """A random width-0.25 3DDFA-V2 network (width read from the checkpoint), noneck mesh, end to end."""
    ck = _small_3ddfa_ckpt(tmp_path)
    out = tmp_path / "models" / "mb025.onnx"
    r = run_cli(*_tddfa_args(ck, out), "--mesh", "noneck", "--opset", "18")
    assert r.returncode == 0, r.stderr
    assert "[export] verified" in r.stderr
    s = r.stdout
    assert "architecture   3ddfa-v2 (width 0.25)" in s and "vertices     Nx38365x3" in s
    assert "triangles    76073x3" in s and str(out) in s and "GFLOPs" in s
    assert out.exists() and not out.with_name(out.name + ".tmp").exists()
    import onnx
    assert onnx.load(str(out)).opset_import[0].version == 18


def shift_onnx_landmarks(monkeypatch, px: float) -> None:
    """Make the verification's onnxruntime runs return landmarks shifted by ``px`` (a bad graph)."""
    import export.convert as conv
    real = conv.run_onnx

    def shifted(path, crops, providers=("CPUExecutionProvider",)):
        outs, prov = real(path, crops, providers)
        outs["landmarks"] = outs["landmarks"] + px
        return outs, prov

    monkeypatch.setattr(conv, "run_onnx", shifted)


@pytest.mark.slow
def test_verification_failure_exits_1_and_removes_file(tmp_path, monkeypatch, capsys):
    """A graph that disagrees with PyTorch (simulated: onnxruntime results shifted 0.01 px) is refused."""
    import export.convert as conv
    from export import VerificationError
    from export.cli import main
    shift_onnx_landmarks(monkeypatch, 0.01)
    ck = _small_3ddfa_ckpt(tmp_path)
    out = tmp_path / "m.onnx"
    with pytest.raises(VerificationError, match="landmarks"):
        conv.export_checkpoint("3ddfa-v2", ck, out, bfm_dir=shared("bfm", "3dmm_data"), dense=False,
                               param_stats=shared("models", "3ddfa_v2_mb05", "param_mean_std_62d_120x120.pkl"))
    assert not out.exists() and not out.with_name("m.onnx.tmp").exists()
    rc = main([str(a) for a in _tddfa_args(ck, out)] + ["--no-dense", "-q"])
    assert rc == 1
    assert "verification failed" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


@pytest.mark.slow
def test_cli_exports_width_10_mobilenet(tmp_path):
    """3DDFA-V2's other published width (mb1_120x120.pth): MobileNet-V1 x1.0, read from the shapes."""
    ck = _small_3ddfa_ckpt(tmp_path, width=1.0)
    out = tmp_path / "mb1.onnx"
    r = run_cli(*_tddfa_args(ck, out), "--no-dense")
    assert r.returncode == 0, r.stderr
    assert "architecture   3ddfa-v2 (width 1)" in r.stdout
    assert "parameters     3,270,526" in r.stdout     # 3.271 M, docs/benchmarks.md §2
    import onnx
    names = [o.name for o in onnx.load(str(out)).graph.output]
    assert names == ["params", "landmarks", "rotation", "translation", "scale"]
