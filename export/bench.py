"""Speed of an exported model: ms per face at batch 1, 8, 32 in onnxruntime and in PyTorch eager.

    python -m export.bench --model M.onnx [--device cpu|cuda] [--batches 1,8,32] [--runs 20] [--io-binding]
                           [--checkpoint C --arch A [--bfm-dir D] [--param-stats P] [--mesh full|noneck]]
                           [--json OUT]

- onnxruntime: graph optimisation ORT_ENABLE_ALL, intra_op_num_threads = physical cores (from
  /proc/cpuinfo; printed). The model is timed for each output set: all outputs, and, when it has
  ``vertices``, again without them and with landmarks only, so the table shows what the dense
  reconstruction costs. Those subsets are separate sessions on the graph pruned to the requested
  outputs (onnx.utils.Extractor): asking a full session for fewer outputs still runs every node
  (measured: the dense 3DDFA-V2 graph took the same time for "landmarks" as for all outputs).
- ``--io-binding``: the onnxruntime rows run with I/O binding: the input batch is copied to the
  device once and the outputs go to buffers allocated there once, so a timed run is the session's
  own work without the host <-> device copies (on the CPU it only saves the output allocations).
  Without it, ``run`` takes and returns host arrays and the copies are part of the time.
- PyTorch eager (only with --checkpoint/--arch): the same weights rebuilt by export.convert's
  builders around export.contract.ContractModel, torch.set_num_threads(physical cores), no_grad.
- Input: seeded random uint8 crops [N,120,120,3]; 3 warm-up runs, then ``--runs`` timed runs;
  the median wall time is reported (ms per batch and per face), with the fastest run and the median
  process CPU time per face (all threads; on a shared machine it is the steadier number).
Bad input (missing model, a model that breaks the contract, cuda without a CUDA provider): one line
on stderr, exit 2. Results go to stdout as a table and, with --json, to a file written atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np


class BenchInputError(Exception):
    pass


def physical_cores() -> tuple[int, str]:
    """(physical core count, how it was found)."""
    try:
        pairs = set()
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip():
                    if core is not None:
                        pairs.add((phys, core))
                    phys = core = None
        if core is not None:
            pairs.add((phys, core))
        if pairs:
            n = len(pairs)
            # a container may see fewer CPUs than the host's cores
            avail = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            return min(n, avail), f"/proc/cpuinfo ({n} physical cores, {avail} CPUs usable)"
    except OSError:
        pass
    n = os.cpu_count() or 1
    return n, f"os.cpu_count() (no /proc/cpuinfo core ids; {n} logical CPUs)"


def _time(fn, runs: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds of each timed run."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1000.0)
        cpu.append((time.process_time() - c0) * 1000.0)
    return wall, cpu


def _entry(runtime, outputs, b, runs, wall, cpu) -> dict:
    med = statistics.median(wall)
    return {"runtime": runtime, "outputs": outputs, "batch": b, "ms_per_batch": med, "ms_per_face": med / b,
            "min_ms_per_face": min(wall) / b, "cpu_ms_per_face": statistics.median(cpu) / b, "runs": runs}


def _crops(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 120, 120, 3), dtype=np.uint8)


def _options(threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    return so


def ort_runner(sess, names: list[str], batch: np.ndarray, device: str, io_binding: bool, out_like=None):
    """A no-argument callable that runs ``sess`` on ``batch`` for the outputs ``names``.

    Plain: ``sess.run`` with host arrays in and out. I/O binding: the input is an OrtValue on
    ``device`` and every output is bound to an OrtValue allocated there once, so repeated calls
    reuse the same buffers and copy nothing between host and device; the call returns when the
    outputs are complete (``synchronize_outputs``). The output shapes and types come from
    ``out_like`` (arrays, one per name) or else from one plain run of ``sess`` (a session with
    onnxruntime's CUDA graph must not see a plain run: its first run is captured)."""
    feed = {"image": batch}
    if not io_binding:
        return lambda: sess.run(names, feed)
    import onnxruntime as ort
    dev = "cuda" if device == "cuda" else "cpu"
    first = out_like if out_like is not None else sess.run(names, feed)
    x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch), dev, 0)
    io = sess.io_binding()
    io.bind_ortvalue_input("image", x)
    keep = [x]   # the bound OrtValues must outlive the binding
    for name, ref in zip(names, first):
        v = ort.OrtValue.ortvalue_from_shape_and_type(list(ref.shape), ref.dtype.type, dev, 0)
        io.bind_ortvalue_output(name, v)
        keep.append(v)

    def fn():
        sess.run_with_iobinding(io)
        io.synchronize_outputs()
        return keep
    return fn


def pruned_session(model: Path, outputs: list[str], device: str, threads: int):
    """Session on the graph cut down to ``outputs`` (only the nodes they need)."""
    import onnx
    import onnx.utils
    import onnxruntime as ort
    sub = onnx.utils.Extractor(onnx.load(str(model))).extract_model(["image"], list(outputs))
    want = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    return ort.InferenceSession(sub.SerializeToString(), _options(threads), providers=[want]), len(sub.graph.node)


def ort_session(model: Path, device: str, threads: int):
    import onnxruntime as ort
    if not model.is_file():
        raise BenchInputError(f"--model {model} does not exist; export one with python -m export")
    want = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    if want not in ort.get_available_providers():
        raise BenchInputError(f"--device {device}: onnxruntime has no {want} here "
                              f"(available: {', '.join(ort.get_available_providers())})")
    try:
        sess = ort.InferenceSession(str(model), _options(threads), providers=[want])
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BenchInputError(f"--model {model} is not a loadable ONNX model ({msg})") from None
    if sess.get_providers()[0] != want:
        raise BenchInputError(f"asked for {want} but onnxruntime runs {sess.get_providers()[0]}")
    ins = sess.get_inputs()
    if len(ins) != 1 or ins[0].name != "image" or ins[0].type != "tensor(uint8)":
        raise BenchInputError(f"--model {model} breaks the export contract: want one input image uint8 "
                              f"[N,120,120,3], got {[(i.name, i.type, i.shape) for i in ins]}")
    outs = [o.name for o in sess.get_outputs()]
    if "landmarks" not in outs:
        raise BenchInputError(f"--model {model} breaks the export contract: no landmarks output ({outs})")
    return sess, outs


def torch_model(arch: str, checkpoint, *, bfm_dir=None, param_stats=None, mesh="full", dense=True, device="cpu"):
    """The checkpoint rebuilt as the exported graph's PyTorch module (export.convert.build_contract_model)."""
    from export import convert
    if arch not in convert.ARCHS:
        raise BenchInputError(f"unknown --arch {arch!r}: use one of {', '.join(convert.ARCHS)}")
    try:
        model = convert.build_contract_model(arch, checkpoint, bfm_dir=bfm_dir, param_stats=param_stats,
                                             mesh=mesh, dense=dense)
    except convert.ExportInputError as e:
        raise BenchInputError(str(e)) from None
    model.eval()
    return model.to(device)


def run_bench(model, *, device="cpu", batches=(1, 8, 32), runs=20, arch=None, checkpoint=None,
              bfm_dir=None, param_stats=None, mesh="full", io_binding=False, log=print) -> dict:
    threads, how = physical_cores()
    model = Path(model)
    sess, outs = ort_session(model, device, threads)
    meta = dict(sess.get_modelmeta().custom_metadata_map)
    out_sets = [("all", outs)]
    if "vertices" in outs:
        out_sets.append(("no vertices", [o for o in outs if o != "vertices"]))
        out_sets.append(("landmarks only", ["landmarks"]))
    results = []
    for label, names in out_sets:
        run_sess = sess if label == "all" else pruned_session(model, names, device, threads)[0]
        for b in batches:
            wall, cpu = _time(ort_runner(run_sess, names, _crops(b), device, io_binding), runs)
            rt = f"onnxruntime {sess.get_providers()[0]}" + (" io-binding" if io_binding else "")
            results.append(_entry(rt, label, b, runs, wall, cpu))
            log(_row(results[-1]))
    tm = None
    if checkpoint is not None:
        import torch
        torch.set_num_threads(threads)
        dense = "vertices" in outs
        tm = torch_model(arch, checkpoint, bfm_dir=bfm_dir, param_stats=param_stats, mesh=mesh, dense=dense,
                         device=device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for b in batches:
            x = torch.from_numpy(_crops(b)).to(device)

            def fn():
                with torch.no_grad():
                    tm(x)
                sync()
            wall, cpu = _time(fn, runs)
            results.append(_entry(f"torch {torch.__version__} eager {device}", "all", b, runs, wall, cpu))
            log(_row(results[-1]))
    return {"model": str(model), "arch": meta.get("arch", "unknown"), "device": device,
            "outputs": outs, "threads": threads, "threads_source": how, "io_binding": bool(io_binding),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {os.cpu_count()} logical CPUs",
            "cpu_model": _cpu_model(), "results": results}


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


HEADER = (f"{'runtime':<51} {'outputs':<15} {'batch':>5} {'ms/batch':>10} {'ms/face':>9} {'min':>7} "
          f"{'cpu ms/face':>11}")


def _row(r: dict) -> str:
    return (f"{r['runtime']:<51} {r['outputs']:<15} {r['batch']:>5} {r['ms_per_batch']:>10.3f} "
            f"{r['ms_per_face']:>9.3f} {r['min_ms_per_face']:>7.3f} {r['cpu_ms_per_face']:>11.3f}")


def format_table(res: dict) -> str:
    lines = [f"model {res['model']} ({res['arch']}), device {res['device']}, {res['threads']} threads "
             f"[{res['threads_source']}], {res['cpu_model']}", HEADER]
    lines += [_row(r) for r in res["results"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="exported ONNX model")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes (default 1,8,32)")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per case (median reported; default 20)")
    ap.add_argument("--io-binding", action="store_true",
                    help="onnxruntime rows with I/O binding: input and outputs stay on the device (no copies timed)")
    ap.add_argument("--checkpoint", help="the model's checkpoint, to time the same weights in PyTorch eager")
    ap.add_argument("--arch", help="architecture of --checkpoint (synergynet, 3ddfa-v2, mobilefrnet)")
    ap.add_argument("--bfm-dir", help="BFM folder (3dmm_data) for --checkpoint")
    ap.add_argument("--param-stats", help="parameter mean/std pickle for --checkpoint (3ddfa-v2)")
    ap.add_argument("--mesh", choices=("full", "noneck"), default="full", help="dense mesh of the eager model")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)
    try:
        try:
            batches = [int(b) for b in args.batches.split(",") if b.strip()]
        except ValueError:
            raise BenchInputError(f"--batches {args.batches!r}: give positive integers such as 1,8,32") from None
        if not batches or min(batches) < 1 or args.runs < 1:
            raise BenchInputError("--batches and --runs must be positive integers")
        if (args.checkpoint is None) != (args.arch is None):
            raise BenchInputError("--checkpoint and --arch go together (the eager model needs both)")
        if args.checkpoint is not None and not Path(args.checkpoint).is_file():
            raise BenchInputError(f"--checkpoint {args.checkpoint} does not exist")
        if args.device == "cuda" and args.checkpoint is not None:
            import torch
            if not torch.cuda.is_available():
                raise BenchInputError("--device cuda: PyTorch sees no CUDA device; drop --checkpoint or use cpu")
        if args.json:
            jp = Path(args.json)
            if jp.is_dir() or not jp.parent.is_dir():
                raise BenchInputError(f"--json {jp}: not a writable file path (folder missing or is a folder)")
        print(HEADER)
        res = run_bench(args.model, device=args.device, batches=batches, runs=args.runs, arch=args.arch,
                        checkpoint=args.checkpoint, bfm_dir=args.bfm_dir, param_stats=args.param_stats,
                        mesh=args.mesh, io_binding=args.io_binding)
        print()
        print(format_table(res))
        if args.json:
            jp = Path(args.json)
            tmp = jp.with_name(f".{jp.name}.{os.getpid()}.tmp")
            try:
                tmp.write_text(json.dumps(res, indent=1))
                os.replace(tmp, jp)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise BenchInputError(f"cannot write --json {jp} ({e.strerror or e})") from None
            print(f"wrote {jp}")
    except BenchInputError as e:
        print(f"export.bench: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
