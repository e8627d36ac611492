"""The CUDA path: exported 3DDFA-V2 x0.5 and SynergyNet on CUDAExecutionProvider against the CPU.

Marked ``gpu``. The device under test is ``FACE3D_TEST_DEVICE`` (default ``cuda``; skipped when
onnxruntime cannot start CUDA here, or failed when ``FACE3D_REQUIRE_CUDA=1``, as
scripts/gpu_check.py sets it in GPU mode). ``FACE3D_TEST_DEVICE=cpu`` runs the same checks with the
app's optimised CPU session as the device under test (what ``scripts/gpu_check.py --cpu`` does).

The reference is always onnxruntime's CPU provider with graph optimisations off (the graph as
exported, fp32), the app's session under test is ``Model3DMM(path, device)``. Inputs are 10 real
face crops: the 8 AFLW2000-3D images cut with their official roi boxes by the app's crop, and the
crops of the two official-code fixtures. Landmarks are compared in crop pixels (120 x 120):
fp32 within 1e-3 px, the fp16 export within 0.25 px of the fp32 reference (the exporter's
own tolerances, docs/export.md); a face's result must not depend on the batch it runs in.
``FACE3D_GPU_MODELS`` names a folder with the four exported files (MODEL_FILES); without it they
are exported here from ../shared.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, shared

pytestmark = pytest.mark.gpu

DEVICE = os.environ.get("FACE3D_TEST_DEVICE", "cuda")
REQUIRE_CUDA = os.environ.get("FACE3D_REQUIRE_CUDA") == "1"
PROVIDER = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}[DEVICE]
# file names in FACE3D_GPU_MODELS (and in scripts/gpu_check.py's models folder)
MODEL_FILES = {("3ddfa-v2", False): "3ddfa_v2_mb05.onnx", ("3ddfa-v2", True): "3ddfa_v2_mb05_fp16.onnx",
               ("synergynet", False): "synergynet.onnx", ("synergynet", True): "synergynet_fp16.onnx"}
FP32_PX = 1e-3
FP16_PX = 0.25


def _cuda_start_problem():
    """None when onnxruntime runs a tiny graph on CUDAExecutionProvider here, else why not."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"onnxruntime {ort.__version__} has no CUDAExecutionProvider ({', '.join(ort.get_available_providers())})"
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CUDAExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        return "CUDAExecutionProvider is listed but could not start (no GPU, or CUDA/cuDNN libraries missing)"
    return None


@pytest.fixture(scope="module", autouse=True)
def _device_available():
    if DEVICE == "cuda":
        why = _cuda_start_problem()
        if why is not None:
            if REQUIRE_CUDA:
                pytest.fail(f"FACE3D_REQUIRE_CUDA=1 but {why}")
            pytest.skip(why)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """(arch, fp16) -> exported ONNX path."""
    given = os.environ.get("FACE3D_GPU_MODELS")
    if given:
        out = {k: Path(given) / name for k, name in MODEL_FILES.items()}
        missing = [str(p) for p in out.values() if not p.is_file()]
        assert not missing, f"FACE3D_GPU_MODELS={given} lacks {', '.join(missing)} (scripts/gpu_check.py exports them)"
        return out
    pytest.importorskip("torch")
    from export.convert import export_checkpoint

    m = shared("models", "3ddfa_v2_mb05")
    bfm = shared("bfm", "3dmm_data")
    syn = shared("fixtures", "synergynet", "synergynet_random_weights.pth.tar")
    d = tmp_path_factory.mktemp("gpu_models")
    out = {}
    for (arch, fp16), name in MODEL_FILES.items():
        out[arch, fp16] = d / name
        if arch == "3ddfa-v2":
            export_checkpoint(arch, m / "mb05_120x120.pth", out[arch, fp16], bfm_dir=bfm, fp16=fp16,
                              param_stats=m / "param_mean_std_62d_120x120.pkl")
        else:
            export_checkpoint(arch, syn, out[arch, fp16], fp16=fp16)
    return out


@pytest.fixture(scope="module")
def crops(models) -> np.ndarray:
    """[10,120,120,3] uint8 BGR real face crops."""
    from app.model3dmm import Model3DMM

    cutter = Model3DMM(str(models["3ddfa-v2", False]), device="cpu")
    proto = np.load(shared("media", "aflw2000", "official_protocol.npz"))
    out = []
    for name, roi in zip(proto["names"], proto["roi_box"]):
        img = cv2.imread(str(shared("media", "aflw2000", f"{name}.jpg")))
        assert img is not None, name
        out.append(cutter.crops(img, [roi])[0].copy())
    out.append(np.load(shared("fixtures", "3ddfa_v2", "mb05_parity.npz"))["crop_bgr"])
    out.append(cv2.imread(str(shared("fixtures", "synergynet", "crop_bgr.png"))))
    x = np.ascontiguousarray(np.stack(out).astype(np.uint8))
    assert x.shape == (10, 120, 120, 3)
    return x


def _reference(path: Path, x: np.ndarray) -> dict:
    """CPU provider, graph optimisations off: the exported graph as it is."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dict(zip(["landmarks", "vertices"], sess.run(["landmarks", "vertices"], {"image": x})))


def _under_test(path: Path):
    from app.model3dmm import Model3DMM

    m = Model3DMM(str(path), device=DEVICE)
    assert m.provider_full == PROVIDER and m.sess.get_providers()[0] == PROVIDER
    return m


def _max_px(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


ARCHS = ["3ddfa-v2", "synergynet"]


@pytest.mark.parametrize("arch", ARCHS)
def test_device_really_runs(arch, models, tmp_path):
    """The app's session reports the provider asked for, and onnxruntime's profile places the
    network's convolutions on it."""
    import onnxruntime as ort

    from app.model3dmm import providers_for

    _under_test(models[arch, False])
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(str(models[arch, False]), so, providers=providers_for(DEVICE))
    sess.run(["landmarks"], {"image": np.zeros((2, 120, 120, 3), np.uint8)})
    events = json.loads(Path(sess.end_profiling()).read_text())
    conv = {e["args"].get("provider") for e in events
            if e.get("cat") == "Node" and e["args"].get("op_name") in ("Conv", "FusedConv")}
    assert conv == {PROVIDER}, conv


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_matches_cpu_reference(arch, models, crops):
    ref = _reference(models[arch, False], crops)
    out = _under_test(models[arch, False]).infer(crops)
    assert _max_px(out["landmarks"], ref["landmarks"]) <= FP32_PX
    assert _max_px(out["vertices"], ref["vertices"]) <= FP32_PX


@pytest.mark.parametrize("arch", ARCHS)
def test_fp16_within_quarter_pixel(arch, models, crops):
    ref = _reference(models[arch, False], crops)
    out = _under_test(models[arch, True]).infer(crops)
    assert _max_px(out["landmarks"], ref["landmarks"]) <= FP16_PX


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_batches_agree(arch, fp16, models, crops):
    """Face k gives the same landmarks alone, in batches of 1..10 and in a batch of 64."""
    tol = FP16_PX if fp16 else FP32_PX
    m = _under_test(models[arch, fp16])
    full = m.infer(crops)["landmarks"].copy()
    for n in range(1, len(crops)):
        got = m.infer(np.ascontiguousarray(crops[:n]))["landmarks"]
        assert _max_px(got, full[:n]) <= tol, n
    for k in range(len(crops)):
        assert _max_px(m.infer(np.ascontiguousarray(crops[k:k + 1]))["landmarks"][0], full[k]) <= tol, k
    big = np.ascontiguousarray(np.resize(crops, (64,) + crops.shape[1:]))
    got = m.infer(big)["landmarks"]
    assert _max_px(got, np.resize(full, (64,) + full.shape[1:])) <= tol


def test_pipeline_device_flag(models, tmp_path):
    """``python -m app.eval.bench --device D`` runs the pipeline on the provider asked for (read back
    from the session) and finds the face on the 720p clip."""
    pytest.importorskip("mediapipe")
    pytest.importorskip("av")
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "app.eval.bench", "--video", str(shared("media", "talking_head_720p.mp4")),
                        "--model", str(models["3ddfa-v2", False]), "--device", DEVICE, "--frames", "6",
                        "--warmup", "2", "--no-record", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["provider"] == PROVIDER.replace("ExecutionProvider", "")
    assert res["frames_with_face"] == 6
