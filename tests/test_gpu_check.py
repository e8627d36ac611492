"""scripts/gpu_check.py --cpu on a tiny budget: every step runs and the reports hold measured rows."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, shared

SCRIPT = ROOT / "scripts" / "gpu_check.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_cpu_mode_tiny_budget(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("mediapipe")
    shared_dir = shared()
    out = tmp_path / "gc"
    r = _run("--cpu", "--out", out, "--shared", shared_dir, "--budget-s", 150, "--batches", "1,3",
             "--runs", 2, "--frames", 6)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    rep = json.loads((out / "gpu_check.json").read_text())
    assert rep["mode"] == "CPU" and rep["status"] == "passed" and rep["seconds"] < 150
    assert rep["environment"]["onnxruntime_providers"]
    assert set(rep["export"]) == {"3ddfa_v2_mb05", "3ddfa_v2_mb05_fp16", "synergynet", "synergynet_fp16"}
    # the gpu tests ran on the CPU, none skipped
    t = rep["tests"]
    assert t["passed"] and t["summary"].startswith("11 passed") and "skipped" not in t["summary"], t
    rows = {(r["model"], r["io_binding"], r["batch"]): r for r in rep["bench_3dmm"]["rows"]}
    assert len(rows) == 4 * 2 * 2 and not rep["bench_3dmm"]["skipped_for_time"]
    for (model, io, b), r in rows.items():
        assert r["variant"] == "CPU" and "error" not in r, r
        assert r["ms_per_face"] > 0 and r["faces_per_s"] == pytest.approx(1000 / r["ms_per_face"])
        assert r["ms_per_batch"] == pytest.approx(r["ms_per_face"] * b)
        # fp32: the optimised CPU session against the unoptimised graph; fp16: within the exporter's
        # 1 px tolerance for synthetic crops
        assert r["max_landmark_diff_px"] <= (1.0 if model.endswith("fp16") else 1e-3), r
    assert {(r["model"], r["batch"]) for r in rep["bench_3dmm"]["torch_rows"]} == {
        (m, b) for m in ("3ddfa_v2_mb05", "synergynet") for b in (1, 3)}
    runs = rep["pipeline"]["runs"]
    assert len(runs) == 4
    for p in runs:
        assert p["provider"] == "CPU" and p["frames"] == 6 and p["frames_with_face"] == 6 and p["fps"] > 0, p
    assert [p["record"] for p in runs] == [False, False, False, True]
    md = (out / "gpu_check.md").read_text()
    assert "| CPU | 3DDFA-V2 x0.5 fp32 | yes | 3 |" in md and "## Pipeline" in md and "11 passed" in md
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["gpu_check.json", "gpu_check.md", "tests.log", "models"] + [f"pipeline_{i}.json" for i in range(4)])


def test_gpu_mode_without_cuda_says_why(tmp_path):
    """Without a working CUDA provider GPU mode stops before any work, with one line and exit 2."""
    pytest.importorskip("onnx")
    from tests.test_gpu import _cuda_start_problem

    if _cuda_start_problem() is None:
        pytest.skip("onnxruntime starts CUDA on this machine")
    r = _run("--out", tmp_path, "--budget-s", 60)
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("gpu_check: error:")]
    assert len(err) == 1 and "CUDAExecutionProvider" in err[0] and "--cpu" in err[0]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["status"] == "could not run" and "models" not in [p.name for p in tmp_path.iterdir()]


@pytest.mark.parametrize("args", [["--batches", "0,x"], ["--models", "/nonexistent/dir", "--cpu"],
                                  ["--cpu", "--budget-s", "1"]])
def test_bad_input_one_line_exit_2(args, tmp_path):
    r = _run("--out", tmp_path, *args)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("gpu_check: error:"), r.stderr
