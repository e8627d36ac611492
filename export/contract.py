"""The ONNX contract every exported model follows, so one runtime serves them all.

Input ``image``: uint8 [N,120,120,3] BGR (as OpenCV gives it); (x - 127.5) / 128 and NHWC -> NCHW
happen inside the graph. Outputs (float32 unless said):
  params [N,62] de-normalised 3DMM parameters (P 3x4 row-major, 40 shape, 10 expression)
  landmarks [N,68,3] crop pixels, the architecture's official convention (LANDMARK_CONVENTIONS)
  vertices [N,V,3] same convention (absent with dense=False)
  rotation [N,3,3], translation [N,3], scale [N]: official P2sRt (rows 1, 2 of P[:, :3] normalised,
      row 3 their cross product, s = mean of the two row norms, translation = P[:, 3] as is)
  triangles int32 [T,3] (a constant, when known)
metadata_props describe the rest (see ``metadata``).
"""
from __future__ import annotations

import json
from typing import Optional

import numpy as np
import torch
from torch import nn

INPUT_SIZE = 120
INPUT_NAME = "image"
OUTPUT_NAMES = ["params", "landmarks", "vertices", "rotation", "translation", "scale"]

# name -> (x offset, y = Y - y_model, z offset): landmark convention in crop pixels
CONVENTIONS = {
    # SynergyNet reconstruct_vertex: y = std_size + 1 - y
    "synergynet": (0.0, 121.0, 0.0),
    # 3DDFA-V2 similar_transform before the roi scaling: x - 1, y = size - y, z - 1
    "3ddfa_v2": (-1.0, 120.0, -1.0),
}
CONVENTION_TEXT = {
    "synergynet": "v=P[:,:3]@(u+W@a)+P[:,3]; crop px: x=v_x, y=121-v_y, z=v_z (SynergyNet); "
                  "image: x*k+sx, y*k+sy, z*k, k=(ex-sx)/120",
    "3ddfa_v2": "v=P[:,:3]@(u+W@a)+P[:,3]; crop px: x=v_x-1, y=120-v_y, z=v_z-1 (3DDFA-V2 similar_transform); "
                "image: x*k+sx, y*k+sy, z*k then z-=min(z), k=(ex-sx)/120",
}


class ContractModel(nn.Module):
    """uint8 NHWC BGR crops -> the contract outputs, around a network giving whitened params."""

    def __init__(self, net: nn.Module, param_mean, param_std, lmk_u, lmk_w,
                 dense_u=None, dense_w=None, convention: str = "3ddfa_v2", half_net: bool = False):
        super().__init__()
        self.net = net
        self.half_net = half_net
        f32 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
        self.register_buffer("param_mean", f32(param_mean).reshape(1, 62))
        self.register_buffer("param_std", f32(param_std).reshape(1, 62))
        self.register_buffer("lmk_u", f32(lmk_u).reshape(1, 204))
        self.register_buffer("lmk_wT", f32(lmk_w).reshape(204, 50).T.contiguous())
        self.dense = dense_u is not None
        if self.dense:
            # channel-major basis: column c*V + i holds coordinate c of vertex i, so that the mesh
            # comes out as (N, 3, V) and the pose is one batched (3x3)@(3xV) product plus a bias
            # per row (docs/benchmarks.md §3: 3.6-4.0 -> ~1.2 CPU ms/face at batch 8 versus
            # vertex-major [N,V,3] broadcasts, which onnxruntime runs element by element)
            u3 = f32(dense_u).reshape(-1, 3)                                # (V, 3)
            w3 = f32(dense_w).reshape(-1, 3, 50)                            # (V, 3, 50)
            self.register_buffer("dense_uc", u3.T.reshape(1, -1).contiguous())              # (1, 3V)
            self.register_buffer("dense_wc", w3.permute(2, 1, 0).reshape(50, -1).contiguous())  # (50, 3V)
        ox, fy, oz = CONVENTIONS[convention]
        self.register_buffer("conv_offset", torch.tensor([ox, fy, oz], dtype=torch.float32))
        self.register_buffer("conv_sign", torch.tensor([1.0, -1.0, 1.0], dtype=torch.float32))

    def _points(self, alpha, u, wT, P):
        base = (alpha @ wT + u).reshape(alpha.shape[0], -1, 3)            # (N, V, 3) model space
        v = base @ P[:, :, :3].transpose(1, 2) + P[:, :, 3].unsqueeze(1)  # (N, V, 3)
        return v * self.conv_sign + self.conv_offset

    def _dense_points(self, alpha, P):
        """Same values as ``_points`` on the dense basis, computed channel-major."""
        n = alpha.shape[0]
        sign = self.conv_sign.reshape(1, 3, 1)
        R = P[:, :, :3] * sign                                             # convention folded into
        t = P[:, :, 3:] * sign + self.conv_offset.reshape(1, 3, 1)         # the pose: (N,3,3), (N,3,1)
        base = (alpha @ self.dense_wc + self.dense_uc).reshape(n, 3, -1)   # (N, 3, V)
        return (R @ base + t).transpose(1, 2)                              # (N, V, 3)

    def forward(self, image):
        x = image.to(torch.float32).permute(0, 3, 1, 2)
        x = (x - 127.5) / 128.0
        if self.half_net:
            raw = self.net(x.half()).float()
        else:
            raw = self.net(x)
        params = raw * self.param_std + self.param_mean
        P = params[:, :12].reshape(-1, 3, 4)
        alpha = params[:, 12:62]
        landmarks = self._points(alpha, self.lmk_u, self.lmk_wT, P)
        R1, R2 = P[:, 0, :3], P[:, 1, :3]
        n1 = torch.sqrt((R1 * R1).sum(1, keepdim=True))
        n2 = torch.sqrt((R2 * R2).sum(1, keepdim=True))
        r1, r2 = R1 / n1, R2 / n2
        r3 = torch.stack([r1[:, 1] * r2[:, 2] - r1[:, 2] * r2[:, 1],
                          r1[:, 2] * r2[:, 0] - r1[:, 0] * r2[:, 2],
                          r1[:, 0] * r2[:, 1] - r1[:, 1] * r2[:, 0]], 1)
        rotation = torch.stack([r1, r2, r3], 1)
        scale = ((n1 + n2) / 2.0).reshape(-1)
        translation = P[:, :, 3]
        if self.dense:
            vertices = self._dense_points(alpha, P)
            return params, landmarks, vertices, rotation, translation, scale
        return params, landmarks, rotation, translation, scale


def output_names(dense: bool) -> list[str]:
    return [n for n in OUTPUT_NAMES if dense or n != "vertices"]


def metadata(*, arch: str, convention: str, param_mean, param_std, source_sha256: str, n_vertices: int,
             mesh: str, fp16: bool, n_triangles: Optional[int], dense: bool) -> dict:
    from app import __version__
    return {
        "arch": arch,
        "input_size": str(INPUT_SIZE),
        "input_layout": "NHWC uint8",
        "color_order": "BGR",
        "normalization": "(x-127.5)/128 inside the graph",
        "landmark_convention": convention,
        "landmark_formula": CONVENTION_TEXT[convention],
        "param_layout": "P 3x4 row-major [s*R|t] (12), shape alpha (40), expression alpha (10)",
        "param_mean": json.dumps([float(v) for v in np.asarray(param_mean).reshape(-1)]),
        "param_std": json.dumps([float(v) for v in np.asarray(param_std).reshape(-1)]),
        "source_sha256": source_sha256,
        "producer": f"face3d-monitor export {__version__}",
        "producer_version": __version__,
        "vertex_count": str(n_vertices),
        "triangle_count": str(n_triangles if n_triangles is not None else 0),
        "mesh": mesh if dense else "none",
        "precision": "fp16 network, fp32 geometry and I/O" if fp16 else "fp32",
    }


def finalize_onnx(path, *, meta: dict, triangles: Optional[np.ndarray]) -> None:
    """Add the constant ``triangles`` output and metadata_props; save in place."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    if triangles is not None:
        tri = np.ascontiguousarray(triangles, dtype=np.int32)
        node = helper.make_node("Constant", [], ["triangles"], name="triangles_const",
                                value=numpy_helper.from_array(tri, "triangles_value"))
        g.node.append(node)
        g.output.append(helper.make_tensor_value_info("triangles", onnx.TensorProto.INT32, list(tri.shape)))
    del model.metadata_props[:]
    for k, v in meta.items():
        p = model.metadata_props.add()
        p.key, p.value = k, str(v)
    model.producer_name = "face3d-monitor-export"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


# float32 initializers at least this large are stored as float16 by store_fp16 (smaller ones, the
# biases and the 62-d statistics, stay float32: they weigh nothing)
STORE_FP16_MIN_ELEMENTS = 1024
# float16's largest finite value is 65504: tensors beyond this stay float32 (the BFM mean shape,
# up to 1.3e5, would overflow)
STORE_FP16_MAX_ABS = 60000.0


def store_fp16(path) -> dict:
    """Store the large float32 initializers of an ONNX file as float16, each followed by a Cast
    back to float32: the file gets ~2x smaller, the maths stays float32 (onnxruntime folds the
    casts at session start, so the running graph holds the fp16-rounded values as fp32 tensors).
    Saved in place; returns {"initializers": n converted, "kept_fp32": names kept}."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    inits, casts, kept, n = [], [], [], 0
    for init in g.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and int(np.prod(init.dims)) >= STORE_FP16_MIN_ELEMENTS:
            a = numpy_helper.to_array(init)
            if float(np.abs(a).max()) <= STORE_FP16_MAX_ABS:
                inits.append(numpy_helper.from_array(a.astype(np.float16), init.name + "__fp16"))
                casts.append(helper.make_node("Cast", [init.name + "__fp16"], [init.name],
                                              to=onnx.TensorProto.FLOAT, name=init.name + "__cast"))
                n += 1
                continue
            kept.append(init.name)
        inits.append(init)
    del g.initializer[:]
    g.initializer.extend(inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    for p in model.metadata_props:
        if p.key == "precision":
            p.value += ", large weights stored as fp16 (computed in fp32)"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"initializers": n, "kept_fp32": kept}
