"""The window's worker loop without a model: CPU and wall time per result.

    python -m app.eval.worker_bench --video FILE [--frames N]

``ProcessingWorker`` (app/gui/worker.py) in its benchmark mode (no pacing, no dropping) with a
stand-in pipeline that finds no face: what is measured is the loop around the model (decoding,
drawing, the Runner and its hooks, the Qt signal to the UI thread), not the model. Prints the
CPU time of the whole process and the wall time per result, and the load average: on a shared
machine compare runs made back to back.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


class _NoModel:
    """What the worker uses of a Pipeline; ``process`` finds no face."""

    def __init__(self, settings):
        self.settings, self.layers = settings, settings.layers
        self.model_name, self.provider, self.monitor = "none", "CPU", None

    def prepare(self, vertices):
        pass

    def process(self, frame, vertices=True):
        from app.core.types import FrameResult

        return FrameResult(frame=frame, observations=[], model=self.model_name, provider=self.provider)

    def close(self):
        pass


def measure(video: str, frames: int, warmup: int = 20) -> dict:
    from PyQt6.QtCore import QCoreApplication, QTimer

    from app import cli
    from app.gui.worker import ProcessingWorker

    app = QCoreApplication.instance() or QCoreApplication(["worker_bench"])
    settings = cli.settings_from_args(cli.build_parser().parse_args(["--no-monitor"]))
    worker = ProcessingWorker(settings, pipeline_factory=_NoModel, realtime=False, drop=False, loop=True)
    mark = {"n": 0}

    def got(_result):
        worker.result_taken()
        mark["n"] += 1
        if mark["n"] == warmup:
            mark["t"], mark["c"] = time.perf_counter(), time.process_time()
        elif mark["n"] == warmup + frames:
            mark["wall"], mark["cpu"] = time.perf_counter() - mark["t"], time.process_time() - mark["c"]
            app.quit()

    worker.result.connect(got)
    worker.start()
    worker.set_source(video)
    QTimer.singleShot(600_000, app.quit)
    app.exec()
    worker.shutdown()
    if "cpu" not in mark:
        raise RuntimeError(f"only {mark['n']} results within 10 minutes")
    return {"cpu_ms": 1000 * mark["cpu"] / frames, "wall_ms": 1000 * mark["wall"] / frames,
            "skipped": worker.results_skipped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.eval.worker_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, help="clip to decode (it loops)")
    ap.add_argument("--frames", type=int, default=300, help="results measured (after 20 warm-up)")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.video):
        print(f"error: video not found: {a.video}", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    r = measure(a.video, a.frames)
    print(f"{a.frames} results: {r['cpu_ms']:.2f} ms CPU and {r['wall_ms']:.2f} ms wall per result, "
          f"{r['skipped']} skipped; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
