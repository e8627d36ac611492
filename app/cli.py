"""Command line: the one module that parses arguments and exits on a bad one.

``build_parser()`` makes one flag per field of ``Settings`` (the pipeline), its ``monitor``
(``MonitorSettings``, ``--alert-yaw`` ...) and ``RunOptions`` (input and outputs), each from the
field's metadata (app/settings.py) or, for the monitor, ``app.monitor.settings.HELP``.
``settings_from_args(args) -> Settings`` and ``run_options_from_args(args) -> RunOptions`` turn the
parsed flags back into those dataclasses; a bad value is one line on stderr and exit 2.
main.py (headless and GUI), ``python -m app.gui`` and ``python -m app.eval.bench`` share this parser.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import MISSING, fields
from typing import Optional

from app.monitor.settings import HELP as MONITOR_HELP
from app.monitor.settings import MonitorSettings
from app.settings import RunOptions, Settings, flag_of

DESCRIPTION = "Real-time 3D face analysis and driver monitoring."
# argparse groups, in the order --help lists them
GROUPS = ("input (one of)", "model", "detection and tracking", "smoothing (One Euro filter)", "output",
          "driver monitoring (docs/driver-monitoring.md)")
MONITOR_GROUP = GROUPS[-1]
MONITOR_DEST = "monitor_"   # argparse dest of a MonitorSettings field: monitor_<field>


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is MISSING else f.default


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", flag_of(f.name))


def _add_field(group, f: dataclasses.Field) -> None:
    """One flag for a Settings / RunOptions field; its dest is the field's name."""
    meta, default = f.metadata, _default(f)
    if "parse" not in meta and (isinstance(default, bool) or dataclasses.is_dataclass(default)):
        # a switch: --no-X turns an on-by-default field off (a dataclass field: to None), --X turns it on
        off = _flag(f).startswith("--no-")
        group.add_argument(_flag(f), dest=f.name, action="store_false" if off else "store_true",
                           help=meta["help"])
        return
    kw = {"dest": f.name, "help": meta["help"]}
    if "metavar" in meta:
        kw["metavar"] = meta["metavar"]
    if "choices" in meta:
        kw["choices"] = meta["choices"]
    if "parse" in meta:        # a value given as text (--layers SPEC), turned into data by settings_from_args
        kw["default"] = meta["default_text"]
    else:
        kw["default"] = default
        kw["type"] = meta.get("type", type(default) if default is not None else str)
    if kw["default"] is not None:
        kw["help"] += " (default %(default)s)"
    group.add_argument(_flag(f), **kw)


def add_monitor_args(parser: argparse.ArgumentParser, group=None) -> argparse.ArgumentParser:
    """One flag per MonitorSettings field (defaults from the dataclass, help from HELP) to ``parser``."""
    g = group if group is not None else parser.add_argument_group(MONITOR_GROUP)
    for f in fields(MonitorSettings):
        default = _default(f)
        typ = int if isinstance(default, int) and not isinstance(default, bool) else float
        g.add_argument(flag_of(f.name), dest=MONITOR_DEST + f.name, type=typ, default=default,
                       metavar="N" if typ is int else "X",
                       help=f"{MONITOR_HELP.get(f.name, f.name)} (default {default:g})")
    return parser


def add_settings_args(parser: argparse.ArgumentParser, *, run_options: tuple = ()) -> argparse.ArgumentParser:
    """One flag per ``Settings`` field and per monitor field (its --no-monitor and --alert-yaw ...),
    grouped as main.py's, plus the ``RunOptions`` fields named in ``run_options`` (e.g.
    ``("record_quality",)``): what a caller with its own inputs and outputs (``python -m app.batch``)
    shares with main.py."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS}
    for f in fields(RunOptions):
        if f.name in run_options:
            _add_field(groups[f.metadata["group"]], f)
    for f in fields(Settings):
        _add_field(groups[f.metadata["group"]], f)
    add_monitor_args(parser, groups[MONITOR_GROUP])
    return parser


def build_parser(prog: str = "main.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for cls in (RunOptions, Settings):
        for f in fields(cls):
            _add_field(groups[f.metadata["group"]], f)
    add_monitor_args(p, groups[MONITOR_GROUP])
    return p


def _fail(msg: str, parser: Optional[argparse.ArgumentParser]) -> None:
    """One line and exit 2: ``PROG: error: msg`` (after the usage) with a parser, else ``error: msg``."""
    if parser is not None:
        parser.error(msg)
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def monitor_settings_from_args(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None
                               ) -> MonitorSettings:
    """MonitorSettings from the flags of add_monitor_args; a nonsense value: one line, exit 2."""
    ns = vars(args)
    kw = {f.name: ns[MONITOR_DEST + f.name] for f in fields(MonitorSettings) if MONITOR_DEST + f.name in ns}
    try:
        return MonitorSettings(**kw).validate()
    except ValueError as e:
        _fail(str(e), parser)


def settings_from_args(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> Settings:
    """Settings from parsed flags; a bad value: one line on stderr, exit 2."""
    ns = vars(args)
    kw = {}
    for f in fields(Settings):
        if f.name not in ns:
            continue
        v = ns[f.name]
        if "parse" in f.metadata:
            try:
                v = f.metadata["parse"](v)
            except ValueError as e:
                _fail(f"{_flag(f)}: {e}", parser)
        elif dataclasses.is_dataclass(_default(f)):     # the monitor: on (its flags) or off (--no-monitor)
            v = monitor_settings_from_args(args, parser) if v else None
        kw[f.name] = v
    st = Settings(**kw)
    try:
        st.validate()
    except ValueError as e:
        _fail(str(e), parser)
    return st


def run_options_from_args(args: argparse.Namespace) -> RunOptions:
    """RunOptions from parsed flags (the fields the parser has; the others keep their defaults)."""
    ns = vars(args)
    return RunOptions(**{f.name: ns[f.name] for f in fields(RunOptions) if f.name in ns})


def parse(argv=None, parser: Optional[argparse.ArgumentParser] = None) -> tuple[Settings, RunOptions]:
    """``argv`` (default sys.argv[1:]) -> (Settings, RunOptions), exits 2 on a bad flag."""
    parser = parser if parser is not None else build_parser()
    args = parser.parse_args(argv)
    return settings_from_args(args), run_options_from_args(args)


def explicit_flags(argv=None, parser: Optional[argparse.ArgumentParser] = None) -> set:
    """The settings the user gave on the command line (they win over the window's saved settings),
    by field name: each flag is resolved exactly as argparse does (full name or unique prefix) to its
    dest, which is the field's name (a monitor flag's without the ``monitor_`` prefix):
    ``--perclos-window`` -> perclos_window (not perclos_threshold), ``--no-smoothing`` -> smoothing,
    ``--alert-yaw`` -> alert_yaw, ``--layers`` -> layers, ``--no-monitor`` -> monitor."""
    argv = sys.argv[1:] if argv is None else argv
    parser = parser if parser is not None else build_parser()
    dests = {o: a.dest for a in parser._actions for o in a.option_strings}
    out = set()
    for a in argv:
        if not a.startswith("--") or a == "--":
            continue
        flag = a.split("=", 1)[0]
        dest = dests.get(flag)
        if dest is None and parser.allow_abbrev:
            hits = {d for o, d in dests.items() if o.startswith(flag)}
            dest = hits.pop() if len(hits) == 1 else None
        if dest is None:
            continue
        out.add(dest[len(MONITOR_DEST):] if dest.startswith(MONITOR_DEST) else dest)
    return out


def headless_only_flags(options: RunOptions) -> list[str]:
    """The flags of ``options`` that only the headless mode uses (given, i.e. not at their default)."""
    return [_flag(f) for f in fields(RunOptions)
            if f.metadata.get("headless_only") and getattr(options, f.name) != _default(f)]
