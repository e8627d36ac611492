"""PyQt6 desktop app: ``run(settings, options) -> int`` opens the window and processes at once.

``main.py`` routes here when ``--headless`` is not given. ``python -m app.gui`` is the same with
two extra options (``--screenshot-after SECONDS PATH``, ``--quit-after SECONDS``) used by
scripts/screenshot_xvfb.sh.

Command-line flags in the window: every pipeline / monitor flag of app/cli.py sets the starting
``Settings`` (and wins over the settings saved by the last session); ``--video`` / ``--camera``
start processing at once; ``--record OUT.mp4`` starts recording at once. Video files always loop
in the window (``--loop`` is implied); the alert sound always plays on a new alert (``--sound`` is
implied); monitor events are written beside each recording (``NAME.events.jsonl``), so
``--events``, ``--dump``, ``--max-frames`` and ``--quiet`` are headless-only (one warning line says
so when they are given). Ctrl-C in the terminal closes the
window like Q does (a recording is finalized).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from app.cli import explicit_flags, headless_only_flags

log = logging.getLogger(__name__)


def display_available() -> bool:
    """False on Linux without an X11/Wayland display and without QT_QPA_PLATFORM (Qt would abort)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM"))


def warn_headless_only(options) -> Optional[str]:
    """One warning line naming the headless-only flags given to the window (or nothing)."""
    flags = headless_only_flags(options) if options is not None else []
    if not flags:
        return None
    msg = (f"{', '.join(flags)} {'is' if len(flags) == 1 else 'are'} headless-only (use --headless); "
           "the window ignores them. In the window, monitor events are written beside each "
           "recording (NAME.events.jsonl next to NAME.mp4).")
    log.warning(msg)
    return msg


def run(settings, options=None, *, argv=None, screenshot_after=None, quit_after=None) -> int:
    """Open the window on ``settings`` (app.settings.Settings) with the input and recording of
    ``options`` (RunOptions) and run the Qt event loop. ``screenshot_after`` (SECONDS, PATH): save a
    PNG of the window then close it; ``quit_after`` SECONDS: close the window."""
    if not display_available():
        print("error: no display for the GUI (DISPLAY is not set); run with --headless, "
              "or under Xvfb (scripts/screenshot_xvfb.sh)", file=sys.stderr)
        return 2
    from PyQt6.QtCore import QTimer
    from PyQt6.QtWidgets import QApplication

    from app.gui.window import MainWindow

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "face3d-monitor"])
    app.setApplicationName("face3d-monitor")
    warn_headless_only(options)
    source = options.source if options is not None else None
    MainWindow.cli_explicit = explicit_flags(argv)
    win = MainWindow(settings, source=source)
    if options is not None:
        win.worker.record_quality = options.record_quality
    win.show()
    if options is not None and options.record:
        win.start_recording(options.record)     # after the source: commands run in order

    if screenshot_after:
        secs, path = float(screenshot_after[0]), screenshot_after[1]

        def take():
            save_screenshot(win, path)
            win.close()

        QTimer.singleShot(int(secs * 1000), take)
    if quit_after:
        QTimer.singleShot(int(float(quit_after) * 1000), win.close)
    # Ctrl-C: Python runs signal handlers only between bytecodes, so wake the interpreter
    # regularly while Qt's loop runs, and close the window (finalizes a recording)
    import signal

    signal.signal(signal.SIGINT, lambda *_: win.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    rc = app.exec()
    wake.stop()
    return int(rc or 0)


def save_screenshot(win, path) -> str:
    """The window as the display shows it (X server pixels under X11/Xvfb), PNG written atomically."""
    from pathlib import Path

    screen = win.screen()
    pix = screen.grabWindow(int(win.winId())) if screen is not None else None
    if pix is None or pix.isNull() or pix.width() < 10:
        pix = win.grab()          # offscreen platform: render the widget tree
    path = Path(path)
    tmp = path.with_name("." + path.name + ".partial.png")
    if not pix.save(str(tmp), "PNG"):
        raise OSError(f"cannot write screenshot {path}")
    os.replace(tmp, path)
    print(f"screenshot saved: {path} ({pix.width()}x{pix.height()})", flush=True)
    return str(path)
