"""Entry point: ``python main.py --video FILE --headless ...`` or ``python main.py`` (GUI)."""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    from app import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)
    if args.headless:
        from app.headless import run

        return run(settings, args)
    try:
        from app.gui import display_available, run as run_gui
    except ImportError as e:   # GUI package or PyQt6 missing
        print(f"main.py: error: the GUI is not available ({e}); use --headless", file=sys.stderr)
        return 2
    if not display_available():
        print("main.py: error: no display for the GUI (DISPLAY is not set); use --headless", file=sys.stderr)
        return 2
    return run_gui(settings, args, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
