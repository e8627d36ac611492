"""Headless: ``main.py --headless`` -> app.runner.Runner, with progress lines and a summary.

``run(settings, options) -> exit code`` (app.settings.Settings, RunOptions). The outputs (app.runner.Outputs) are written as the run goes:
the dump and the event log line by line under their final names, the recording as fragmented MP4,
so a crash keeps what was written. Bad input (missing or unreadable video, unusable model,
unwritable output, --device cuda without CUDA): one line on stderr, exit 2, no file left. An
output that cannot be written midway (a full disk): one line; a file source stops with exit 1,
a camera goes on monitoring without it. A run that gives no frame leaves no output.
"""
from __future__ import annotations

import json
import logging
import sys

from app.core.errors import one_line
from app.runner import Outputs, Runner, overlay_kind_for
from app.settings import RunOptions, Settings

log = logging.getLogger("app")


class UsageError(Exception):
    """Bad input or output named on the command line (exit 2)."""


def _source_spec(options: RunOptions):
    if options.video and options.camera is not None:
        raise UsageError("give either --video FILE or --camera N, not both")
    if options.source is None:
        raise UsageError("no input: give --video FILE or --camera N")
    return options.source


def run(settings: Settings, options: RunOptions) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from app.io.capture import SourceError, open_source
    from app.io.files import OutputError
    from app.model3dmm import ContractError, DeviceError
    from app.pipeline import Pipeline

    opts = options
    source = outputs = pipe = None
    try:
        spec = _source_spec(options)
        source = open_source(spec, loop=options.loop)
        # outputs first: a bad path fails in one line, before the models load (and log)
        outputs = Outputs(opts, fps=source.fps, size=source.size, live=source.is_live,
                          monitor_on=settings.monitor is not None, overlay=overlay_kind_for(settings))
        pipe = Pipeline(settings)
    except (UsageError, SourceError, OutputError, ContractError, DeviceError, FileNotFoundError) as e:
        if outputs is not None:
            outputs.discard()
        if source is not None:
            source.stop()
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2

    log.info("input %s (%dx%d @ %.2f fps), model %s on %s", source.name, source.size[0], source.size[1],
             source.fps, pipe.model_name, pipe.provider)
    rep = Runner(source, pipe, outputs, max_frames=opts.max_frames, quiet=opts.quiet).run()

    fps = rep.frames / rep.elapsed if rep.elapsed > 0 else 0.0
    print(f"done: {rep.frames} frames in {rep.elapsed:.1f} s ({fps:.1f} fps), a face in {rep.with_face} "
          f"({100.0 * rep.with_face / max(1, rep.frames):.0f} %), model {pipe.model_name} on {pipe.provider}",
          file=sys.stderr)
    if rep.frames:
        parts = [f"{k} {v['median']:.1f}/{v['p95']:.1f}" for k, v in rep.stage_ms.items()]
        print("stage ms median/p95: " + ", ".join(parts), file=sys.stderr)
    if rep.summary is not None:
        print("monitor: " + json.dumps({k: v for k, v in rep.summary.items() if k not in ("event", "time")},
                                       default=str), file=sys.stderr)
    for o in rep.written:
        print(f"wrote {o}", file=sys.stderr)
    if rep.frames == 0 and rep.rc == 0:
        print("error: the input gave no frames", file=sys.stderr)
        return 2
    return rep.rc
