"""Checkpoint -> ONNX (the contract of export.contract) -> verified against PyTorch in onnxruntime.

API: ``export_checkpoint(arch, checkpoint, out, ...) -> report dict``; ``build_contract_model(arch,
checkpoint, ...)`` is the PyTorch module it exports. Raises ExportInputError for bad input (nothing
written) and VerificationError when onnxruntime disagrees with PyTorch beyond tolerance (the file
is removed). The output is written to ``<out>.tmp`` and moved into place with
os.replace only after it passed verification.
"""
from __future__ import annotations

import copy
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from export import ExportInputError, VerificationError
from export import bfm as bfm_mod
from export import checkpoint as ckpt_mod
from export import contract
from export.synthface import rendered_face_crop

ARCHS = ("synergynet", "3ddfa-v2", "mobilefrnet")
TOL_FP32_PX = 1e-3   # export contract (docs/export.md): max |ONNX - PyTorch| in crop pixels, fp32 export
TOL_FP16_PX = 0.25   # export contract: fp16 export vs the fp32 PyTorch model, real weights
TOL_FP32_ROT = 1e-5  # rotation matrices, fp32
# fp16 on the built-in synthetic crops (noise / gradients): measured up to 0.62 px for the real
# 3DDFA-V2 x0.5 weights (0.036 px on the real face crop); weight rounding alone gives 0.35 px there
TOL_FP16_SYNTH_PX = 1.0
# --store-fp16 (fp32 maths over fp16-rounded weights) vs the fp32 PyTorch model, every crop:
# measured 0.026 px (landmarks) / 0.027 px (vertices) on the 8 AFLW2000 crops for 3DDFA-V2 x0.5
TOL_STORE16_PX = 0.05
# ... and on the built-in noise / gradient crops, where the network is most sensitive to weight
# rounding: measured 0.19 px
TOL_STORE16_SYNTH_PX = 0.5
TOL_STORE16_ROT = 1e-3        # rotation entries on face crops
TOL_STORE16_SYNTH_ROT = 2e-2  # ... on the built-in synthetic crops (measured 6.1e-3)


def _log(progress: Optional[Callable[[str], None]], msg: str) -> None:
    if progress is not None:
        progress(msg)


# ---------------------------------------------------------------- building the networks
def _default_noneck_dir(bfm_dir, noneck_dir):
    if noneck_dir is not None:
        return noneck_dir
    if bfm_dir is not None:
        return Path(bfm_dir).resolve().parent / "noneck"
    return None


def _build_synergynet(sd, checkpoint, bfm_dir, param_stats, mesh, noneck_dir, dense):
    from export.nets.synergynet import SynergyNet
    net = SynergyNet()
    ckpt_mod.strict_load(net, sd, checkpoint, "synergynet")
    net.eval()
    if param_stats is not None:
        mean, std = bfm_mod.load_param_stats(param_stats)
        stats_src = str(param_stats)
    else:
        mean, std = net.param_mean.numpy(), net.param_std.numpy()
        stats_src = "checkpoint buffers param_mean/param_std"
    lmk_u = net.u_base.numpy().reshape(-1)
    lmk_w = np.concatenate([net.w_shp_base.numpy(), net.w_exp_base.numpy()], 1)
    basis = None
    if dense:
        tri = bfm_mod.load_full_triangles(bfm_dir) if (bfm_dir is not None and mesh == "full") else None
        u = net.u.numpy().reshape(-1)
        w = np.concatenate([net.w_shp.numpy(), net.w_exp.numpy()], 1)
        basis = bfm_mod.select_mesh(u, w, tri, mesh, _default_noneck_dir(bfm_dir, noneck_dir))
    # the graph needs only the image network (official forward_test), not the buffers / refinement MLPs
    extra = {"mean_shape": net.u.numpy().reshape(-1)}
    return _first_output(net.I2P.backbone), mean, std, lmk_u, lmk_w, basis, "synergynet", stats_src, extra


def _bfm_common(bfm_dir, mesh, noneck_dir, dense):
    if bfm_dir is None:
        raise ExportInputError("this architecture needs --bfm-dir (the 3dmm_data folder of the BFM)")
    arrs = bfm_mod.load_bfm_arrays(bfm_dir)
    kp = arrs["keypoints"]
    lmk_u, lmk_w = arrs["u"][kp], arrs["w"][kp]
    basis = None
    if dense:
        tri = bfm_mod.load_full_triangles(bfm_dir) if mesh == "full" else None
        basis = bfm_mod.select_mesh(arrs["u"], arrs["w"], tri, mesh, _default_noneck_dir(bfm_dir, noneck_dir))
    return lmk_u, lmk_w, basis, arrs["u"]


def _build_3ddfa_v2(sd, checkpoint, bfm_dir, param_stats, mesh, noneck_dir, dense):
    from export.nets.mobilenet_v1 import MobileNetV1
    sd = dict(sd)
    # 3DDFA-V2's load_model: fc_param.* -> fc.*, the auxiliary fc_lm head is not used at inference
    for k in ("weight", "bias"):
        if f"fc_param.{k}" in sd and f"fc.{k}" not in sd:
            sd[f"fc.{k}"] = sd.pop(f"fc_param.{k}")
    dropped = [k for k in list(sd) if k.startswith("fc_lm.")]
    for k in dropped:
        sd.pop(k)
    widen = sd["conv1.weight"].shape[0] / 32.0 if "conv1.weight" in sd and sd["conv1.weight"].ndim == 4 else 1.0
    net = MobileNetV1(widen_factor=widen, num_classes=62)
    ckpt_mod.strict_load(net, sd, checkpoint, "3ddfa-v2 MobileNet-V1")
    net.eval()
    if param_stats is None:
        raise ExportInputError("3ddfa-v2 needs --param-stats (param_mean_std_62d_120x120.pkl of 3DDFA-V2)")
    mean, std = bfm_mod.load_param_stats(param_stats)
    lmk_u, lmk_w, basis, u = _bfm_common(bfm_dir, mesh, noneck_dir, dense)
    extra = {"widen_factor": widen, "ignored_keys": dropped, "mean_shape": u}
    return net, mean, std, lmk_u, lmk_w, basis, "3ddfa_v2", str(param_stats), extra


def _build_mobilefrnet(sd, checkpoint, bfm_dir, param_stats, mesh, noneck_dir, dense):
    from export.nets.mobilefrnet import MobileFRNet

    net = MobileFRNet(num_params=62)
    ckpt_mod.strict_load(net, sd, checkpoint, "mobilefrnet")
    net.eval()
    if param_stats is None:
        if bfm_dir is None:
            raise ExportInputError("mobilefrnet needs --bfm-dir (and --param-stats or <bfm-dir>/param_whitening.pkl)")
        param_stats = Path(bfm_dir) / "param_whitening.pkl"
    mean, std = bfm_mod.load_param_stats(param_stats)
    lmk_u, lmk_w, basis, u = _bfm_common(bfm_dir, mesh, noneck_dir, dense)
    return net, mean, std, lmk_u, lmk_w, basis, "3ddfa_v2", str(param_stats), {"mean_shape": u}


_BUILDERS = {"synergynet": _build_synergynet, "3ddfa-v2": _build_3ddfa_v2, "mobilefrnet": _build_mobilefrnet}


def _contract_kwargs(mean, std, lmk_u, lmk_w, conv, basis) -> dict:
    return dict(param_mean=mean, param_std=std, lmk_u=lmk_u, lmk_w=lmk_w, convention=conv,
                dense_u=basis.u if basis is not None else None, dense_w=basis.w if basis is not None else None)


def build_contract_model(arch: str, checkpoint, *, bfm_dir=None, param_stats=None, mesh: str = "full",
                         dense: bool = True, noneck_dir=None):
    """``checkpoint`` of ``arch`` as the PyTorch module the export traces (export.contract.ContractModel:
    crop uint8 -> params, landmarks, pose, dense vertices), in eval mode. ExportInputError on bad input."""
    if arch not in ARCHS:
        raise ExportInputError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    sd = ckpt_mod.load_state_dict(checkpoint)
    net, mean, std, lmk_u, lmk_w, basis, conv, _, _ = _BUILDERS[arch](
        sd, checkpoint, bfm_dir, param_stats, mesh, noneck_dir, dense)
    return contract.ContractModel(net, **_contract_kwargs(mean, std, lmk_u, lmk_w, conv, basis)).eval()


def _first_output(module):
    """Wrap a module returning (params, feature) so that it returns only the params."""
    import torch

    class First(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)[0]

    return First(module)


# ---------------------------------------------------------------- cost
def _cost(net) -> dict:
    """GFLOPs at 1x3x120x120: export.flops.count_flops (Conv/Linear MACs), GFLOPs = 2 x MACs."""
    from export.flops import count_flops   # imports torch, which the export has loaded already

    macs = count_flops(net, (1, 3, 120, 120))["macs"]
    return {"gflops": 2.0 * macs / 1e9, "gmacs": macs / 1e9,
            "flops_source": "export.flops.count_flops, GFLOPs = 2 x MACs"}


# ---------------------------------------------------------------- verification crops
def builtin_check_crops(n_random: int = 3, seed: int = 0) -> np.ndarray:
    """Seeded uint8 noise crops plus one smooth synthetic crop (gradients + a bright ellipse)."""
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (120, 120, 3), dtype=np.uint8) for _ in range(n_random)]
    yy, xx = np.mgrid[0:120, 0:120].astype(np.float32)
    smooth = np.stack([xx * 2, yy * 2, 255 - xx - yy / 2], -1)
    smooth[((xx - 60) / 35) ** 2 + ((yy - 62) / 45) ** 2 < 1] = (150, 170, 210)
    crops.append(np.clip(smooth, 0, 255).astype(np.uint8))
    return np.stack(crops)


def _check_crop_array(crops) -> np.ndarray:
    a = np.asarray(crops)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[1:] != (120, 120, 3) or a.dtype != np.uint8:
        raise ExportInputError(f"check crops must be uint8 (N,120,120,3), got {a.dtype} {a.shape}")
    return a


def run_onnx(path, crops: np.ndarray, providers: Sequence[str] = ("CPUExecutionProvider",)):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=list(providers))
    names = [o.name for o in sess.get_outputs()]
    outs = sess.run(None, {contract.INPUT_NAME: crops})
    return dict(zip(names, outs)), sess.get_providers()


def _diffs(got: dict, ref: dict, names) -> dict:
    d = {}
    for n in names:
        if got[n].shape != ref[n].shape:
            raise VerificationError(f"ONNX output {n} has shape {got[n].shape}, PyTorch {ref[n].shape}")
        d[n] = float(np.abs(got[n].astype(np.float64) - ref[n]).max())
    # params relative to the magnitude of each parameter (the 62 entries span 1e-4 .. 1e6)
    scale = np.maximum(np.abs(ref["params"]).max(0), 1e-12)
    d["params_rel"] = float((np.abs(got["params"].astype(np.float64) - ref["params"]) / scale).max())
    return d


def _verify(tmp: Path, ref_model, face_crops, synth_crops, names, fp16: bool, triangles, progress,
            rendered_face=None, store16: bool = False) -> dict:
    """onnxruntime (CPU) vs the fp32 PyTorch model; raises VerificationError beyond tolerance.

    fp32: every crop within TOL_FP32_PX. fp16: face crops (the built-in rendered mean face of
    export.synthface and the --check-crop files) within TOL_FP16_PX; the built-in synthetic crops
    (noise, gradients: far from any face, where this network is most sensitive to fp16 rounding)
    within TOL_FP16_SYNTH_PX. store16 (fp16-stored weights, fp32 maths): face crops within
    TOL_STORE16_PX, the built-in synthetic crops within TOL_STORE16_SYNTH_PX.
    """
    import torch
    groups = [("builtin", synth_crops)]
    if rendered_face is not None:
        groups.append(("rendered_face", rendered_face))
    if face_crops is not None:
        groups.append(("check_crops", face_crops))
    result, providers = {}, None
    for label, crops in groups:
        with torch.no_grad():
            ref = dict(zip(names, [t.numpy() for t in ref_model(torch.from_numpy(crops))]))
        got, providers = run_onnx(tmp, crops)
        d = _diffs(got, ref, names)
        single, _ = run_onnx(tmp, crops[:1])  # the batch axis really is dynamic
        d["batch1_vs_batch"] = max(float(np.abs(single[n] - got[n][:1]).max()) for n in names)
        if triangles is not None and ("triangles" not in got or not np.array_equal(got["triangles"], triangles)):
            raise VerificationError("ONNX output triangles differs from the mesh's triangles")
        if fp16:
            tol = TOL_FP16_SYNTH_PX if label == "builtin" else TOL_FP16_PX
        elif store16:
            tol = TOL_STORE16_SYNTH_PX if label == "builtin" else TOL_STORE16_PX
        else:
            tol = TOL_FP32_PX
        checks = [("landmarks", tol), ("batch1_vs_batch", tol)] + ([("vertices", tol)] if "vertices" in names else [])
        if not fp16:
            rot_tol = (TOL_STORE16_SYNTH_ROT if label == "builtin" else TOL_STORE16_ROT) if store16 else TOL_FP32_ROT
            checks.append(("rotation", rot_tol))
        kind = "fp16" if fp16 else ("fp16-stored" if store16 else "fp32")
        for key, t in checks:
            if not np.isfinite(d[key]) or d[key] > t:
                raise VerificationError(f"ONNX vs PyTorch max |diff| of {key} on the {label} crops = {d[key]:.3g} "
                                        f"> {t:g} ({kind} tolerance)")
        result[label] = {"n_crops": int(len(crops)), "tolerance_px": tol, "max_abs_diff": d}
        _log(progress, f"verified {len(crops)} {label} crops in onnxruntime ({providers[0]}): landmarks "
                       f"{d['landmarks']:.2e} px" + (f", vertices {d['vertices']:.2e} px" if "vertices" in d else "")
                       + f" (tolerance {tol:g} px)")
    return {"verification": result, "provider": providers[0]}


# ---------------------------------------------------------------- main entry
def export_checkpoint(arch: str, checkpoint, out, *, bfm_dir=None, param_stats=None, fp16: bool = False,
                      dense: bool = True, opset: int = 17, mesh: str = "full", verify: bool = True,
                      noneck_dir=None, check_crops=None, progress: Optional[Callable[[str], None]] = None,
                      store_fp16: bool = False) -> dict:
    """Export ``checkpoint`` of ``arch`` to ``out`` (ONNX, the contract of export.contract); return a report.

    ``store_fp16``: keep the large weights as fp16 in the file, computed in fp32 (contract.store_fp16)."""
    import torch

    t0 = time.time()
    if arch not in ARCHS:
        raise ExportInputError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHS)}")
    if mesh not in ("full", "noneck"):
        raise ExportInputError(f"unknown mesh {mesh!r}: use full or noneck")
    if fp16 and store_fp16:
        raise ExportInputError("--fp16 and --store-fp16 exclude each other: --fp16 computes in fp16, "
                               "--store-fp16 only stores the weights as fp16")
    if not 13 <= int(opset) <= 21:
        raise ExportInputError(f"opset {opset} not supported: use 13..21 (default 17)")
    out = Path(out)
    if out.is_dir():
        raise ExportInputError(f"--out {out} is a folder: give a file name such as {out / 'model.onnx'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "wb"):
            pass
    except OSError as e:
        raise ExportInputError(f"cannot write --out {out} ({e.strerror or e}); choose a writable location") from None
    try:
        extra_crops = _check_crop_array(check_crops) if check_crops is not None else None
        _log(progress, f"loading checkpoint {checkpoint}")
        sd = ckpt_mod.load_state_dict(checkpoint)
        sha = ckpt_mod.sha256_file(checkpoint)
        net, mean, std, lmk_u, lmk_w, basis, conv, stats_src, extra = _BUILDERS[arch](
            sd, checkpoint, bfm_dir, param_stats, mesh, noneck_dir, dense)
        face_crop = rendered_face_crop(extra.pop("mean_shape"))[None]
        net.eval()
        n_params = sum(p.numel() for p in net.parameters())
        cost = _cost(net)
        _log(progress, f"built {arch}: {n_params / 1e6:.3f} M parameters, {cost['gflops']:.3f} GFLOPs at 120x120")

        kw = _contract_kwargs(mean, std, lmk_u, lmk_w, conv, basis)
        ref_model = contract.ContractModel(net, **kw).eval()
        if fp16:
            export_model = contract.ContractModel(copy.deepcopy(net).half(), half_net=True, **kw).eval()
        else:
            export_model = ref_model
        names = contract.output_names(basis is not None)
        dummy = torch.from_numpy(builtin_check_crops(1)[:2])
        _log(progress, f"exporting ONNX opset {opset}{' (fp16 network)' if fp16 else ''} -> {tmp}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(export_model, (dummy,), str(tmp), dynamo=False, opset_version=int(opset),
                              input_names=[contract.INPUT_NAME], output_names=names,
                              dynamic_axes={n: {0: "N"} for n in [contract.INPUT_NAME] + names},
                              do_constant_folding=True)
        tri = basis.triangles if basis is not None else None
        meta = contract.metadata(arch=arch, convention=conv, param_mean=mean, param_std=std, source_sha256=sha,
                                 n_vertices=basis.n_vertices if basis is not None else 0,
                                 mesh=basis.mesh if basis is not None else "none", fp16=fp16,
                                 n_triangles=None if tri is None else len(tri), dense=basis is not None)
        contract.finalize_onnx(tmp, meta=meta, triangles=tri)
        stored = contract.store_fp16(tmp) if store_fp16 else None
        report = {"arch": arch, "checkpoint": str(checkpoint), "source_sha256": sha, "out": str(out),
                  "n_params": int(n_params), **cost, "param_stats": stats_src, "convention": conv,
                  "fp16": fp16, "opset": int(opset), "mesh": basis.mesh if basis is not None else "none",
                  "n_vertices": basis.n_vertices if basis is not None else 0,
                  "n_triangles": 0 if tri is None else int(len(tri)), "store_fp16": stored, **extra}
        outs = {"params": ["N", 62], "landmarks": ["N", 68, 3], "rotation": ["N", 3, 3],
                "translation": ["N", 3], "scale": ["N"]}
        if basis is not None:
            outs["vertices"] = ["N", basis.n_vertices, 3]
        if tri is not None:
            outs["triangles"] = [int(len(tri)), 3]
        report["outputs"] = {n: outs[n] for n in names + (["triangles"] if tri is not None else [])}
        if verify:
            report.update(_verify(tmp, ref_model, extra_crops, builtin_check_crops(), names, fp16, tri, progress,
                                  rendered_face=face_crop, store16=store_fp16))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    report["file_size_bytes"] = out.stat().st_size
    report["seconds"] = round(time.time() - t0, 2)
    return report
