"""python -m app.batch: the engines on tiny clips cut from ../shared (local 1 vs 2 workers, Ray on
a two-node cluster on 127.0.0.1), resume, failed rows, the parquet schema, bad arguments, a
worker killed mid-drive, and the report in headless Chromium."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, shared

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from app.batch.__main__ import main  # noqa: E402
from app.batch.drive import TIMING_COLUMNS  # noqa: E402
from app.batch.inputs import drive_id  # noqa: E402

# no_driver after 0.3 s without a face: the blank middle of clip "gap" raises one alert
FAST = ["--quiet", "--no-driver-seconds", "0.3"]


def _cut(src: Path, dst: Path, n: int, blank: tuple = ()) -> Path:
    """The first ``n`` frames of ``src`` as H.264 (frames whose index is in ``blank`` black)."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        s = i.streams.video[0]
        out = o.add_stream("libx264", rate=30)
        out.width, out.height, out.pix_fmt = s.codec_context.width, s.codec_context.height, "yuv420p"
        for k, f in enumerate(i.decode(s)):
            if k >= n:
                break
            if k in blank:
                img = np.zeros((out.height, out.width, 3), np.uint8)
                f = av.VideoFrame.from_ndarray(img, format="bgr24")
            for p in out.encode(f.reformat(format="yuv420p")):
                o.mux(p)
        for p in out.encode():
            o.mux(p)
    return dst


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("clips")
    c = {
        # 8 black frames first (no-face rows), then the face; a blank middle (a no_driver alert)
        "gap": _cut(shared("media", "clips", "expressions_d3.mp4"), d / "gap.mp4", 40,
                    blank=tuple(range(0, 4)) + tuple(range(16, 30))),
        "face": _cut(shared("media", "clips", "expressions_d18.mp4"), d / "face.mp4", 24),
    }
    (d / "bad").mkdir()
    c["empty"] = d / "bad" / "empty.mp4"
    c["empty"].write_bytes(b"")
    c["corrupt"] = d / "bad" / "corrupt.mp4"
    c["corrupt"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    return c


def _inputs(c: dict) -> list[str]:
    return [str(c[k]) for k in ("gap", "face", "corrupt", "empty")]


def _table(out: Path, clip: Path) -> "pa.Table":
    return pq.read_table(out / drive_id(clip) / "frames.parquet").drop_columns(list(TIMING_COLUMNS))


def _drives(out: Path) -> dict:
    t = pq.read_table(out / "drives.parquet").to_pylist()
    return {Path(r["path"]).name: r for r in t}


@pytest.fixture(scope="module")
def local_runs(clips, tmp_path_factory) -> dict:
    """The same inputs with 1 and with 2 workers (report on the 2-worker one)."""
    base = tmp_path_factory.mktemp("batch")
    rc1 = main(_inputs(clips) + ["--out", str(base / "w1"), "--workers", "1", "--no-report"] + FAST)
    rc2 = main(_inputs(clips) + ["--out", str(base / "w2"), "--workers", "2"] + FAST)
    return {"w1": base / "w1", "w2": base / "w2", "rc1": rc1, "rc2": rc2}


def test_local_engine_1_and_2_workers_give_equal_tables_and_failed_rows(local_runs, clips):
    assert local_runs["rc1"] == 1 and local_runs["rc2"] == 1      # two drives failed
    for name in ("gap", "face"):
        a, b = _table(local_runs["w1"], clips[name]), _table(local_runs["w2"], clips[name])
        assert a.num_rows > 0 and a.equals(b), name
    for out in (local_runs["w1"], local_runs["w2"]):
        rows = _drives(out)
        assert [rows[k]["status"] for k in ("gap.mp4", "face.mp4", "corrupt.mp4", "empty.mp4")] == \
            ["ok", "ok", "failed", "failed"]
        for k in ("corrupt.mp4", "empty.mp4"):
            assert k in rows[k]["error"] and "\n" not in rows[k]["error"]
        assert rows["face.mp4"]["frames"] == 24 and rows["gap.mp4"]["frames"] == 40
        # complete drive folders only: no temp folder, none for the failed drives
        names = sorted(p.name for p in out.iterdir())
        assert not [n for n in names if n.startswith(".tmp-")]
        assert drive_id(clips["corrupt"]) not in names
        d = out / drive_id(clips["gap"])
        assert {"frames.parquet", "events.jsonl", "summary.json"} <= {p.name for p in d.iterdir()}


def test_frames_parquet_schema_and_no_face_rows(local_runs, clips):
    d = local_runs["w1"] / drive_id(clips["gap"])
    t = pq.read_table(d / "frames.parquet")
    s = t.schema
    assert s.field("frame").type == pa.int32() and s.field("t").type == pa.float64()
    # the JSON dump's precision as exact decimals: 0.01 px, 0.001 for angles / box / ratios, 0.0001 blendshapes
    d2, d3, d4 = pa.decimal128(9, 2), pa.decimal128(9, 3), pa.decimal128(9, 4)
    assert s.field("yaw").type == d3 and s.field("eye_open_left").type == d3 and s.field("gaze_eye_yaw_left").type == d3
    for axis in "xyz":
        assert s.field(f"landmarks_{axis}").type == pa.list_(d2, 68)
        assert s.field(f"iris_{axis}").type == pa.list_(d2, 10)
    assert "landmarks" not in s.names and "iris" not in s.names
    assert s.field("box").type == pa.list_(d3, 4)
    assert s.field("bs_jawOpen").type == d4 and s.field("score").type == pa.float32()
    assert s.field("alerts").type == pa.list_(pa.string())
    meta = pq.ParquetFile(d / "frames.parquet").metadata
    cols = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert all(c.compression == "ZSTD" for c in cols.values())
    # decimals stored as INT32, byte-stream-split
    for name in ("yaw", "landmarks_x.list.element", "bs_jawOpen"):
        assert cols[name].physical_type == "INT32" and "BYTE_STREAM_SPLIT" in cols[name].encodings, name
    rows = t.to_pylist()
    assert sorted({r["frame"] for r in rows}) == list(range(40))            # every frame has a row
    blank = [r for r in rows if r["frame"] in (0, 1, 2, 3)]
    assert len(blank) == 4 and all(r["face"] is None and r["n_faces"] == 0 and r["yaw"] is None
                                   and r["landmarks_x"] is None and r["iris_z"] is None for r in blank)
    faced = [r for r in rows if r["frame"] in range(8, 16) and r["face"] is not None]
    assert faced and all(r["driver"] and all(len(r[f"landmarks_{a}"]) == 68 for a in "xyz")
                         and -90 < r["yaw"] < 90 for r in faced)
    # a real face with open eyes: both eyes seen, the monitor sees the driver
    assert s.field("eye_available_left").type == pa.bool_() and s.field("unavailable").type == pa.list_(pa.string())
    assert all(r["eye_available_left"] is True and r["eye_available_right"] is True
               and r["eye_visibility_left"] > 0 and r["eye_open_left"] is not None for r in faced)
    assert all(r["emergency"] is False for r in rows)
    # the no_driver alert over the blank middle: in the table, the events and the summary
    assert any("no_driver" in (r["alerts"] or []) for r in rows)
    events = [json.loads(x) for x in (d / "events.jsonl").read_text().splitlines()]
    assert any(e.get("event") == "start" and e.get("kind") == "no_driver" for e in events)
    assert events[-1]["event"] == "summary"
    summ = json.loads((d / "summary.json").read_text())
    assert summ["frames"] == 40 and summ["alerts"]["no_driver"]["count"] == 1
    assert summ["alerts"]["no_driver"]["duration_s"] > 0.2
    assert summ["face_rate"] == pytest.approx(sum(r["n_faces"] > 0 for r in rows if r["face"] in (None, 0)) / 40)
    a = summ["alert_frames"][0]
    assert (d / a["thumb"]).is_file() and all((d / f["file"]).is_file() for f in a["strip"])
    assert summ["settings"]["threads"] == 1 and summ["settings"]["mesh_threads"] == 1
    assert summ["git_commit"] and summ["app_version"]


def test_frames_parquet_holds_the_json_dumps_values(local_runs, clips, tmp_path):
    """Every landmark, iris point, angle, box, ratio, gaze angle and blendshape of the batch's
    frames.parquet equals main.py --headless --dump's value of the same frame, to the dump's
    precision (the same pipeline settings: one thread per stage as the batch runs), and the float
    view (read_frames) gives the very floats the JSON holds."""
    from decimal import Decimal

    from app.batch.drive import read_frames

    dump = tmp_path / "face.jsonl"
    r = subprocess.run([sys.executable, "main.py", "--video", str(clips["face"]), "--headless", "--dump", str(dump),
                        "--threads", "1", "--mesh-threads", "1"] + FAST, cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in dump.read_text().splitlines()]
    path = local_runs["w1"] / drive_id(clips["face"]) / "frames.parquet"
    rows = {(x["frame"], x["face"]): x for x in pq.read_table(path).to_pylist()}
    floats = {(x["frame"], x["face"]): x for x in read_frames(path).to_pylist()}

    def dec(v, places):
        return None if v is None else Decimal(repr(v)).quantize(Decimal(1).scaleb(-places))

    n_faces = n_values = 0
    for line in lines:
        assert rows[(line["frame"], 0 if line["faces"] else None)]["t"] == pytest.approx(line["t"], abs=1e-6)
        for i, f in enumerate(line["faces"]):
            row, flt = rows[(line["frame"], i)], floats[(line["frame"], i)]
            g = f["gaze"]
            pairs = [(f["box"], row["box"], 3),
                     ([f["yaw"], f["pitch"], f["roll"], f["mouth_open"], *f["eye_open"], *f["eye_visibility"]],
                      [row[k] for k in ("yaw", "pitch", "roll", "mouth_open", "eye_open_left", "eye_open_right",
                                        "eye_visibility_left", "eye_visibility_right")], 3),
                     ([g["yaw"], g["pitch"], *g["eye_yaw"], *g["eye_pitch"]],
                      [row[k] for k in ("gaze_yaw", "gaze_pitch", "gaze_eye_yaw_left", "gaze_eye_yaw_right",
                                        "gaze_eye_pitch_left", "gaze_eye_pitch_right")], 3),
                     (list(f["blendshapes"].values()), [row[f"bs_{k}"] for k in f["blendshapes"]], 4)]
            for a, axis in enumerate("xyz"):
                pairs.append(([p[a] for p in f["landmarks"]], row[f"landmarks_{axis}"], 2))
                pairs.append(([p[a] for p in f["iris"]], row[f"iris_{axis}"], 2))
                # the float view: the JSON's floats, bit for bit
                assert flt[f"landmarks_{axis}"] == [p[a] for p in f["landmarks"]]
                assert flt[f"iris_{axis}"] == [p[a] for p in f["iris"]]
            assert [f["yaw"], f["pitch"], f["roll"]] == [flt["yaw"], flt["pitch"], flt["roll"]]
            assert f["eye_available"] == [row["eye_available_left"], row["eye_available_right"]]
            assert f["model"] == row["model"] and len(f["blendshapes"]) == 51
            for want, got, places in pairs:
                assert [dec(v, places) for v in want] == list(got), (line["frame"], want, got)
                n_values += len(want)
            n_faces += 1
    assert len(lines) == 24 and n_faces == 24 and n_values == 24 * (4 + 8 + 6 + 51 + 3 * 68 + 3 * 10)


def test_rerun_skips_complete_drives_and_force_redoes_them(local_runs, clips):
    out = local_runs["w1"]
    d = out / drive_id(clips["face"])
    before = (d / "frames.parquet").stat().st_mtime_ns
    assert main([str(clips["face"]), str(clips["gap"]), "--out", str(out), "--no-report"] + FAST) == 0
    rows = _drives(out)
    assert rows["face.mp4"]["status"] == "skipped" and rows["gap.mp4"]["status"] == "skipped"
    assert rows["face.mp4"]["frames"] == 24 and (d / "frames.parquet").stat().st_mtime_ns == before
    assert main([str(clips["face"]), "--out", str(out), "--force", "--no-report"] + FAST) == 0
    assert _drives(out)["face.mp4"]["status"] == "ok"
    assert (d / "frames.parquet").stat().st_mtime_ns != before


def test_csv_manifest_columns_reach_drives_parquet(clips, tmp_path):
    m = tmp_path / "drives.csv"
    m.write_text(f"path,driver,vehicle\n{clips['face']},ann,truck-7\n")
    out = tmp_path / "out"
    assert main([str(m), "--out", str(out), "--no-report"] + FAST) == 0
    r = pq.read_table(out / "drives.parquet").to_pylist()[0]
    assert (r["driver"], r["vehicle"], r["status"]) == ("ann", "truck-7", "ok")


def test_record_scale_reaches_each_drives_recording(clips, tmp_path):
    import av

    out = tmp_path / "out"
    assert main([str(clips["face"]), "--out", str(out), "--no-report", "--record", "--record-scale", "0.5",
                 "--mesh-detail", "0.25"] + FAST) == 0
    with av.open(str(out / drive_id(clips["face"]) / "recording.mp4")) as c:
        s = c.streams.video[0]
        with av.open(str(clips["face"])) as src:
            full = src.streams.video[0]
            assert (s.width, s.height) == (full.width // 2, full.height // 2)
        assert sum(1 for _ in c.decode(video=0)) == 24


@pytest.mark.parametrize("args, says", [
    (["/nonexistent/x.mp4"], "input not found"),
    (["{face}", "--workers", "0"], "--workers"),
    (["{face}", "--alert-yaw", "-5"], "alert"),
    (["{face}", "--engine", "local", "--ray-address", "auto"], "--ray-address"),
    (["{emptydir}"], "no video files"),
    (["{face}", "--record", "--record-scale", "0"], "--record-scale must be in (0, 1], got 0"),
])
def test_bad_arguments_exit_2_and_write_nothing(clips, tmp_path, capsys, args, says):
    (tmp_path / "emptydir").mkdir()
    out = tmp_path / "out"
    argv = [a.format(face=clips["face"], emptydir=tmp_path / "emptydir") for a in args] + ["--out", str(out)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert says in err[-1] and err[-1].startswith("python -m app.batch: error:")
    assert not out.exists()


def test_out_parent_missing_exits_2(clips, tmp_path):
    r = subprocess.run([sys.executable, "-m", "app.batch", str(clips["face"]), "--out", str(tmp_path / "no" / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "no").exists()


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


@pytest.mark.slow
def test_kill_9_of_a_worker_redoes_its_drive(clips, tmp_path):
    """kill -9 of the worker process mid-drive: the pool is rebuilt, every drive done once."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "app.batch", str(clips["gap"]), str(clips["face"]), "--out", str(out),
                             "--workers", "1", "--no-report"] + FAST, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.time() + 120
    while time.time() < deadline and killed is None:
        tmp = list(out.glob(".tmp-*")) if out.exists() else []
        if tmp and (tmp[0] / "frames.parquet").exists():
            for c in _children(proc.pid):
                cmd = Path(f"/proc/{c}/cmdline").read_bytes()
                if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                    os.kill(c, signal.SIGKILL)
                    killed = c
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert killed is not None, err
    assert proc.returncode == 0, err
    assert "worker process died" in err
    rows = _drives(out)
    assert {r["status"] for r in rows.values()} == {"ok"} and len(rows) == 2
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([drive_id(clips["gap"]), drive_id(clips["face"])])


@pytest.mark.slow
def test_ctrl_c_keeps_complete_drives_and_a_rerun_finishes_the_rest(clips, tmp_path):
    """SIGINT to the batch's process group (a terminal's Ctrl-C) once the first drive's folder is
    complete: exit status 130, that drive kept, no partial or temp folder; the same command again
    does only what is missing (the first drive skipped, every drive written once)."""
    long = _cut(shared("media", "clips", "expressions_d14.mp4"), tmp_path / "long.mp4", 150)
    inputs = [str(clips["face"]), str(long), str(clips["gap"])]
    ids = [drive_id(Path(p)) for p in inputs]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "app.batch", *inputs, "--out", str(out), "--workers", "1", "--no-report"] + FAST
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (out / ids[0] / "summary.json").is_file():
            time.sleep(0.02)
        assert (out / ids[0] / "summary.json").is_file(), proc.stderr.read() if proc.poll() is not None else "timeout"
        done_at_sigint = {i for i in ids if (out / i / "summary.json").is_file()}
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted: run the same command again" in err
    kept = sorted(p.name for p in out.iterdir() if p.is_dir())
    # the first drive complete, the last not started (the long one in between was running)
    assert ids[0] in kept and ids[2] not in kept and set(kept) <= set(ids), kept
    assert done_at_sigint <= set(kept)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    for i in kept:          # a kept folder is complete
        assert {"frames.parquet", "events.jsonl", "summary.json"} <= {p.name for p in (out / i).iterdir()}
    first_mtime = (out / ids[0] / "frames.parquet").stat().st_mtime_ns
    rows = _drives(out)
    assert rows["face.mp4"]["status"] == "ok"
    # drives.parquet lists what completed; the drives not done are absent from it
    assert set(rows) == {Path(p).name for p in inputs if drive_id(Path(p)) in kept}

    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = _drives(out)
    assert {Path(p).name: rows[Path(p).name]["status"] for p in inputs} == {
        Path(p).name: "skipped" if drive_id(Path(p)) in kept else "ok" for p in inputs}
    assert (out / ids[0] / "frames.parquet").stat().st_mtime_ns == first_mtime
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(ids)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert pq.read_table(out / ids[1] / "frames.parquet").num_rows == 150


# ---------------------------------------------------------------------- ray
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_engine_on_a_two_node_local_cluster_gives_the_local_tables(local_runs, clips, tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install -e '.[cluster]')")
    # the ray command of this python's environment (a venv's), else the one on PATH
    ray_bin = str(Path(sys.executable).with_name("ray"))
    if not Path(ray_bin).exists():
        ray_bin = shutil.which("ray") or ray_bin
    if not Path(ray_bin).exists():
        pytest.skip("the ray command is not installed beside this python")
    port = _free_port()
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    head = [ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "1",
            "--include-dashboard", "false", "--disable-usage-stats"]
    try:
        subprocess.run(head, check=True, capture_output=True, env=env, timeout=180)
        subprocess.run([ray_bin, "start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                        "--num-cpus", "1", "--disable-usage-stats"], check=True, capture_output=True, env=env,
                       timeout=180)
        out = tmp_path / "ray"
        rc = main(_inputs(clips) + ["--out", str(out), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}",
                                    "--no-report"] + FAST)
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=env, timeout=120)
    assert rc == 1
    rows = _drives(out)
    assert [rows[k]["status"] for k in ("gap.mp4", "face.mp4", "corrupt.mp4", "empty.mp4")] == \
        ["ok", "ok", "failed", "failed"]
    assert {rows[k]["engine"] for k in ("gap.mp4", "face.mp4")} == {"ray"}
    for name in ("gap", "face"):
        assert _table(out, clips[name]).equals(_table(local_runs["w1"], clips[name])), name


# ---------------------------------------------------------------------- report in a browser
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("no chromium (Debian: apt-get install chromium chromium-driver) for the browser test")


def test_report_renders_in_headless_chromium(local_runs, clips, tmp_path):
    browser = _chromium()
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    driver_bin = shutil.which("chromedriver")
    if driver_bin is None:
        pytest.skip("no chromedriver (Debian: apt-get install chromium-driver)")
    out = local_runs["w2"]
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
              "--window-size=1400,900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    from selenium.webdriver.chrome.service import Service

    drv = webdriver.Chrome(options=opts, service=Service(driver_bin))
    try:
        pages = [out / "report.html", out / "report" / f"{drive_id(clips['gap'])}.html"]
        for page in pages:
            drv.get(page.as_uri())
            WAIT = "return Array.from(document.images).every(i => i.complete)"
            t0 = time.time()
            while not drv.execute_script(WAIT) and time.time() - t0 < 20:
                time.sleep(0.1)
            imgs = drv.execute_script(
                "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
            assert imgs, page
            assert all(w > 0 for _, w in imgs), (page, [s for s, w in imgs if not w])
            errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, (page, errors)
        # the index: every drive, worst first (the failed ones), and the drive page links
        drv.get(pages[0].as_uri())
        text = drv.find_element("id", "drives").text
        assert all(n in text for n in (drive_id(clips["gap"]), drive_id(clips["corrupt"])))
        first = drv.execute_script("return document.querySelector('#drives tbody tr').className")
        assert first == "failed"
        # the drive page shows the no_driver alert's thumbnail and its strip
        drv.get(pages[1].as_uri())
        srcs = [s for s, _ in drv.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")]
        assert any("alerts/000_no_driver.jpg" in s for s in srcs) and any("timeline.png" in s for s in srcs)
        # and the check itself sees a broken image: a page whose image file is gone
        bad = out / "report" / "broken.html"
        bad.write_text('<!doctype html><img src="missing.png">')
        drv.get(bad.as_uri())
        time.sleep(0.5)
        assert drv.execute_script("return document.images[0].naturalWidth") == 0
    finally:
        drv.quit()


def test_a_drive_without_any_face_is_a_failed_row(tmp_path):
    import av

    clip = tmp_path / "noface.mp4"
    with av.open(str(clip), "w") as o:
        s = o.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        for _ in range(15):
            for p in s.encode(av.VideoFrame.from_ndarray(np.full((240, 320, 3), 90, np.uint8), format="bgr24")):
                o.mux(p)
        for p in s.encode():
            o.mux(p)
    out = tmp_path / "out"
    assert main([str(clip), "--out", str(out), "--no-report"] + FAST) == 1
    r = _drives(out)["noface.mp4"]
    assert r["status"] == "failed" and r["error"] == f"no face in any of the 15 frames of {clip}"
    assert sorted(p.name for p in out.iterdir()) == ["drives.parquet"]


def test_a_kept_pipeline_gives_the_fresh_pipeline_table(local_runs, clips, tmp_path):
    """Drive after drive in one process (the models loaded once, Pipeline.reset between drives)
    gives the table of a drive run first in its process."""
    from app.batch.drive import DriveJob, run_drive
    from app.batch.__main__ import parse

    _, settings, _, _ = parse([str(clips["face"]), "--out", str(tmp_path / "x")] + FAST)
    for name in ("face", "gap", "face"):
        if (tmp_path / "o" / drive_id(clips[name])).exists():
            shutil.rmtree(tmp_path / "o" / drive_id(clips[name]))
        row = run_drive(DriveJob(path=str(clips[name].resolve()), drive_id=drive_id(clips[name]), out=str(tmp_path / "o"),
                                 settings=settings))
        assert row["status"] == "ok"
        for ref in ("w1", "w2"):
            assert _table(tmp_path / "o", clips[name]).equals(_table(local_runs[ref], clips[name])), (name, ref)
