"""PyQt6 desktop app: ``run(settings, args) -> int`` opens the window and processes at once.

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

log = logging.getLogger(__name__)


def display_available() -> bool:
    """False on Linux without an X11/Wayland display and without QT_QPA_PLATFORM (Qt would abort)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.environ.get("QT_QPA_PLATFORM"))


def source_from_args(args) -> Optional[object]:
    """The source the command line names (--video FILE / --camera N / --source X), or None."""
    for name in ("video", "source", "image"):
        v = getattr(args, name, None)
        if v not in (None, ""):
            return str(v)
    cam = getattr(args, "camera", None)
    if cam is not None and cam is not False:
        return int(cam)
    return None


# argparse dest -> the setting it sets, where the names differ (monitor flags: monitor_<field>)
_DEST_SETTING = {"no_smoothing": "smoothing", "no_eyes": "eyes_from_mesh", "no_monitor": "monitor"}


def _flag_dests(parser) -> dict:
    """Every option string of ``parser`` -> its argparse dest."""
    return {o: a.dest for a in parser._actions for o in a.option_strings}


def explicit_flags(argv=None, parser=None) -> set:
    """The settings the user gave on the command line (they win over the saved GUI settings), by
    name: each flag is resolved exactly as argparse does (full name or unique prefix) to its dest,
    then to the setting: ``--perclos-window`` -> perclos_window (not perclos_threshold),
    ``--no-smoothing`` -> smoothing, ``--alert-yaw`` -> alert_yaw, ``--layers`` -> layers."""
    argv = sys.argv[1:] if argv is None else argv
    if parser is None:
        from app import cli

        parser = cli.build_parser()
    dests = _flag_dests(parser)
    out = set()
    for a in argv:
        if not a.startswith("--") or a == "--":
            continue
        flag = a.split("=", 1)[0]
        dest = dests.get(flag)
        if dest is None and getattr(parser, "allow_abbrev", True):
            hits = {d for o, d in dests.items() if o.startswith(flag)}
            dest = hits.pop() if len(hits) == 1 else None
        if dest is None:
            continue
        if dest.startswith("monitor_"):
            dest = dest[len("monitor_"):]
        out.add(_DEST_SETTING.get(dest, dest))
    return out


HEADLESS_ONLY = (("events", "--events"), ("dump", "--dump"), ("max_frames", "--max-frames"), ("quiet", "--quiet"))


def headless_only_flags(args) -> list[str]:
    """The given flags that only the headless mode uses (the window ignores them)."""
    out = []
    for dest, flag in HEADLESS_ONLY:
        v = getattr(args, dest, None)
        if v not in (None, False):
            out.append(flag)
    return out


def warn_headless_only(args) -> Optional[str]:
    """One warning line naming the headless-only flags given to the window (or nothing)."""
    flags = headless_only_flags(args) if args is not None else []
    if not flags:
        return None
    msg = (f"{', '.join(flags)} {'is' if len(flags) == 1 else 'are'} headless-only (use --headless); "
           "the window ignores them. In the window, monitor events are written beside each "
           "recording (NAME.events.jsonl next to NAME.mp4).")
    log.warning(msg)
    return msg


def run(settings, args=None, *, argv=None) -> int:
    """Open the window on ``settings`` (app.settings.Settings) and run the Qt event loop."""
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
    warn_headless_only(args)
    source = source_from_args(args) if args is not None else None
    MainWindow.cli_explicit = explicit_flags(argv)
    win = MainWindow(settings, source=source)
    win.show()
    if getattr(args, "record", None):
        win.start_recording(args.record)     # after the source: commands run in order

    shot = getattr(args, "screenshot_after", None)
    if shot:
        secs, path = float(shot[0]), shot[1]

        def take():
            save_screenshot(win, path)
            win.close()

        QTimer.singleShot(int(secs * 1000), take)
    quit_after = getattr(args, "quit_after", None)
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
