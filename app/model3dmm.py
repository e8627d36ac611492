"""Any ONNX file that follows the export contract (docs/export.md), run with onnxruntime.

Contract: input ``image`` uint8 [N,120,120,3] BGR; outputs ``params`` [N,62], ``landmarks``
[N,68,3] (crop pixels, the architecture's official convention), optional ``vertices`` [N,V,3],
``rotation`` [N,3,3], ``translation`` [N,3], ``scale`` [N], optional constant ``triangles`` [T,3];
metadata ``arch``, ``landmark_convention`` ... (read when present: the name shown in the log and
overlay). A file without the uint8 ``image`` input or a required output raises ContractError.

All faces of a frame go through one ``run`` (batch N). Each face is cut by one affine warp
(geometry.crop_affine of the roi box rounded to whole pixels, as the official crop does);
outputs are mapped back to the
image with geometry.crop_to_image. ``provider`` is what onnxruntime really runs (it falls back to
CPU silently when CUDA cannot load, so it is read back from the session).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from app.core import geometry
from app.core.types import FaceEstimate

log = logging.getLogger(__name__)

INPUT_NAME = "image"
REQUIRED_OUTPUTS = ("params", "landmarks", "rotation", "translation", "scale")
OPTIONAL_OUTPUTS = ("vertices", "triangles")
SIZE = geometry.STD_SIZE


class ContractError(Exception):
    """The ONNX file does not follow the export contract (the message names what is missing)."""


class DeviceError(Exception):
    """The requested device cannot run (e.g. --device cuda without a working CUDA provider)."""


# the contract's dense basis (export/contract.py): mean (1, 3V) and basis (50, 3V), channel-major
# (column c*V + i is coordinate c of vertex i); a file made with --store-fp16 stores each as
# NAME__fp16 followed by a Cast to NAME
DENSE_INITIALIZERS = ("dense_uc", "dense_wc")


def decimated_graph(path: str, fraction: float):
    """(model proto, keep) of the contract model at ``path`` with its dense mesh cut to about
    ``fraction`` of the vertices (geometry.decimate_mesh on the mean face): the basis columns of
    the kept vertices only and their triangles, so that the session computes, and the app maps,
    smooths and draws, only those. ``keep``: the kept vertices' indices in the full mesh. Every
    other output is computed by the same nodes from the same weights. ContractError when the file
    has no dense basis or triangles in the contract's form."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper

    try:
        model = onnx.load(path)
    except (DecodeError, OSError, ValueError) as e:
        raise ContractError(f"{path} is not a loadable ONNX model ({type(e).__name__}): re-export it with `python -m export`")
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    dense = {}
    for name in DENSE_INITIALIZERS:
        init = inits.get(name, inits.get(name + "__fp16"))
        if init is None or len(init.dims) != 2 or init.dims[1] % 3:
            raise ContractError(f"--mesh-detail: {path} has no dense basis '{name}' of the export contract "
                                f"(docs/export.md): use --mesh-detail 1 or re-export it with `python -m export`")
        dense[name] = init
    tri_node = next((n for n in g.node if n.op_type == "Constant" and list(n.output) == ["triangles"]), None)
    if tri_node is None:
        raise ContractError(f"--mesh-detail: {path} has no constant 'triangles' output: "
                            "use --mesh-detail 1 or re-export it with `python -m export`")
    tri = numpy_helper.to_array(tri_node.attribute[0].t)
    mean = numpy_helper.to_array(dense["dense_uc"]).astype(np.float32)
    n = mean.shape[1] // 3
    keep, tri_kept = geometry.decimate_mesh(mean.reshape(3, n).T, tri, fraction)
    cols = np.concatenate([keep, keep + n, keep + 2 * n])
    for init in dense.values():
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(init)[:, cols]), init.name))
    tri_node.attribute[0].t.CopyFrom(numpy_helper.from_array(tri_kept.astype(tri.dtype), tri_node.attribute[0].t.name))
    for p in model.metadata_props:
        if p.key == "vertex_count":
            p.value = str(len(keep))
        elif p.key == "triangle_count":
            p.value = str(len(tri_kept))
    return model, keep


def pose_deg(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees, AFLW2000 Pose_Para convention, from a 3DMM rotation."""
    pitch, yaw, roll = [float(v) for v in geometry.pose_aflw_deg(R)]
    return yaw, pitch, roll


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in avail:
            raise DeviceError("--device cuda: this onnxruntime has no CUDAExecutionProvider "
                              f"(available: {', '.join(avail)}); use --device auto or cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in avail else []) + ["CPUExecutionProvider"]
    raise ValueError(f"device must be auto, cuda or cpu, got {device!r}")


def _preload_cuda_libraries(ort) -> None:
    """Load the CUDA / cuDNN libraries of the nvidia-* wheels (onnxruntime-gpu's [cuda,cudnn] extra):
    its CUDA provider does not look in site-packages by itself, so without this a pip-only install
    falls back to the CPU. Only where those wheels are installed (else onnxruntime prints a line per
    missing library)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia")
    if spec is None or not any((Path(p) / "cublas" / "lib").is_dir() for p in spec.submodule_search_locations or ()):
        return
    ort.preload_dlls(directory="")


class Model3DMM:
    def __init__(self, path: str, device: str = "auto", threads: int = 1, flip_average: bool = False,
                 mesh_detail: float = 1.0):
        import onnxruntime as ort

        self.path = str(path)
        self.flip_average = bool(flip_average)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"model file {self.path} not found: give an .onnx made by `python -m export`")
        # the dense mesh on a subset of its vertices (Settings.mesh_detail): the session runs the
        # graph with the kept vertices' basis columns only
        self.mesh_detail = float(mesh_detail)
        self.mesh_keep: Optional[np.ndarray] = None
        source = self.path
        if self.mesh_detail < 1.0:
            proto, self.mesh_keep = decimated_graph(self.path, self.mesh_detail)
            source = proto.SerializeToString()
        so = self._session_options = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        # no busy-waiting of idle intra-op threads: they would take CPU from the face mesh / encoder
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3   # errors only: a CUDA load failure is reported by our own check below
        provs = providers_for(device)
        if "CUDAExecutionProvider" in provs:
            _preload_cuda_libraries(ort)
        # onnxruntime prints a multi-line error when the CUDA provider cannot load and then runs
        # on the CPU silently; quiet it and say ourselves which provider really runs (below)
        ort.set_default_logger_severity(4 if "CUDAExecutionProvider" in provs else 3)
        try:
            self.sess = ort.InferenceSession(source, sess_options=so, providers=provs)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ContractError(f"{self.path} is not a loadable ONNX model ({msg}): re-export it with `python -m export`")
        self.provider_full = self.sess.get_providers()[0]
        self.provider = self.provider_full.replace("ExecutionProvider", "")
        self._check_contract()   # first: a file that is not a contract model is one error line
        if device == "cuda" and self.provider_full != "CUDAExecutionProvider":
            raise DeviceError(f"--device cuda: onnxruntime could not start CUDA for {self.path} "
                              f"(it runs {self.provider_full}); check the CUDA/cuDNN install or use --device auto")
        if device == "auto" and "CUDAExecutionProvider" in provs and self.provider_full != "CUDAExecutionProvider":
            log.warning("--device auto: the CUDA provider could not start (CUDA/cuDNN libraries missing?), "
                        "running %s", self.provider_full)
        meta = self.sess.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta)
        self.arch = meta.get("arch", "")
        self.landmark_convention = meta.get("landmark_convention", "")
        base = os.path.splitext(os.path.basename(self.path))[0]
        # the file name says which weights (e.g. 3ddfa_v2_mb05), the metadata which architecture
        norm = lambda x: x.lower().replace("-", "_")  # noqa: E731
        self.name = base if (not self.arch or norm(self.arch) in norm(base)) else f"{base} [{self.arch}]"
        self.has_vertices = "vertices" in self.output_names
        self.triangles: Optional[np.ndarray] = None
        self._run_names = [n for n in ("landmarks", "rotation", "translation", "scale", "vertices")
                           if n in self.output_names]
        if "triangles" in self.output_names:
            # a constant output: fetch it once with a dummy batch
            tri = self.sess.run(["triangles"], {INPUT_NAME: np.zeros((1, SIZE, SIZE, 3), np.uint8)})[0]
            self.triangles = np.ascontiguousarray(tri, dtype=np.int32)
        self._providers = provs
        # the same graph without the dense mesh, for frames nobody draws (built by prepare or on first use)
        self._no_vertices_sess = None
        self.runs = 0            # number of session runs (one per frame with faces)
        self.last_batch = 0      # N of the last run
        self._batch = np.zeros((8, SIZE, SIZE, 3), np.uint8)
        self._cuda = self.provider_full == "CUDAExecutionProvider"
        log.info("3DMM model %s (%s) on %s", self.name, self.path, self.provider_full)

    def _check_contract(self) -> None:
        ins = {i.name: i for i in self.sess.get_inputs()}
        outs = [o.name for o in self.sess.get_outputs()]
        self.output_names = outs
        problems = []
        if INPUT_NAME not in ins:
            problems.append(f"input '{INPUT_NAME}' (has {', '.join(ins) or 'none'})")
        else:
            i = ins[INPUT_NAME]
            if i.type != "tensor(uint8)":
                problems.append(f"input '{INPUT_NAME}' of type uint8 (has {i.type})")
            shp = list(i.shape)
            if len(shp) != 4 or shp[1:] != [SIZE, SIZE, 3]:
                problems.append(f"input '{INPUT_NAME}' of shape [N,{SIZE},{SIZE},3] (has {shp})")
        missing = [n for n in REQUIRED_OUTPUTS if n not in outs]
        if missing:
            problems.append("output" + ("s " if len(missing) > 1 else " ") + ", ".join(f"'{n}'" for n in missing))
        if problems:
            raise ContractError(f"{self.path} does not follow the export contract: missing {'; '.join(problems)}"
                                " - re-export it with `python -m export`")

    def crops(self, image_bgr: np.ndarray, roi_boxes) -> np.ndarray:
        n = len(roi_boxes)
        if self._batch.shape[0] < n:
            self._batch = np.zeros((n, SIZE, SIZE, 3), np.uint8)
        batch = self._batch[:n]
        for k, roi in enumerate(roi_boxes):
            # the official crop_img cuts the roi box rounded to whole pixels (Python round) and
            # the official mapping back uses the unrounded box: do the same (0.08 px from the
            # official landmarks, vs 1.2 px mean with an unrounded warp: tests/test_model3dmm.py)
            cv2.warpAffine(image_bgr, geometry.crop_affine(np.round(np.asarray(roi[:4], np.float64)), SIZE), (SIZE, SIZE), dst=batch[k],
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        return batch

    def _session_without_vertices(self):
        """An onnxruntime session of this model's graph cut before the dense mesh: onnxruntime runs
        every node of a graph whatever outputs are asked for, and the mesh's one matrix product
        (50 x 115,095 for the neck-less BFM) is two thirds of the shipped model's run (3.96 ms vs
        1.25-1.40 ms per face on the 2-core dev machine; the other outputs equal bit for bit:
        tests/test_model3dmm.py). Built from the file with onnx's own extractor, once."""
        if self._no_vertices_sess is None:
            import onnx
            import onnxruntime as ort

            full = onnx.load(self.path)
            keep = [n for n in self.output_names if n not in ("vertices", "triangles")]
            cut = onnx.utils.Extractor(full).extract_model([INPUT_NAME], keep)
            self._no_vertices_sess = ort.InferenceSession(cut.SerializeToString(), sess_options=self._session_options,
                                                          providers=self._providers)
        return self._no_vertices_sess

    def prepare(self, vertices: bool) -> None:
        """Build now what frames with (or without) the dense mesh will run: the cut session for
        ``vertices=False`` (about 0.9 s, most of it importing onnx), so that the first such frame
        does not wait for it."""
        if not vertices and self.has_vertices:
            self._session_without_vertices()

    def infer(self, batch: np.ndarray, vertices: bool = True) -> dict:
        """One session run on a [N,120,120,3] uint8 batch -> {output name: array} (crop space).
        ``vertices=False`` leaves the dense mesh out (and does not compute it)."""
        self.runs += 1
        self.last_batch = int(batch.shape[0])
        names, sess = self._run_names, self.sess
        if not vertices and self.has_vertices:
            names = [n for n in names if n != "vertices"]
            sess = self._session_without_vertices()
        if self._cuda:
            io = sess.io_binding()
            io.bind_cpu_input(INPUT_NAME, np.ascontiguousarray(batch))
            for n in names:
                io.bind_output(n, "cpu")
            sess.run_with_iobinding(io)
            vals = io.copy_outputs_to_cpu()
        else:
            vals = sess.run(names, {INPUT_NAME: batch})
        return dict(zip(names, vals))

    @staticmethod
    def to_image(out: dict, k: int, roi_box) -> dict:
        """Face k of a batch output mapped to image pixels (official formula) + pose angles."""
        lm = geometry.crop_to_image(out["landmarks"][k], roi_box)
        res = {"landmarks": lm}
        if "vertices" in out:
            res["vertices"] = geometry.crop_to_image(out["vertices"][k], roi_box)
        R = np.asarray(out["rotation"][k], dtype=np.float64)
        sx, sy, ex, ey = [float(v) for v in roi_box[:4]]
        kk = ((ex - sx) + (ey - sy)) / (2.0 * SIZE)
        res["rotation"] = R
        # the contract's translation is in crop space and in the architecture's own convention:
        # not mapped (FaceObservation.translation stays None); landmarks carry the position.
        res["scale"] = float(out["scale"][k]) * kk   # image pixels per model unit
        res["yaw"], res["pitch"], res["roll"] = pose_deg(R)
        return res

    @staticmethod
    def merge_flipped(out: dict, n: int) -> dict:
        """The outputs of a run on N crops followed by their N mirror images as N faces
        (geometry.flip_average: 68 points and rotation averaged, scale averaged; the dense mesh
        and the translation are the unflipped crop's, the BFM vertices having no mirror map here)."""
        lm, R = [], []
        for k in range(n):
            a, b = geometry.flip_average(out["landmarks"][k], out["rotation"][k],
                                         out["landmarks"][n + k], out["rotation"][n + k])
            lm.append(a)
            R.append(b)
        merged = {name: v[:n] for name, v in out.items()}
        merged["landmarks"] = np.stack(lm).astype(np.float32)
        merged["rotation"] = np.stack(R)
        merged["scale"] = (np.asarray(out["scale"][:n], np.float64) + np.asarray(out["scale"][n:2 * n], np.float64)) / 2
        return merged

    def estimate(self, image_bgr: np.ndarray, crops, vertices: bool = True,
                 blendshapes: bool = True) -> tuple[list[Optional[FaceEstimate]], dict]:
        """The FaceBackend step: all faces of a frame in one run, on the tracker's roi boxes (the
        3DDFA-V2 crop policies the model was trained with; upright, roll ignored). ``vertices=False``:
        no dense mesh (FaceEstimate.vertices None), for a frame that nobody draws. (``blendshapes``:
        a 3DMM has none; the landmark model beside it gives them.)"""
        rois = [c.roi for c in crops]
        if not rois:
            return [], {"crop": 0.0, "3dmm": 0.0, "post": 0.0}
        t0 = time.perf_counter()
        batch = self.crops(image_bgr, rois)
        if self.flip_average:
            # the mirror images in the same run: one session call for 2N crops
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        t1 = time.perf_counter()
        out = self.infer(batch, vertices)
        if self.flip_average:
            out = self.merge_flipped(out, len(rois))
        t2 = time.perf_counter()
        ests = [FaceEstimate(**self.to_image(out, k, roi)) for k, roi in enumerate(rois)]
        t3 = time.perf_counter()
        return ests, {"crop": (t1 - t0) * 1e3, "3dmm": (t2 - t1) * 1e3, "post": (t3 - t2) * 1e3}

    def close(self) -> None:
        """Nothing to release (the session goes with the object)."""
