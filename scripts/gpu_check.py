"""The GPU path checked and measured in one command (scripts/gpu_check.sh installs and calls this).

    python scripts/gpu_check.py [--cpu] [--out DIR] [--budget-s 480] [--models DIR] [--shared DIR]
                                [--batches 1,8,64,256,1024] [--runs 50] [--frames 300]
                                [--no-tests] [--no-pipeline]

Steps, in one process, each reported in the JSON and the markdown table it writes:

1. Environment: Python, onnxruntime (version, file, providers), ``nvidia-smi``, torch and CUDA,
   the CPU; in GPU mode whether onnxruntime really starts CUDAExecutionProvider here (read back
   from a session; when it does not, the reason and an exit status of 2 before any measurement).
2. Models: the four files tests/test_gpu.py names (3DDFA-V2 x0.5 and SynergyNet, fp32 and
   ``--fp16``, dense mesh) exported with ``python -m export`` from ``--shared`` into DIR/models, or
   taken from ``--models`` (made elsewhere with the same commands).
3. Tests: ``pytest -m gpu tests/test_gpu.py`` on that device (FACE3D_TEST_DEVICE, with
   FACE3D_REQUIRE_CUDA=1 in GPU mode so that a CUDA that does not start fails instead of skipping).
4. 3DMM speed: ms/face, faces/s at each batch size, every model, with and without I/O binding
   (export.bench.ort_runner), on CUDA (default options, TF32 off, onnxruntime's CUDA graph, the
   TensorRT provider when onnxruntime lists it) or on the CPU (``--cpu``); each row also gives the
   largest landmark difference from the fp32 CPU reference on the same (seeded random) crops;
   PyTorch eager rows for the same weights when torch is there. Time per row is shared out of the
   budget (at most ``--runs`` timed runs, at least one).
5. Pipeline: ``python -m app.eval.bench`` on the 720p clip, looping, offline as fast as possible
   (no recording), 3DDFA-V2 x0.5 fp32 and fp16, with and without the face mesh and overlays, and
   once with the H.264 recording (the goal configuration). Needs mediapipe and PyAV; without them
   the step is skipped with that reason.

``--budget-s`` bounds the whole run (default 480 s = 8 min): steps that would start after their
share of it are recorded as skipped ("time budget"), a running pytest or pipeline run is stopped
at its share. Exit status: 0 all run steps passed, 1 a test or a check failed, 2 bad input or no
usable device. Writes DIR/gpu_check.json, DIR/gpu_check.md (each to a temp file, then renamed),
DIR/tests.log, DIR/pipeline_*.json and DIR/models/.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# run from a checkout: its app/ and export/ come first, installed or not
sys.path.insert(0, str(ROOT))

from export import bench as xbench  # noqa: E402

MODEL_FILES = {"3ddfa_v2_mb05": ("3ddfa-v2", False), "3ddfa_v2_mb05_fp16": ("3ddfa-v2", True),
               "synergynet": ("synergynet", False), "synergynet_fp16": ("synergynet", True)}
LABEL = {"3ddfa_v2_mb05": "3DDFA-V2 x0.5 fp32", "3ddfa_v2_mb05_fp16": "3DDFA-V2 x0.5 fp16",
         "synergynet": "SynergyNet fp32", "synergynet_fp16": "SynergyNet fp16"}
CLIP = ("media", "talking_head_720p.mp4")
# outputs timed: what the app fetches per frame (app/model3dmm.py), the dense mesh included
RUN_OUTPUTS = ["landmarks", "rotation", "translation", "scale", "vertices"]
REPORT_RESERVE_S = 5.0


class CheckInputError(Exception):
    pass


class Budget:
    def __init__(self, seconds: float):
        self.t0 = time.monotonic()
        self.end = self.t0 + seconds

    def left(self) -> float:
        return self.end - time.monotonic() - REPORT_RESERVE_S

    def elapsed(self) -> float:
        return time.monotonic() - self.t0


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- 1. environment

def _cmd(args: list[str], timeout: float = 30) -> str:
    if shutil.which(args[0]) is None:
        return f"{args[0]}: not found"
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{' '.join(args)}: no answer within {timeout:.0f} s"
    return (r.stdout + r.stderr).strip()


def nvidia_lib_dirs() -> list[str]:
    """lib folders of the nvidia-* wheels (CUDA, cuBLAS, cuDNN ...) on this Python's path."""
    dirs = []
    for p in sys.path:
        for d in sorted(glob.glob(os.path.join(p, "nvidia", "*", "lib"))):
            if glob.glob(os.path.join(d, "*.so*")) and d not in dirs:
                dirs.append(d)
    return dirs


def environment() -> dict:
    import onnxruntime as ort

    env = {"python": f"{platform.python_version()} ({sys.executable})", "platform": platform.platform(),
           "cpu": xbench._cpu_model(), "logical_cpus": os.cpu_count(), "loadavg_1min": os.getloadavg()[0],
           "onnxruntime": f"{ort.__version__} ({Path(ort.__file__).parent})",
           "onnxruntime_providers": ort.get_available_providers(),
           "nvidia_smi": _cmd(["nvidia-smi"]),
           "gpu": _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                        "--format=csv,noheader"]),
           "nvidia_lib_dirs": nvidia_lib_dirs(),
           "ld_library_path": os.environ.get("LD_LIBRARY_PATH", ""),
           "ld_library_path_added_by_wrapper": os.environ.get("FACE3D_NVIDIA_LIBS_ADDED", ""),
           "git": _cmd(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"])}
    if importlib.util.find_spec("torch") is not None:
        # a subprocess: torch loads its own CUDA libraries, which would hide whether onnxruntime
        # finds them by itself in this process
        env["torch"] = _cmd([sys.executable, "-c", "import torch; print(torch.__version__, 'cuda', "
                             "torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"],
                            timeout=120)
    else:
        env["torch"] = "not installed"
    for name in ("mediapipe", "av", "onnx", "cv2"):
        env[name] = "installed" if importlib.util.find_spec(name) is not None else "not installed"
    return env


def _probe_model() -> bytes:
    """A one-node ONNX graph (Relu on 4 floats) to start a provider with."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def cuda_start() -> tuple[bool, str]:
    """Does onnxruntime start CUDAExecutionProvider in this process (read back from a session)?"""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False, (f"onnxruntime {ort.__version__} has no CUDAExecutionProvider "
                       f"({', '.join(ort.get_available_providers())}): install onnxruntime-gpu")
    ort.set_default_logger_severity(4)   # the reason is read from a child process below
    so = ort.SessionOptions()
    so.log_severity_level = 4
    sess = ort.InferenceSession(_probe_model(), so, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    ort.set_default_logger_severity(2)
    got = sess.get_providers()[0]
    if got != "CUDAExecutionProvider":
        r = subprocess.run([sys.executable, __file__, "--probe-cuda"], capture_output=True, text=True, timeout=120)
        why = [ln.split("FAIL : ")[-1].strip() for ln in r.stderr.splitlines() if "Failed to load library" in ln]
        hint = ("; the nvidia-* wheels' libraries are on this Python's path: try scripts/gpu_check.sh "
                "--nvidia-libs (sets LD_LIBRARY_PATH)") if nvidia_lib_dirs() and not os.environ.get(
                    "FACE3D_NVIDIA_LIBS_ADDED") else ""
        return False, (f"CUDAExecutionProvider is listed but the session runs {got} (no GPU, or the "
                       f"CUDA/cuDNN libraries were not found{': ' + why[0][-240:] if why else ''}){hint}")
    return True, "CUDAExecutionProvider starts (read back from a session)"


# ---------------------------------------------------------------- 2. models

def export_models(shared_dir: Path, out: Path, budget: Budget) -> dict:
    """Export the four models with ``python -m export`` (in parallel where cores allow)."""
    m = shared_dir / "models" / "3ddfa_v2_mb05"
    bfm = shared_dir / "bfm" / "3dmm_data"
    syn = shared_dir / "fixtures" / "synergynet" / "synergynet_random_weights.pth.tar"
    for p in (m / "mb05_120x120.pth", m / "param_mean_std_62d_120x120.pkl", bfm, syn):
        if not p.exists():
            raise CheckInputError(f"--shared {shared_dir}: {p} is missing (give the shared data folder, "
                                  "or --models DIR with exported files)")
    out.mkdir(parents=True, exist_ok=True)
    cmds = {}
    for name, (arch, fp16) in MODEL_FILES.items():
        if arch == "3ddfa-v2":
            c = ["3ddfa-v2", "--checkpoint", m / "mb05_120x120.pth", "--bfm-dir", bfm,
                 "--param-stats", m / "param_mean_std_62d_120x120.pkl"]
        else:
            c = ["synergynet", "--checkpoint", syn]
        cmds[name] = [sys.executable, "-m", "export", *map(str, c), "--out", str(out / f"{name}.onnx"), "-q"] + (
            ["--fp16"] if fp16 else [])
    parallel = (os.cpu_count() or 1) >= 8
    done = {}
    procs = {}
    for name, c in cmds.items():
        log("export: " + " ".join(c[1:]))
        procs[name] = (time.monotonic(), subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE,
                                                          stderr=subprocess.STDOUT, text=True))
        if not parallel:
            done[name] = _finish_export(name, *procs.pop(name), budget)
    for name, (t0, p) in procs.items():
        done[name] = _finish_export(name, t0, p, budget)
    return done


def _finish_export(name, t0, proc, budget):
    try:
        text, _ = proc.communicate(timeout=max(budget.left(), 1.0))
    except subprocess.TimeoutExpired:
        proc.kill()
        text, _ = proc.communicate()
        raise CheckInputError(f"export of {name} did not finish within the time budget") from None
    if proc.returncode != 0:
        raise CheckInputError(f"export of {name} failed (exit {proc.returncode}): {text.strip()[-600:]}")
    return {"seconds": round(time.monotonic() - t0, 1), "log": text.strip().splitlines()[-6:]}


def model_paths(folder: Path) -> dict:
    paths = {name: folder / f"{name}.onnx" for name in MODEL_FILES}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise CheckInputError(f"--models {folder}: missing {', '.join(missing)} (export them with "
                              "scripts/gpu_check.py --out DIR, which leaves them in DIR/models)")
    return paths


# ---------------------------------------------------------------- 3. tests

def run_tests(device: str, models_dir: Path, shared_dir: Path | None, out: Path, seconds: float) -> dict:
    env = dict(os.environ, FACE3D_TEST_DEVICE=device, FACE3D_GPU_MODELS=str(models_dir),
               QT_QPA_PLATFORM="offscreen")
    if shared_dir is not None:
        env["SHARED_DIR"] = str(shared_dir)
    if device == "cuda":
        env["FACE3D_REQUIRE_CUDA"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    log("tests: " + " ".join(cmd[1:]) + f" (FACE3D_TEST_DEVICE={device})")
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(seconds, 1.0))
        text, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        text = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        text += f"\nstopped: the tests' share of the time budget ({seconds:.0f} s) ran out\n"
        rc = None
    (out / "tests.log").write_text(text)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else ""
    fails = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return {"command": " ".join(cmd[2:]), "device": device, "returncode": rc, "summary": summary,
            "failures": fails, "seconds": round(time.monotonic() - t0, 1),
            "passed": rc == 0}


# ---------------------------------------------------------------- 4. 3DMM speed

def _timed(fn, max_runs: int, seconds: float) -> tuple[list[float], list[float]]:
    """Two warm-up calls, then timed calls until max_runs or ``seconds`` (at least one)."""
    t_end = time.monotonic() + seconds
    for _ in range(2):
        fn()
    wall, cpu = [], []
    while len(wall) < max_runs and (not wall or time.monotonic() < t_end):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    return wall, cpu


def _variants(device: str) -> list[tuple[str, list]]:
    """(label, providers) per execution setup to time."""
    import onnxruntime as ort

    if device == "cpu":
        return [("CPU", ["CPUExecutionProvider"])]
    out = [("CUDA", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
           ("CUDA TF32 off", [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]),
           ("CUDA graph", [("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])]
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        out.append(("TensorRT", [("TensorrtExecutionProvider", {"trt_engine_cache_enable": "0"}),
                                 "CUDAExecutionProvider", "CPUExecutionProvider"]))
    return out


def _session(model: Path, providers: list, threads: int):
    """(session, None) or (None, why it cannot run with these providers)."""
    import onnxruntime as ort

    so = xbench._options(threads)
    so.log_severity_level = 3
    want = providers[0] if isinstance(providers[0], str) else providers[0][0]
    try:
        sess = ort.InferenceSession(str(model), so, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own errors (e.g. CUDA graph refused), reported
        return None, (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    if sess.get_providers()[0] != want:
        return None, f"{want} did not start (the session runs {sess.get_providers()[0]})"
    return sess, None


_REF_SESSIONS: dict = {}


def _reference(model: Path, x: np.ndarray) -> np.ndarray:
    """Landmarks of the fp32 model on the CPU provider with graph optimisations off."""
    import onnxruntime as ort

    if model not in _REF_SESSIONS:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        _REF_SESSIONS[model] = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    return _REF_SESSIONS[model].run(["landmarks"], {"image": x})[0]


def bench_3dmm(models: dict, device: str, batches: list[int], runs: int, seconds: float,
               shared_dir: Path | None) -> dict:
    threads, how = xbench.physical_cores()
    rows, notes = [], []
    t_end = time.monotonic() + seconds
    variants = _variants(device)
    # a CUDA graph needs fixed buffers: I/O binding only; TensorRT builds an engine per input shape
    # (tens of seconds each): I/O binding and 3DDFA-V2 only
    cases = [(v, name, io) for v in variants for name in MODEL_FILES for io in (True, False)
             if not (v[0] in ("CUDA graph", "TensorRT") and not io)
             and not (v[0] == "TensorRT" and not name.startswith("3ddfa"))]
    refs: dict = {}
    skipped = []
    n_left = len(cases) * len(batches)
    for (vlabel, provs), name, io in cases:
        arch, fp16 = MODEL_FILES[name]
        ref_model = models["3ddfa_v2_mb05" if arch == "3ddfa-v2" else "synergynet"]
        sess = why = None
        if vlabel != "CUDA graph":
            sess, why = _session(models[name], provs, threads)
        for b in batches:
            left = t_end - time.monotonic()
            if left <= 0:
                skipped.append(f"{vlabel} {LABEL[name]} batch {b} io-binding {io}")
                n_left -= 1
                continue
            share = left / max(n_left, 1)
            n_left -= 1
            x = xbench._crops(b)
            key = (ref_model, b)
            if key not in refs:
                refs[key] = _reference(ref_model, x)
            if vlabel == "CUDA graph":   # a graph per input shape: one session per batch size
                sess, why = _session(models[name], provs, threads)
            row = {"variant": vlabel, "model": name, "label": LABEL[name], "io_binding": io, "batch": b}
            if sess is None:
                rows.append({**row, "error": why})
                continue
            dev = "cpu" if device == "cpu" else "cuda"
            like = None
            if vlabel == "CUDA graph":   # output shapes from a session without the graph
                plain, why = _session(models[name], ["CUDAExecutionProvider", "CPUExecutionProvider"], threads)
                if plain is None:
                    rows.append({**row, "error": why})
                    continue
                like = plain.run(RUN_OUTPUTS, {"image": x})
                del plain
            fn = xbench.ort_runner(sess, RUN_OUTPUTS, x, dev, io, out_like=like)
            try:
                wall, cpu = _timed(fn, runs, share)
                got = fn()   # after the timed runs: a CUDA graph is replaying by now
            except Exception as e:  # noqa: BLE001 - onnxruntime's errors at run time, reported per row
                rows.append({**row, "error": (str(e).strip().splitlines() or [type(e).__name__])[0][:300]})
                continue
            lm = got[1 + RUN_OUTPUTS.index("landmarks")].numpy() if io else got[RUN_OUTPUTS.index("landmarks")]
            e = xbench._entry(f"onnxruntime {vlabel}", "all", b, len(wall), wall, cpu)
            rows.append({**row, **{k: e[k] for k in ("ms_per_batch", "ms_per_face", "min_ms_per_face",
                                                      "cpu_ms_per_face", "runs")},
                         "faces_per_s": 1000.0 / e["ms_per_face"],
                         "max_landmark_diff_px": float(np.abs(lm.astype(np.float64) - refs[key]).max())})
            log(f"3dmm {vlabel:<14} {LABEL[name]:<19} io-binding {str(io):<5} batch {b:>5}: "
                f"{e['ms_per_face']:.4f} ms/face, {1000.0 / e['ms_per_face']:,.0f} faces/s, "
                f"max |dlandmarks| {rows[-1]['max_landmark_diff_px']:.2e} px ({len(wall)} runs)")
            if vlabel == "CUDA graph":
                sess = None
        sess = None
    torch_rows = _bench_torch(device, batches, runs, t_end, shared_dir, threads, notes)
    return {"threads": threads, "threads_source": how, "outputs": RUN_OUTPUTS,
            "input": "seeded random uint8 crops [N,120,120,3] (export.bench._crops)",
            "reference": "fp32 model, CPUExecutionProvider, graph optimisations off",
            "rows": rows, "torch_rows": torch_rows, "skipped_for_time": skipped, "notes": notes}


def _bench_torch(device, batches, runs, t_end, shared_dir, threads, notes) -> list:
    if importlib.util.find_spec("torch") is None:
        notes.append("PyTorch eager: torch not installed")
        return []
    if shared_dir is None or not (shared_dir / "models" / "3ddfa_v2_mb05").is_dir():
        notes.append("PyTorch eager: no --shared folder with the checkpoints")
        return []
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        notes.append(f"PyTorch eager: torch {torch.__version__} sees no CUDA device")
        return []
    torch.set_num_threads(threads)
    m = shared_dir / "models" / "3ddfa_v2_mb05"
    specs = [("3ddfa_v2_mb05", dict(arch="3ddfa-v2", checkpoint=m / "mb05_120x120.pth",
                                    bfm_dir=shared_dir / "bfm" / "3dmm_data",
                                    param_stats=m / "param_mean_std_62d_120x120.pkl")),
             ("synergynet", dict(arch="synergynet",
                                 checkpoint=shared_dir / "fixtures" / "synergynet" / "synergynet_random_weights.pth.tar"))]
    rows = []
    n_left = len(specs) * len(batches)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for name, kw in specs:
        tm = xbench.torch_model(device=device, **kw)
        for b in batches:
            left = t_end - time.monotonic()
            n_left -= 1
            if left <= 0:
                notes.append(f"PyTorch eager {name} batch {b}: skipped (time budget)")
                continue
            xt = torch.from_numpy(xbench._crops(b)).to(device)

            def fn():
                with torch.no_grad():
                    tm(xt)
                sync()
            wall, cpu = _timed(fn, runs, left / max(n_left + 1, 1))
            e = xbench._entry(f"torch {torch.__version__} eager {device}", "all", b, len(wall), wall, cpu)
            rows.append({"variant": e["runtime"], "model": name, "label": LABEL[name], "batch": b,
                         **{k: e[k] for k in ("ms_per_batch", "ms_per_face", "min_ms_per_face", "cpu_ms_per_face",
                                              "runs")}, "faces_per_s": 1000.0 / e["ms_per_face"]})
            log(f"3dmm {e['runtime']} {LABEL[name]} batch {b}: {e['ms_per_face']:.4f} ms/face")
        del tm
    return rows


# ---------------------------------------------------------------- 5. pipeline

def pipeline_configs(models: dict) -> list[tuple[str, list[str]]]:
    m32, m16 = str(models["3ddfa_v2_mb05"]), str(models["3ddfa_v2_mb05_fp16"])
    return [("3DDFA-V2 fp32, face mesh eyes, overlays, no recording", ["--model", m32, "--no-record"]),
            ("3DDFA-V2 fp32, no face mesh, no overlays, no recording",
             ["--model", m32, "--no-record", "--no-eyes", "--layers", "none"]),
            ("3DDFA-V2 fp16, face mesh eyes, overlays, no recording", ["--model", m16, "--no-record"]),
            ("3DDFA-V2 fp32, face mesh eyes, overlays, H.264 recording (goal config)", ["--model", m32])]


def bench_pipeline(models: dict, device: str, clip: Path, frames: int, out: Path, seconds: float) -> dict:
    missing = [n for n in ("mediapipe", "av") if importlib.util.find_spec(n) is None]
    if missing:
        return {"skipped": f"{' and '.join(missing)} not installed (the pipeline needs mediapipe and PyAV)", "runs": []}
    if not clip.is_file():
        return {"skipped": f"clip {clip} not found", "runs": []}
    runs = []
    t_end = time.monotonic() + seconds
    configs = pipeline_configs(models)
    for i, (label, extra) in enumerate(configs):
        left = t_end - time.monotonic()
        if left <= 5:
            runs.append({"config": label, "skipped": "time budget"})
            continue
        share = left / (len(configs) - i)
        js = out / f"pipeline_{i}.json"
        cmd = [sys.executable, "-m", "app.eval.bench", "--video", str(clip), "--device", device,
               "--frames", str(frames), "--warmup", str(min(20, max(2, frames // 5))), "--json", str(js), *extra]
        log("pipeline: " + " ".join(cmd[1:]))
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=share)
        except subprocess.TimeoutExpired:
            runs.append({"config": label, "command": " ".join(cmd[1:]),
                         "error": f"stopped after its share of the time budget ({share:.0f} s): use fewer --frames"})
            continue
        row = {"config": label, "command": " ".join(cmd[1:]), "seconds": round(time.monotonic() - t0, 1)}
        if r.returncode != 0:
            row["error"] = f"exit {r.returncode}: {r.stderr.strip()[-500:]}"
        else:
            res = json.loads(js.read_text())
            row.update({k: res[k] for k in ("fps", "frames", "frames_with_face", "cpu_ms_per_frame", "provider",
                                            "model", "record", "loadavg_1min")})
            row["stage_ms"] = res["stage_ms"]
            log(f"pipeline {label}: {res['fps']:.1f} fps on {res['provider']}")
        runs.append(row)
    return {"clip": str(clip), "device": device, "runs": runs}


# ---------------------------------------------------------------- report

def _f(v, nd=3):
    return "-" if v is None else (f"{v:,.0f}" if isinstance(v, float) and v >= 1000 else f"{v:.{nd}f}")


def markdown(rep: dict) -> str:
    env = rep["environment"]
    L = [f"# GPU check ({rep['mode']} mode), {rep['date']}", "",
         f"- command: `{rep['command']}`",
         f"- machine: {env['cpu']}, {env['logical_cpus']} logical CPUs, load average {env['loadavg_1min']:.1f}; "
         f"GPU: {env['gpu'].splitlines()[0] if env['gpu'] else '-'}",
         f"- onnxruntime {env['onnxruntime']}, providers {', '.join(env['onnxruntime_providers'])}; "
         f"torch: {env['torch']}; checkout: {env['git']}",
         f"- device check: {rep.get('device_check', '-')}",
         f"- took {rep['seconds']:.0f} s of a {rep['budget_s']:.0f} s budget; status: **{rep['status']}**"]
    L += ([f"- error: {rep['error']}"] if "error" in rep else []) + [""]
    t = rep.get("tests")
    if t:
        L += ["## Tests (`pytest -m gpu tests/test_gpu.py`)", "", f"{t['summary']} ({t['seconds']} s)", ""]
        L += [f"- {f}" for f in t["failures"]] + ([""] if t["failures"] else [])
    b = rep.get("bench_3dmm")
    if b:
        L += ["## 3DMM network + dense mesh (all outputs the app fetches)", "",
              f"Input: {b['input']}; {b['threads']} intra-op threads; max |Δ landmarks| against the {b['reference']} "
              "(crop pixels).", "",
              "| variant | model | I/O binding | batch | ms/batch | ms/face | faces/s | max Δ px | runs |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in b["rows"]:
            if "error" in r:
                L.append(f"| {r['variant']} | {r['label']} | {'yes' if r['io_binding'] else 'no'} | {r['batch']} | "
                         f"not run: {r['error']} |||||")
            else:
                L.append(f"| {r['variant']} | {r['label']} | {'yes' if r['io_binding'] else 'no'} | {r['batch']} | "
                         f"{_f(r['ms_per_batch'])} | {_f(r['ms_per_face'], 4)} | {_f(r['faces_per_s'], 0)} | "
                         f"{r['max_landmark_diff_px']:.1e} | {r['runs']} |")
        for r in b["torch_rows"]:
            L.append(f"| {r['variant']} | {r['label']} | - | {r['batch']} | {_f(r['ms_per_batch'])} | "
                     f"{_f(r['ms_per_face'], 4)} | {_f(r['faces_per_s'], 0)} | - | {r['runs']} |")
        L.append("")
        if b["skipped_for_time"]:
            L += [f"Not run (time budget): {len(b['skipped_for_time'])} rows.", ""]
        L += [f"- {n}" for n in b["notes"]] + ([""] if b["notes"] else [])
    p = rep.get("pipeline")
    if p:
        L += ["## Pipeline (`python -m app.eval.bench`, 720p clip looping, offline)", ""]
        if "skipped" in p:
            L += [f"Skipped: {p['skipped']}.", ""]
        else:
            L += ["| configuration | provider | fps | frames (with face) | 3dmm ms median / p95 | total ms median / p95 | CPU ms/frame |",
                  "|---|---|---:|---:|---|---|---:|"]
            for r in p["runs"]:
                if "fps" in r:
                    s3, st = r["stage_ms"].get("3dmm", {}), r["stage_ms"].get("total", {})
                    L.append(f"| {r['config']} | {r['provider']} | {r['fps']:.1f} | {r['frames']} ({r['frames_with_face']}) | "
                             f"{_f(s3.get('median'), 2)} / {_f(s3.get('p95'), 2)} | {_f(st.get('median'), 2)} / "
                             f"{_f(st.get('p95'), 2)} | {r['cpu_ms_per_frame']:.1f} |")
                else:
                    L.append(f"| {r['config']} | not run: {r.get('error') or r.get('skipped')} ||||||")
            L.append("")
    return "\n".join(L) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _batches(s: str) -> list[int]:
    try:
        b = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        b = []
    if not b or min(b) < 1:
        raise CheckInputError(f"--batches {s!r}: give positive integers such as 1,8,64")
    return b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/gpu_check.py", description=__doc__.split("\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run every step on the CPU (machines without a GPU, CI)")
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_check_out", help="report folder (default %(default)s)")
    ap.add_argument("--budget-s", type=float, default=480.0, help="whole run, seconds (default %(default)s)")
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared")),
                    help="the shared data folder (default $SHARED_DIR or ../shared)")
    ap.add_argument("--models", type=Path, help="folder with the four exported .onnx files (skip the export)")
    ap.add_argument("--batches", default="1,8,64,256,1024", help="3DMM batch sizes (default %(default)s)")
    ap.add_argument("--runs", type=int, default=50, help="most timed runs per 3DMM row (default %(default)s)")
    ap.add_argument("--frames", type=int, default=300, help="measured pipeline frames per run (default %(default)s)")
    ap.add_argument("--no-tests", action="store_true", help="skip the pytest step")
    ap.add_argument("--no-pipeline", action="store_true", help="skip the pipeline benchmark")
    ap.add_argument("--probe-cuda", action="store_true", help=argparse.SUPPRESS)   # child of cuda_start()
    args = ap.parse_args(argv)
    if args.probe_cuda:
        import onnxruntime as ort
        sess = ort.InferenceSession(_probe_model(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        print(sess.get_providers()[0])
        return 0
    budget = Budget(args.budget_s)
    device = "cpu" if args.cpu else "cuda"
    rep = {"mode": "CPU" if args.cpu else "GPU", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": " ".join(["python scripts/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
           "budget_s": args.budget_s}
    status = 0
    try:
        batches = _batches(args.batches)
        if args.runs < 1 or args.frames < 1 or args.budget_s <= REPORT_RESERVE_S:
            raise CheckInputError(f"--runs and --frames must be >= 1 and --budget-s > {REPORT_RESERVE_S:.0f}")
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / ".write_test").write_text("")
            (args.out / ".write_test").unlink()
        except OSError as e:
            raise CheckInputError(f"--out {args.out}: cannot write there ({e.strerror or e})") from None
        env = rep["environment"] = environment()
        log(f"onnxruntime {env['onnxruntime']}, providers: {', '.join(env['onnxruntime_providers'])}")
        print(env["nvidia_smi"], flush=True)
        log(f"torch: {env['torch']}")
        if device == "cuda":
            ok, msg = cuda_start()
            rep["device_check"] = msg
            log(f"device check: {msg}")
            if not ok:
                raise CheckInputError(f"GPU mode: {msg} (or run with --cpu)")
        else:
            rep["device_check"] = "CPU mode (--cpu): CPUExecutionProvider"
        shared_dir = args.shared if args.shared.is_dir() else None
        if args.models:
            models = model_paths(args.models)
            models_dir = args.models
        else:
            if shared_dir is None:
                raise CheckInputError(f"--shared {args.shared} not found: give the shared data folder or --models DIR")
            models_dir = args.out / "models"
            rep["export"] = export_models(shared_dir, models_dir, budget)
            models = model_paths(models_dir)
        if not args.no_tests:
            rep["tests"] = run_tests(device, models_dir, shared_dir, args.out, budget.left() * 0.3)
            status = max(status, 0 if rep["tests"]["passed"] else 1)
            log(f"tests: {rep['tests']['summary']}")
        pipe_share = 0.0 if args.no_pipeline else 0.4
        rep["bench_3dmm"] = bench_3dmm(models, device, batches, args.runs, budget.left() * (1 - pipe_share),
                                       shared_dir)
        if any("error" in r for r in rep["bench_3dmm"]["rows"] if r["variant"] in ("CPU", "CUDA")):
            status = max(status, 1)
        if not args.no_pipeline:
            clip = (shared_dir or args.shared).joinpath(*CLIP)
            rep["pipeline"] = bench_pipeline(models, device, clip, args.frames, args.out, budget.left())
            if any("error" in r for r in rep["pipeline"]["runs"]):
                status = max(status, 1)
    except CheckInputError as e:
        print(f"gpu_check: error: {e}", file=sys.stderr)
        rep["error"] = str(e)
        status = 2
    rep["seconds"] = budget.elapsed()
    rep["status"] = {0: "passed", 1: "a test or a measurement failed", 2: "could not run"}[status]
    if "environment" in rep:
        md = markdown(rep)
        _write(args.out / "gpu_check.json", json.dumps(rep, indent=1))
        _write(args.out / "gpu_check.md", md)
        print(md, flush=True)
        log(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} ({rep['seconds']:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
