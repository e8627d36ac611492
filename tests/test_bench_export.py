"""export.bench runs on a tiny batch count and reports the table / JSON keys (no timing asserts)."""
import json
import subprocess
import sys

import pytest

from export import bench
from tests.conftest import ROOT, shared


def test_physical_cores_positive():
    n, how = bench.physical_cores()
    assert n >= 1 and how


def test_bench_onnx_and_torch_eager(tddfa_onnx, tmp_path):
    m = shared("models", "3ddfa_v2_mb05")
    out = tmp_path / "b.json"
    rc = bench.main(["--model", str(tddfa_onnx), "--batches", "1,2", "--runs", "1", "--json", str(out),
                     "--checkpoint", str(m / "mb05_120x120.pth"), "--arch", "3ddfa-v2",
                     "--bfm-dir", str(shared("bfm", "3dmm_data")),
                     "--param-stats", str(m / "param_mean_std_62d_120x120.pkl")])
    assert rc == 0
    d = json.loads(out.read_text())
    assert d["arch"] == "3ddfa-v2" and d["threads"] >= 1 and "vertices" in d["outputs"]
    rows = {(r["runtime"].split()[0], r["outputs"], r["batch"]) for r in d["results"]}
    for b in (1, 2):
        for o in ("all", "no vertices", "landmarks only"):
            assert ("onnxruntime", o, b) in rows
        assert ("torch", "all", b) in rows
    for r in d["results"]:
        assert r["ms_per_face"] > 0 and r["ms_per_face"] == pytest.approx(r["ms_per_batch"] / r["batch"])
        assert set(r) >= {"min_ms_per_face", "cpu_ms_per_face", "runs"}
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "export.bench", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_table(tddfa_onnx):
    r = _cli("--model", tddfa_onnx, "--batches", "1", "--runs", "1")
    assert r.returncode == 0, r.stderr
    assert "ms/face" in r.stdout and "onnxruntime CPUExecutionProvider" in r.stdout and "no vertices" in r.stdout


@pytest.mark.parametrize("case", ["missing", "junk", "half_eager", "bad_batches"])
def test_cli_bad_input_exit_2(case, tmp_path, tddfa_onnx):
    model, extra = tddfa_onnx, []
    if case == "missing":
        model = tmp_path / "nope.onnx"
    elif case == "junk":
        model = tmp_path / "junk.onnx"
        model.write_bytes(b"junk")
    elif case == "half_eager":
        extra = ["--arch", "3ddfa-v2"]
    else:
        extra = ["--batches", "0,x"]
    r = _cli("--model", model, "--runs", "1", "--batches", "1", *extra)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export.bench: error:"), r.stderr


def test_io_binding_runs_the_same_outputs(tddfa_onnx):
    """The I/O-bound runner fills its device buffers with what a plain run returns, run after run."""
    sess, outs = bench.ort_session(tddfa_onnx, "cpu", 1)
    names = ["landmarks", "vertices"]
    x = bench._crops(3)
    plain = bench.ort_runner(sess, names, x, "cpu", False)()
    bound = bench.ort_runner(sess, names, x, "cpu", True)
    for _ in range(2):
        vals = bound()
    got = [v.numpy() for v in vals[1:]]
    assert [g.shape for g in got] == [(3, 68, 3), (3, 53215, 3)]
    for g, p in zip(got, plain):
        assert abs(g - p).max() < 1e-5


def test_cli_io_binding_rows(tddfa_onnx, tmp_path):
    out = tmp_path / "b.json"
    r = _cli("--model", tddfa_onnx, "--batches", "2", "--runs", "1", "--io-binding", "--json", out)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["io_binding"] is True
    assert {x["runtime"] for x in d["results"]} == {"onnxruntime CPUExecutionProvider io-binding"}
