"""``python -m app.gui [pipeline flags] [--screenshot-after SECONDS PATH] [--quit-after SECONDS]``

The same window as ``python main.py`` (every pipeline and monitor flag of app/cli.py works), plus
two options for scripted runs: save a PNG of the window after SECONDS and quit; quit after SECONDS.
"""
from __future__ import annotations

import sys


def add_gui_args(parser) -> None:
    g = parser.add_argument_group("GUI (python -m app.gui only)")
    g.add_argument("--screenshot-after", nargs=2, metavar=("SECONDS", "PATH"), default=None,
                   help="save a PNG of the window after SECONDS, then quit")
    g.add_argument("--quit-after", type=float, metavar="SECONDS", default=None,
                   help="close the window after SECONDS (finalizes a recording)")


def main(argv=None) -> int:
    from app import cli
    from app.gui import run

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = cli.build_parser()
    add_gui_args(parser)
    args = parser.parse_args(argv)
    if args.screenshot_after is not None:
        try:
            if float(args.screenshot_after[0]) <= 0:
                raise ValueError
        except ValueError:
            parser.error(f"--screenshot-after: SECONDS must be a positive number, got {args.screenshot_after[0]!r}")
    return run(cli.settings_from_args(args), cli.run_options_from_args(args), argv=argv,
               screenshot_after=args.screenshot_after, quit_after=args.quit_after)


if __name__ == "__main__":
    sys.exit(main())
