"""The shipped face landmark model as ONNX, to time it in onnxruntime (scripts/bench_landmarks.py).

    python scripts/tflite_to_onnx.py OUT.onnx          (needs ``pip install tflite``)

Reads ``face_landmarks_detector.tflite`` from assets/models/face_landmarker.task and writes the
same network in ONNX (opset 13, NCHW inside, the model's NHWC float input ``image`` [1,256,256,3]
and its three outputs under their TFLite names). The model uses ten TFLite ops, each mapped here:
DEQUANTIZE of its fp16 weights (folded into fp32 initializers), CONV_2D and DEPTHWISE_CONV_2D
(weights OHWI / 1HWC -> OIHW, TFLite SAME padding -> explicit pads), PRELU, ADD, MAX_POOL_2D, PAD,
LOGISTIC and RESHAPE (transposed back to NHWC first, so that the flat order is TFLite's); 4-D
outputs are transposed back to NHWC; any other op is an error naming it. Against LiteRT on the same input the points agree within 2e-4 px
(tests/test_tflite_to_onnx.py). onnxruntime runs it 2.8x slower than LiteRT on this 2-core CPU
(docs/benchmarks.md section 10), so the app keeps LiteRT.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _same_pads(in_hw, kernel, stride) -> list[int]:
    """ONNX pads [top, left, bottom, right] of TFLite's SAME padding (the extra pixel at the end)."""
    out = []
    for n, k, s in zip(in_hw, kernel, stride):
        o = -(-n // s)
        out.append(max((o - 1) * s + k - n, 0))
    return [out[0] // 2, out[1] // 2, out[0] - out[0] // 2, out[1] - out[1] // 2]


def convert(tflite_bytes: bytes):
    """The onnx.ModelProto of the landmark model's TFLite flatbuffer."""
    import onnx
    import tflite
    from onnx import TensorProto, helper, numpy_helper

    ops = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
    sg = model.Subgraphs(0)

    def shape(i):
        return sg.Tensors(i).ShapeAsNumpy().tolist()

    dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
              tflite.TensorType.INT32: np.int32}
    const: dict[int, np.ndarray] = {}
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        b = model.Buffers(t.Buffer())
        if b.DataLength():
            const[i] = np.frombuffer(b.DataAsNumpy().tobytes(), dtypes[t.Type()]).reshape(shape(i))

    nodes, inits = [], []
    tflite_layout: set[int] = set()   # tensors already in TFLite's layout (RESHAPE outputs); 4-D others are NCHW

    def name(i):
        return f"t{i}"

    def init(nm, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def options(op, cls):
        o = cls()
        o.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        return o

    def activation(o, k, out):
        """The node output name for an op with a fused activation, adding the activation node."""
        a = o.FusedActivationFunction()
        if a == tflite.ActivationFunctionType.NONE:
            return name(out)
        if a != tflite.ActivationFunctionType.RELU:
            raise NotImplementedError(f"fused activation {a} (op {k})")
        nodes.append(helper.make_node("Relu", [f"pre{k}"], [name(out)]))
        return f"pre{k}"

    inp = sg.Inputs(0)
    nodes.append(helper.make_node("Transpose", ["image"], [name(inp)], perm=[0, 3, 1, 2]))
    for k in range(sg.OperatorsLength()):
        op = sg.Operators(k)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = ops[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())]
        ins = [op.Inputs(j) for j in range(op.InputsLength())]
        out = op.Outputs(0)
        if code == "DEQUANTIZE":
            const[out] = const[ins[0]].astype(np.float32)
        elif code in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            x, w, b = ins
            W = const[w]
            if code == "CONV_2D":
                o = options(op, tflite.Conv2DOptions)
                wn, group = W.transpose(0, 3, 1, 2), 1                 # OHWI -> OIHW
            else:
                o = options(op, tflite.DepthwiseConv2DOptions)
                wn, group = W.transpose(3, 0, 1, 2), W.shape[3]        # 1HWC -> C1HW
            stride = [o.StrideH(), o.StrideW()]
            kernel = list(wn.shape[2:])
            pads = (_same_pads(shape(x)[1:3], kernel, stride) if o.Padding() == tflite.Padding.SAME
                    else [0, 0, 0, 0])
            args = [name(x), init(f"w{k}", wn)] + ([init(f"b{k}", const[b])] if b >= 0 else [])
            nodes.append(helper.make_node("Conv", args, [activation(o, k, out)], strides=stride,
                                          kernel_shape=kernel, group=group, pads=pads,
                                          dilations=[o.DilationHFactor(), o.DilationWFactor()]))
        elif code == "PRELU":
            a = const[ins[1]]
            if a.size != a.shape[-1]:
                raise NotImplementedError(f"PRELU with per-pixel slopes {a.shape} (op {k})")
            nodes.append(helper.make_node("PRelu", [name(ins[0]), init(f"a{k}", a.reshape(-1, 1, 1))], [name(out)]))
        elif code == "ADD":
            o = options(op, tflite.AddOptions)
            args = [init(f"k{k}_{i}", const[i]) if i in const else name(i) for i in ins]
            nodes.append(helper.make_node("Add", args, [activation(o, k, out)]))
        elif code == "MAX_POOL_2D":
            o = options(op, tflite.Pool2DOptions)
            kernel, stride = [o.FilterHeight(), o.FilterWidth()], [o.StrideH(), o.StrideW()]
            pads = (_same_pads(shape(ins[0])[1:3], kernel, stride) if o.Padding() == tflite.Padding.SAME
                    else [0, 0, 0, 0])
            nodes.append(helper.make_node("MaxPool", [name(ins[0])], [activation(o, k, out)],
                                          kernel_shape=kernel, strides=stride, pads=pads))
        elif code == "PAD":
            p = const[ins[1]]                                  # NHWC [[before, after]] per axis
            order = (0, 3, 1, 2)
            pads = [int(p[i, 0]) for i in order] + [int(p[i, 1]) for i in order]
            nodes.append(helper.make_node("Pad", [name(ins[0]), init(f"p{k}", np.array(pads, np.int64))], [name(out)]))
        elif code == "LOGISTIC":
            nodes.append(helper.make_node("Sigmoid", [name(ins[0])], [name(out)]))
        elif code == "RESHAPE":
            nodes.append(helper.make_node("Transpose", [name(ins[0])], [f"nhwc{k}"], perm=[0, 2, 3, 1]))
            nodes.append(helper.make_node("Reshape", [f"nhwc{k}", init(f"s{k}", np.array(shape(out), np.int64))],
                                          [name(out)]))
            tflite_layout.add(out)
        else:
            raise NotImplementedError(f"TFLite op {code} (op {k}) has no ONNX mapping here")
    outputs = []
    for j in range(sg.OutputsLength()):
        i = sg.Outputs(j)
        nm = sg.Tensors(i).Name().decode()
        if len(shape(i)) == 4 and i not in tflite_layout:
            nodes.append(helper.make_node("Transpose", [name(i)], [nm], perm=[0, 2, 3, 1]))   # NCHW -> NHWC
        else:
            nodes.append(helper.make_node("Identity", [name(i)], [nm]))
        outputs.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, shape(i)))
    graph = helper.make_graph(nodes, "face_landmarks_detector",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape(inp))], outputs, inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8     # what onnxruntime >= 1.14 loads
    onnx.checker.check_model(m)
    return m


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python scripts/tflite_to_onnx.py OUT.onnx", file=sys.stderr)
        return 2
    try:
        import tflite  # noqa: F401
    except ImportError:
        print("error: scripts/tflite_to_onnx.py needs the tflite package: pip install tflite", file=sys.stderr)
        return 2
    from app.assets import task_member
    from app.facemesh import LANDMARK_MODEL
    from app.io.files import atomic_write

    m = convert(task_member(LANDMARK_MODEL))
    with atomic_write(argv[0], "wb") as f:
        f.write(m.SerializeToString())
    print(f"wrote {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
