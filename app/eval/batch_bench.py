"""``python -m app.eval.batch_bench INPUT... [--out DIR]``: the batch's throughput, rows side by side.

Runs the same drives (no recording, no report) with
- ``python -m app.batch --engine local --workers 1`` and ``--workers 2``,
- ``--engine ray`` on a one-node and on a two-node Ray cluster started on 127.0.0.1 (one CPU each:
  ``ray start --head --node-ip-address 127.0.0.1 --num-cpus 1`` [+ ``ray start --address``]),
- ``main.py --headless --dump`` run drive after drive (one process per drive, today's way),
and prints, per row: wall seconds, frames per second, x real time (video seconds / wall seconds),
the CPU seconds per frame (the processes' own accounting: the children's rusage for the local
rows and main.py, the drives' Runner CPU for Ray, whose workers are not our children), and the
load average before and after. Then the size of the JSON dump (the ``main`` row) vs the drives'
frames.parquet (the first batch row's): ``--rows local2,main`` measures both.
A JSON copy of the table goes to ``--json``. Each row is a separate fresh run: compare rows made
back to back, on a shared machine the load column says how shared it was.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _drives_totals(out: Path) -> dict:
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(out / "drives.parquet").to_pylist() if r["status"] == "ok"]
    return {"drives": len(rows), "frames": sum(r["frames"] for r in rows),
            "video_s": sum(r["duration_s"] for r in rows), "runner_cpu_s": sum(r["cpu_s"] or 0.0 for r in rows),
            "parquet_bytes": sum((out / r["drive_id"] / "frames.parquet").stat().st_size for r in rows)}


def _run(cmd: list[str], env=None) -> tuple[float, float, int]:
    c0, t0 = _child_cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if r.returncode not in (0, 1):
        raise SystemExit(f"error: {' '.join(cmd)} exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
    return wall, cpu, r.returncode


def _row(name: str, cmd: str, wall: float, cpu: float | None, totals: dict, load0: str, load1: str) -> dict:
    f = totals["frames"]
    return {"row": name, "command": cmd, "wall_s": round(wall, 1), "frames": f,
            "fps": round(f / wall, 1), "x_realtime": round(totals["video_s"] / wall, 2),
            "cpu_ms_per_frame": None if cpu is None else round(1e3 * cpu / f, 1),
            "runner_cpu_ms_per_frame": round(1e3 * totals["runner_cpu_s"] / f, 1) if totals.get("runner_cpu_s") else None,
            "load_before": load0, "load_after": load1}


def bench_batch(name: str, inputs: list[str], out: Path, extra: list[str], env=None) -> dict:
    cmd = [sys.executable, "-m", "app.batch", *inputs, "--out", str(out), "--force", "--quiet", "--no-report", *extra]
    l0 = _load()
    wall, cpu, _ = _run(cmd, env)
    shown = "python -m app.batch INPUTS --out DIR --force --quiet --no-report " + " ".join(extra)
    return _row(name, shown, wall, None if "ray" in extra else cpu, _drives_totals(out), l0, _load())


def bench_ray(name: str, inputs: list[str], out: Path, nodes: int) -> dict:
    ray = str(Path(sys.executable).with_name("ray"))     # this environment's, else the one on PATH
    if not Path(ray).exists():
        ray = shutil.which("ray") or ray
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                        "1", "--include-dashboard", "false", "--disable-usage-stats"], check=True,
                       capture_output=True, env=env)
        for _ in range(nodes - 1):
            subprocess.run([ray, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                            "--num-cpus", "1", "--disable-usage-stats"], check=True, capture_output=True, env=env)
        return bench_batch(name, inputs, out, ["--engine", "ray", "--ray-address", f"127.0.0.1:{port}"], env)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env)


def bench_main_py(inputs: list[str], out: Path) -> tuple[dict, int]:
    from app.batch.inputs import expand

    drives = expand(inputs)
    out.mkdir(parents=True, exist_ok=True)
    l0 = _load()
    c0, t0 = _child_cpu(), time.perf_counter()
    frames, video_s, dump_bytes = 0, 0.0, 0
    for d in drives:
        dump = out / f"{d.drive_id}.jsonl"
        dump.unlink(missing_ok=True)
        r = subprocess.run([sys.executable, "main.py", "--video", d.path, "--headless", "--quiet", "--dump", str(dump)],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            continue
        n = sum(1 for _ in open(dump, encoding="utf-8"))
        frames += n
        import av

        with av.open(d.path) as c:
            s = c.streams.video[0]
            fps = float(s.average_rate or 30)
        video_s += n / fps
        dump_bytes += dump.stat().st_size
    wall, cpu = time.perf_counter() - t0, _child_cpu() - c0
    row = _row("main.py --headless --dump, drive after drive", "for f in INPUTS: python main.py --video f --headless "
               "--quiet --dump f.jsonl", wall, cpu, {"frames": frames, "video_s": video_s}, l0, _load())
    return row, dump_bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.eval.batch_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="INPUT")
    ap.add_argument("--out", help="work folder (default: a temp folder, removed)")
    ap.add_argument("--rows", default="local1,local2,ray1,ray2,main",
                    help="which rows, in order (default %(default)s)")
    ap.add_argument("--json", help="write the table as JSON here")
    a = ap.parse_args(argv)
    work = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="batch_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows, sizes = [], {}
    try:
        for r in a.rows.split(","):
            if r == "local1":
                rows.append(bench_batch("local engine, 1 worker", a.inputs, work / "local1", ["--workers", "1"]))
            elif r == "local2":
                rows.append(bench_batch("local engine, 2 workers", a.inputs, work / "local2", ["--workers", "2"]))
            elif r == "ray1":
                rows.append(bench_ray("ray engine, 1 node x 1 CPU", a.inputs, work / "ray1", 1))
            elif r == "ray2":
                rows.append(bench_ray("ray engine, 2 nodes x 1 CPU", a.inputs, work / "ray2", 2))
            elif r == "main":
                row, sizes["json_dump_bytes"] = bench_main_py(a.inputs, work / "main")
                rows.append(row)
            else:
                raise SystemExit(f"error: unknown row {r!r} (local1, local2, ray1, ray2, main)")
            if r in ("local1", "local2", "ray1", "ray2") and "parquet_bytes" not in sizes:
                # the first batch row's frames.parquet files (every engine writes the same tables)
                sizes["parquet_bytes"] = _drives_totals(work / r)["parquet_bytes"]
            x = rows[-1]
            print(f"{x['row']:<48} {x['wall_s']:>7.1f} s {x['fps']:>6.1f} fps {x['x_realtime']:>5.2f}x rt  "
                  f"cpu {x['cpu_ms_per_frame']} / runner {x['runner_cpu_ms_per_frame']} ms/frame  "
                  f"load {x['load_before']} -> {x['load_after']}", flush=True)
    finally:
        if not a.out:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| run | wall s | frames | frames/s | x real time | CPU ms/frame | Runner CPU ms/frame | load before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    for x in rows:
        print(f"| {x['row']} | {x['wall_s']} | {x['frames']} | {x['fps']} | {x['x_realtime']} | "
              f"{x['cpu_ms_per_frame'] if x['cpu_ms_per_frame'] is not None else '-'} | "
              f"{x['runner_cpu_ms_per_frame'] if x['runner_cpu_ms_per_frame'] is not None else '-'} | "
              f"{x['load_before']} -> {x['load_after']} |")
    if "parquet_bytes" in sizes and "json_dump_bytes" in sizes:
        p, j = sizes["parquet_bytes"], sizes["json_dump_bytes"]
        sizes["ratio"] = round(j / p, 2)
        print("\n| output | bytes | MB |\n|---|---:|---:|")
        print(f"| JSON dump (main.py --dump) | {j} | {j / 1e6:.3f} |\n| frames.parquet | {p} | {p / 1e6:.3f} |")
        print(f"\nJSON dump {j / 1e6:.2f} MB vs frames.parquet {p / 1e6:.2f} MB: {j / p:.2f}x smaller")
    if a.json:
        Path(a.json).write_text(json.dumps({"rows": rows, "sizes": sizes, "cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
