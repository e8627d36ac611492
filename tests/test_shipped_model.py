"""The shipped models: assets/models/3ddfa_v2_mb05_noneck.onnx is what the exporter makes from
../shared (held to a fresh export on the shared AFLW2000-3D crops), and a clone runs it by default."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from app import assets
from app.core import geometry
from tests.conftest import shared

REGENERATE = ("python -m export 3ddfa-v2 --checkpoint ../shared/models/3ddfa_v2_mb05/mb05_120x120.pth "
              "--bfm-dir ../shared/bfm/3dmm_data --param-stats "
              "../shared/models/3ddfa_v2_mb05/param_mean_std_62d_120x120.pkl --mesh noneck --store-fp16 "
              "--out assets/models/3ddfa_v2_mb05_noneck.onnx")


def aflw_crops() -> np.ndarray:
    """The 8 shared AFLW2000-3D images cut with their official roi boxes (the official crop)."""
    d = shared("media", "aflw2000")
    prot = np.load(d / "official_protocol.npz")
    crops = []
    for name, roi in zip(prot["names"], prot["roi_box"]):
        img = cv2.imread(str(d / f"{name}.jpg"))
        crops.append(cv2.warpAffine(img, geometry.crop_affine(np.round(roi[:4]), 120), (120, 120)))
    return np.stack(crops)


def test_shipped_model_is_the_neckless_3ddfa_v2():
    import onnx

    m = onnx.load(str(assets.DEFAULT_3DMM), load_external_data=False)
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["arch"] == "3ddfa-v2" and meta["mesh"] == "noneck" and meta["vertex_count"] == "38365"
    assert "stored as fp16" in meta["precision"]
    assert assets.DEFAULT_3DMM.stat().st_size < 16 * 2**20      # fp16 storage: ~14 MB, not ~27 MB


@pytest.mark.slow
def test_shipped_model_matches_a_fresh_export(tmp_path):
    """Regenerated with the README's command (fp32 and fp16-stored): the shipped file's 68 landmarks
    within 0.05 px and vertices within 0.1 px of both, on the 8 AFLW2000 crops."""
    pytest.importorskip("torch")
    from export.convert import export_checkpoint, run_onnx

    m = shared("models", "3ddfa_v2_mb05")
    kw = dict(bfm_dir=shared("bfm", "3dmm_data"), param_stats=m / "param_mean_std_62d_120x120.pkl", mesh="noneck")
    crops = aflw_crops()
    shipped = run_onnx(assets.DEFAULT_3DMM, crops)[0]
    for store in (True, False):
        out = tmp_path / f"regen_{store}.onnx"
        rep = export_checkpoint("3ddfa-v2", m / "mb05_120x120.pth", out, store_fp16=store, **kw)
        assert rep["mesh"] == "noneck" and rep["n_vertices"] == 38365
        got = run_onnx(out, crops)[0]
        lm = np.abs(got["landmarks"][..., :2] - shipped["landmarks"][..., :2]).max()
        vt = np.abs(got["vertices"][..., :2] - shipped["vertices"][..., :2]).max()
        print(f"store_fp16={store}: landmarks {lm:.4f} px, vertices {vt:.4f} px")
        assert lm <= 0.05 and vt <= 0.1
        assert np.array_equal(got["triangles"], shipped["triangles"])
        if store:   # the same bytes of weights: exact
            assert lm < 1e-4


def test_store_fp16_halves_the_file_and_keeps_fp32_maths(tmp_path):
    """contract.store_fp16 on a small graph: the weights become fp16 initializers + Cast, the
    output is the fp32 maths over fp16-rounded weights, a tensor beyond fp16's range stays fp32."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")   # export.contract holds the torch graph module too
    from onnx import helper, numpy_helper

    import onnxruntime as ort
    from export.contract import store_fp16

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 64)).astype(np.float32)
    w_big = (rng.normal(size=(64, 64)) * 1e5).astype(np.float32)     # beyond fp16's 65504
    bias = rng.normal(size=(64,)).astype(np.float32)                  # < 1024 elements
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "bias"], ["y"]),
         helper.make_node("MatMul", ["x", "w_big"], ["z"])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64]),
         helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w_big, "w_big"),
         numpy_helper.from_array(bias, "bias")])
    p = tmp_path / "m.onnx"
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.metadata_props.add(key="precision", value="fp32")
    onnx.save(model, str(p))
    size0 = p.stat().st_size
    assert store_fp16(p) == {"initializers": 1, "kept_fp32": ["w_big"]}
    assert p.stat().st_size < size0 - 64 * 64 * 2 + 1024   # w: 16 KiB -> 8 KiB
    types = {i.name: i.data_type for i in onnx.load(str(p)).graph.initializer}
    assert types == {"w__fp16": onnx.TensorProto.FLOAT16, "w_big": onnx.TensorProto.FLOAT,
                     "bias": onnx.TensorProto.FLOAT}
    x = rng.normal(size=(1, 64)).astype(np.float32)
    y, z = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    x64 = x.astype(np.float64)
    err16 = np.abs(y - (x64 @ w.astype(np.float16).astype(np.float64) + bias)).max()
    err32 = np.abs(y - (x64 @ w + bias)).max()
    # fp32 maths (~1e-6) over the fp16-rounded w (rounding ~1e-3): closer to the rounded weights
    assert err16 < 1e-4 < err32
    assert np.allclose(z, x64 @ w_big, rtol=1e-5, atol=1.0)   # the tensor kept fp32 is untouched
