"""GUI cost benchmark: processing fps with the window open vs headless, on the same clip, in one run.

    python -m app.eval.gui_bench --video FILE [--model M.onnx] [--frames N] [--rounds R] [--json OUT]

1. headless: Source -> Pipeline.process for N frames (the clip loops), no window;
2. GUI: the real MainWindow with its ProcessingWorker in benchmark mode (no pacing to the clip's
   frame rate, no frame dropping: every frame is processed as fast as possible) for N frames,
   the window redrawing video + plots at its normal rate.

Runs 1 and 2 alternate ``--rounds`` times (the machine may be shared); medians are reported.
3. GUI with the clip paced at its own frame rate and stale frames dropped (what a camera does):
   the latency a user sees.

Reports both fps, the CPU time per frame of the whole process (all threads: robust when the
machine is shared, where wall-clock fps is not), the ratio (goal: the GUI costs <= 15 % of the headless fps), the UI latency
(capture -> painted, median / p95), the UI thread's CPU (share of a core, ms per processed frame:
the window's own cost, steadier than the fps ratio on a shared machine), its redraw cost and the
plot redraw rate. Without a
display it uses Qt's offscreen platform (painting still happens, nothing is shown).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _pct(xs, q):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100.0 * (len(xs) - 1))))]


def headless_fps(settings, video: str, frames: int, warmup: int = 5) -> dict:
    from app.io.capture import open_source
    from app.pipeline import Pipeline
    from app.render import draw_result

    pipe = Pipeline(settings)
    src = open_source(video, loop=True).start()
    n, t0 = 0, None
    times = []
    try:
        for f in src:
            t = time.perf_counter()
            # the window draws every frame too; neither writes the blendshape scores (no dump), so
            # neither runs the blendshape model (app.runner.Outputs.reads_blendshapes)
            draw_result(pipe.process(f, blendshapes=False), pipe.layers)
            times.append((time.perf_counter() - t) * 1000)
            n += 1
            if n == warmup:
                t0 = time.perf_counter()
                c0 = time.process_time()
            if n >= warmup + frames:
                break
    finally:
        src.stop()
    el = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"fps": frames / el, "frames": frames, "cpu_ms_per_frame": 1000 * cpu / frames, "process_ms_median": statistics.median(times[warmup:]),
            "model": pipe.model_name, "provider": pipe.provider}


def gui_fps(settings, video: str, frames: int, warmup: int = 5, realtime: bool = False) -> dict:
    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication
    import tempfile

    from app.gui.window import MainWindow
    from app.gui.worker import ProcessingWorker

    app = QApplication.instance() or QApplication(["bench"])
    tmp = tempfile.mkdtemp(prefix="guibench-")
    qs = QSettings(os.path.join(tmp, "gui.ini"), QSettings.Format.IniFormat)
    worker = ProcessingWorker(settings, realtime=realtime, drop=realtime, loop=True)
    redraw_ms = []
    win = MainWindow(settings, source=video, qsettings=qs, worker=worker, restore=False,
                     list_cameras_at_start=False, sound=_NoSound())
    orig = win._redraw

    def timed_redraw():
        t = time.perf_counter()
        orig()
        redraw_ms.append((time.perf_counter() - t) * 1000)

    win.timer.timeout.disconnect()
    win.timer.timeout.connect(timed_redraw)
    orig_plot = win.plots.redraw
    push_ms, paint_ms = [], []

    def timed_plot():
        t = time.perf_counter()
        orig_plot()
        push_ms.append((time.perf_counter() - t) * 1000)

    # the plots' painting, timed where Qt does it (the view paints its viewport's paint events):
    # a repaint() forced after the push would paint the plots a second time, since the push has
    # already scheduled one
    glw = win.plots.glw
    orig_paint = glw.paintEvent

    def timed_paint(ev):
        t = time.perf_counter()
        orig_paint(ev)
        paint_ms.append((time.perf_counter() - t) * 1000)

    glw.paintEvent = timed_paint
    win.plot_timer.timeout.disconnect()
    win.plot_timer.timeout.connect(timed_plot)
    win.resize(1400, 820)
    win.show()
    from PyQt6.QtCore import QEventLoop, QTimer

    t_start = time.perf_counter()
    deadline = t_start + 600
    mark = {}
    loop = QEventLoop()

    def check():     # the real event loop runs; this only looks at the counters every 20 ms
        if "t0" not in mark and win.results_received >= warmup:
            mark["t0"] = time.perf_counter()
            mark["plots"] = win.plots.redraws
            mark["cpu0"] = time.thread_time()
            mark["pcpu0"] = time.process_time()
            redraw_ms.clear()
            push_ms.clear()
            paint_ms.clear()
        if win.results_received >= warmup + frames or time.perf_counter() > deadline:
            loop.quit()

    chk = QTimer()
    chk.timeout.connect(check)
    chk.start(20)
    loop.exec()
    chk.stop()
    t0, plot_mark, cpu0 = mark["t0"], mark["plots"], mark["cpu0"]
    el = time.perf_counter() - t0
    ui_cpu = (time.thread_time() - cpu0) / el
    pcpu = time.process_time() - mark["pcpu0"]
    n = win.results_received - warmup
    lat = list(win.latencies_ms)[-min(len(win.latencies_ms), max(1, win.results_shown)):]
    out = {"fps": n / el, "frames": n, "cpu_ms_per_frame": 1000 * pcpu / max(1, n), "latency_ms_median": statistics.median(lat) if lat else float("nan"),
           "latency_ms_p95": _pct(lat, 95), "redraw_ms_median": statistics.median(redraw_ms) if redraw_ms else 0.0,
           "redraw_ms_p95": _pct(redraw_ms, 95), "plot_redraw_hz": (win.plots.redraws - plot_mark) / el,
           # one plot update: pushing the data to the curves plus painting them
           "plot_ms_median": ((statistics.median(push_ms) if push_ms else 0.0)
                              + (statistics.median(paint_ms) if paint_ms else 0.0)),
           "plot_ms_p95": _pct(push_ms, 95) + _pct(paint_ms, 95),
           "plot_paints_per_update": len(paint_ms) / max(1, len(push_ms)),
           "frames_shown": win.results_shown, "ui_thread_cpu_pct": 100 * ui_cpu,
           # the window's own work per processed frame (painting, plots, panel, signals)
           "ui_ms_per_frame": 1000 * ui_cpu * el / max(1, n), "platform": app.platformName(),
           "model": win.model_name, "provider": win.provider, "errors": list(win.errors)}
    win.close()
    return out


class _NoSound:
    def play(self):
        pass


def main(argv=None) -> int:
    from app import cli

    ap = argparse.ArgumentParser(prog="python -m app.eval.gui_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, help="clip to process (it loops)")
    ap.add_argument("--model", default=None,
                    help='ONNX model, or "mesh" for the built-in face mesh (default: the first models/*.onnx, '
                         'else the face mesh)')
    ap.add_argument("--frames", type=int, default=150, help="frames measured per run (after 5 warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating headless / GUI runs (median)")
    ap.add_argument("--json", default=None, help="write the numbers as JSON here")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.video):
        print(f"error: video not found: {a.video}", file=sys.stderr)
        return 2
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or os.environ.get("QT_QPA_PLATFORM")):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    cargs = ["--video", a.video] + (["--model", a.model] if a.model else [])
    settings = cli.settings_from_args(cli.build_parser().parse_args(cargs))
    # alternate headless and GUI runs (the machine may be shared: load drifts between runs)
    hs, gs = [], []
    for r in range(a.rounds):
        hs.append(headless_fps(settings, a.video, a.frames))
        gs.append(gui_fps(settings, a.video, a.frames))
        print(f"round {r + 1}: headless {hs[-1]['fps']:6.1f} fps, GUI {gs[-1]['fps']:6.1f} fps", flush=True)
    rt = gui_fps(settings, a.video, a.frames, realtime=True)
    h = dict(hs[-1], fps=statistics.median(x["fps"] for x in hs), fps_runs=[x["fps"] for x in hs])
    g = dict(gs[-1], fps=statistics.median(x["fps"] for x in gs), fps_runs=[x["fps"] for x in gs],
             latency_ms_median=statistics.median(x["latency_ms_median"] for x in gs),
             latency_ms_p95=statistics.median(x["latency_ms_p95"] for x in gs),
             ui_thread_cpu_pct=statistics.median(x["ui_thread_cpu_pct"] for x in gs),
             ui_ms_per_frame=statistics.median(x["ui_ms_per_frame"] for x in gs),
             ui_ms_per_frame_runs=[x["ui_ms_per_frame"] for x in gs])
    h["cpu_ms_per_frame"] = statistics.median(x["cpu_ms_per_frame"] for x in hs)
    g["cpu_ms_per_frame"] = statistics.median(x["cpu_ms_per_frame"] for x in gs)
    ratio = g["fps"] / h["fps"]
    cpu_ratio = h["cpu_ms_per_frame"] / g["cpu_ms_per_frame"]
    res = {"video": a.video, "rounds": a.rounds, "headless": h, "gui": g, "gui_realtime": rt,
           "gui_over_headless": ratio, "gui_cost_pct": 100 * (1 - ratio),
           "cpu_headless_over_gui": cpu_ratio, "gui_cpu_cost_pct": 100 * (1 - cpu_ratio), "cpu_count": os.cpu_count(),
           "loadavg_end": os.getloadavg()}
    print(f"model {h['model']} on {h['provider']}, {a.frames} frames x {a.rounds} rounds of {os.path.basename(a.video)}")
    print(f"headless   {h['fps']:6.1f} fps median (process median {h['process_ms_median']:.1f} ms)")
    print(f"GUI        {g['fps']:6.1f} fps median ({g['platform']}, as fast as possible, no dropping; "
          f"latency capture->painted median {g['latency_ms_median']:.0f} ms, p95 {g['latency_ms_p95']:.0f} ms)")
    print(f"           UI thread: {g['ui_thread_cpu_pct']:.0f} % of a core, {g['ui_ms_per_frame']:.2f} ms per processed frame "
          f"(medians); video redraw median {g['redraw_ms_median']:.1f} ms (p95 {g['redraw_ms_p95']:.1f}); "
          f"plots {g['plot_redraw_hz']:.1f} Hz, {g['plot_ms_median']:.1f} ms each (p95 {g['plot_ms_p95']:.1f}; "
          f"{g['plot_paints_per_update']:.2f} paints per update)")
    print(f"GUI, clip paced at its own fps (camera-like): {rt['fps']:.1f} fps processed, latency "
          f"capture->painted median {rt['latency_ms_median']:.0f} ms, p95 {rt['latency_ms_p95']:.0f} ms")
    print(f"CPU time per frame (all threads): headless {h['cpu_ms_per_frame']:.1f} ms, GUI {g['cpu_ms_per_frame']:.1f} ms"
          f" -> CPU-bound fps ratio {cpu_ratio:.3f} (GUI cost {100 * (1 - cpu_ratio):.1f} %)")
    print(f"GUI / headless = {ratio:.3f}  (GUI cost {100 * (1 - ratio):.1f} %; goal <= 15 %); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    errs = [e for x in gs + [rt] for e in x["errors"]]
    if errs:
        print("GUI errors: " + "; ".join(errs), file=sys.stderr)
    if a.json:
        tmp = a.json + ".partial"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=2)
        os.replace(tmp, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
