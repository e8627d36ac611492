"""Entry point: ``python main.py --video FILE --headless ...`` or ``python main.py`` (GUI)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from app import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    settings, options = cli.parse(argv)
    if options.headless:
        from app.headless import run

        return run(settings, options)
    from app.gui import display_available, run as run_gui

    if not display_available():
        print("main.py: error: no display for the GUI (DISPLAY is not set); use --headless", file=sys.stderr)
        return 2
    return run_gui(settings, options, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
