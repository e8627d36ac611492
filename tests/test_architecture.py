"""The house rules of docs/architecture.md, checked from the code.

"Which module may import which": every module of app/ and export/ is parsed with ``ast`` (imports
inside functions count, relative imports are resolved), the import graph is built and each import
is held against ``RULES``, the doc's list stated once, here. A module no rule covers fails too:
a new room gets its line in the doc and here. "No function over 110 lines": every function and
method of app/ and export/.

    python -m tests.test_architecture      # the rules' verdict and the five longest functions
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "export")
MAX_FUNCTION_LINES = 110

# ----------------------------------------------------------------------------- the rules
# (modules, what they may import besides themselves, the doc's reason). The first line whose
# modules match a module is its rule. "x.*" means x and everything under it; a plain name only
# that module ("app" is the package's __init__: the version).
CORE = ["app.core.*"]
MONITOR_PURE = ["app.monitor.core", "app.monitor.states", "app.monitor.settings"]
RULES: list[tuple[list[str], list[str], str]] = [
    (["app", "app.assets", "app.smoothing"], [],
     "the version, the shipped files' paths, the One Euro filter: nothing of the app"),
    (["app.core.*"], CORE,
     "app/core (types, geometry, gaze, errors) imports nothing of the app"),
    (MONITOR_PURE, CORE + MONITOR_PURE,
     "the monitor's rules, states and settings: only app/core and each other"),
    (["app.monitor.events"], CORE + MONITOR_PURE + ["app.io.files"],
     "the event log, the one monitor module with I/O, writes with app/io/files.py's JSON-lines writer"),
    (["app.monitor"], ["app.monitor.*"],
     "the package's __init__ names what its modules define"),
    (["app.settings"], ["app.monitor.settings"],
     "app/settings.py holds the monitor's settings among its own"),
    (["app.io.*"], CORE + ["app.io.*", "app.settings"],
     "adapters (capture, writer, files, sound): app/core, settings, each other; never the pipeline, runner or GUI"),
    (["app.detect", "app.facemesh", "app.model3dmm"], CORE + ["app.assets", "app.settings"],
     "model adapters: app/core, app/assets.py, settings; never the pipeline, runner or GUI"),
    (["app.tracker"], CORE + ["app.detect"],
     "the tracker follows the detector's boxes"),
    (["app.pipeline"], CORE + ["app.assets", "app.settings", "app.monitor.settings", "app.detect", "app.facemesh",
                               "app.model3dmm", "app.tracker", "app.smoothing", "app.monitor.core"],
     "the pipeline: the adapters, tracker, smoothing, the monitor's core; it draws nothing, writes nothing"),
    (["app.render"], CORE + ["app.settings"],
     "app/render.py: app/core and settings only"),
    (["app.runner"], CORE + ["app.settings", "app.io.*", "app.monitor.events", "app.monitor.core", "app.pipeline",
                             "app.render"],
     "the runner: the pipeline, render, app/io, the event log, the monitor's camera-unavailable record"),
    (["app.cli"], ["app.settings", "app.monitor.settings"],
     "the flags are generated from the settings' fields"),
    (["app.headless"], CORE + ["app.settings", "app.runner", "app.io.*", "app.pipeline", "app.model3dmm"],
     "headless sits on top of the runner"),
    (["app.gui.*"], CORE + ["app.settings", "app.monitor.*", "app.cli", "app.io.*", "app.render", "app.runner",
                            "app.pipeline", "app.gui.*"],
     "the window sits on top of the runner; never headless, app/eval or export"),
    (["app.batch.*"], CORE + ["app", "app.settings", "app.monitor.*", "app.cli", "app.io.*", "app.render",
                              "app.runner", "app.pipeline", "app.facemesh", "app.model3dmm", "app.assets",
                              "app.batch.*"],
     "the batch command: drives through the runner and the pipeline, its flags from app/cli.py; nothing "
     "of the app imports it"),
    (["app.eval.*"], ["app.*", "export.*"],
     "measurement commands: leaves that may import any of the app and the exporter's evaluation "
     "(and nothing imports them)"),
    (["export.evaluate"], ["export.*", "app", "app.core.*", "app.detect", "app.io.capture", "app.pipeline",
                           "app.settings"],
     "the AFLW2000-3D evaluation's --crop pipeline rows run the app's own Pipeline (the number users get)"),
    (["export.*"], ["export.*", "app", "app.core.*", "app.detect", "app.io.capture"],
     "the exporter: app's version, geometry, the detector and the decoder (distillation); never the "
     "pipeline, runner, GUI or app/eval"),
]


# ----------------------------------------------------------------------------- the checker
def _matches(name: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return name == base or name.startswith(base + ".")
    return name == pattern


@dataclass(frozen=True)
class Import:
    importer: str     # module name
    imported: str     # module name (the deepest module of the tree that the statement names)
    path: Path
    line: int


def modules(root: Path, packages=PACKAGES) -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is a package's __init__) for every .py under ``packages``."""
    out = {}
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            parts = list(p.relative_to(root).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


def import_graph(root: Path, packages=PACKAGES) -> list[Import]:
    """Every import of one module of ``packages`` by another, wherever it stands in the file."""
    mods = modules(root, packages)

    def resolve(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for mod, (path, is_pkg) in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                       # from . import x / from ..y import z
                    pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg = pkg[:len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                targets = [resolve(f"{base}.{a.name}") if f"{base}.{a.name}" in mods else resolve(base)
                           for a in node.names]
            for t in targets:
                if t is not None and t != mod:
                    found.append(Import(mod, t, path, node.lineno))
    return found


def violations(graph: list[Import], mods, rules=RULES, root: Path = ROOT) -> list[str]:
    """One line per import that its module's rule does not allow, and per module without a rule."""
    out = []
    rule_of = {}
    for mod in mods:
        rule_of[mod] = next((r for r in rules if any(_matches(mod, m) for m in r[0])), None)
        if rule_of[mod] is None:
            out.append(f"{mod}: no rule says what it may import (add it to docs/architecture.md and RULES)")
    for imp in graph:
        rule = rule_of.get(imp.importer)
        if rule is None or any(_matches(imp.imported, a) for a in rule[1]):
            continue
        out.append(f"{imp.path.relative_to(root)}:{imp.line}: {imp.importer} imports {imp.imported}, "
                   f"which its rule does not allow ({rule[2]})")
    return out


def function_lengths(root: Path, packages=PACKAGES) -> list[tuple[int, str]]:
    """(lines, "file:line name") of every function and method, longest first (nested ones too)."""
    out = []
    for pkg in packages:
        for p in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(p.read_text(encoding="utf-8"), str(p))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.append((node.end_lineno - node.lineno + 1,
                                f"{p.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(out, key=lambda x: (-x[0], x[1]))


# ----------------------------------------------------------------------------- the tests
def test_every_import_follows_the_rules_of_docs_architecture():
    mods = modules(ROOT)
    graph = import_graph(ROOT)
    assert len(mods) > 50 and len(graph) > 100          # the whole tree was read
    bad = violations(graph, mods)
    assert not bad, "\n".join(bad)


def test_the_rules_are_the_docs_rules():
    """Each rule's reason and each module group it names stand in docs/architecture.md."""
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Which module may import which", 1)[1].split("\n## ", 1)[0]
    for mods, _allowed, _why in RULES:
        for m in mods:
            path = m.removesuffix(".*").replace(".", "/")
            assert path in section, f"docs/architecture.md does not name {path} in 'Which module may import which'"


def test_the_checker_fails_on_a_new_violation(tmp_path):
    """A tiny tree with the rules' shape: app/core imports the GUI inside a function, a monitor
    module imports app/io through a relative import, a module no rule covers: three lines."""
    for rel, text in {
        "app/__init__.py": "",
        "app/core/__init__.py": "",
        "app/core/types.py": "import numpy\n\ndef f():\n    from app.gui import window\n    return window\n",
        "app/gui/__init__.py": "",
        "app/gui/window.py": "from app.core.types import f\n",
        "app/monitor/__init__.py": "",
        "app/monitor/core.py": "from ..io import files\nfrom . import states\n",
        "app/monitor/states.py": "from app.core import types\n",
        "app/io/__init__.py": "",
        "app/io/files.py": "",
        "app/newroom.py": "",
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    mods = modules(tmp_path, ("app",))
    graph = import_graph(tmp_path, ("app",))
    edges = {(i.importer, i.imported, i.line) for i in graph}
    assert ("app.core.types", "app.gui.window", 4) in edges            # inside a function
    assert ("app.monitor.core", "app.io.files", 1) in edges            # relative, two levels
    assert ("app.monitor.core", "app.monitor.states", 2) in edges
    bad = violations(graph, mods, root=tmp_path)
    assert len(bad) == 3, bad
    assert bad[0] == "app.newroom: no rule says what it may import (add it to docs/architecture.md and RULES)"
    assert bad[1].startswith("app/core/types.py:4: app.core.types imports app.gui.window")
    assert bad[2].startswith("app/monitor/core.py:1: app.monitor.core imports app.io.files")
    # the same tree without the violations passes
    (tmp_path / "app/core/types.py").write_text("import numpy\n")
    (tmp_path / "app/monitor/core.py").write_text("from . import states\n")
    (tmp_path / "app/newroom.py").unlink()
    assert violations(import_graph(tmp_path, ("app",)), modules(tmp_path, ("app",)), root=tmp_path) == []


def test_no_function_is_longer_than_110_lines():
    lengths = function_lengths(ROOT)
    assert len(lengths) > 300
    over = [f"{n} lines: {where}" for n, where in lengths if n > MAX_FUNCTION_LINES]
    assert not over, "split into named steps:\n" + "\n".join(over)


def test_function_lengths_count_a_long_function(tmp_path):
    (tmp_path / "app").mkdir()
    body = "".join(f"        x{i} = {i}\n" for i in range(120))
    (tmp_path / "app" / "m.py").write_text(f"def short():\n    pass\n\n\nclass C:\n    def long(self):\n{body}")
    assert function_lengths(tmp_path, ("app",)) == [(121, "app/m.py:6 long"), (2, "app/m.py:1 short")]


if __name__ == "__main__":
    mods = modules(ROOT)
    graph = import_graph(ROOT)
    bad = violations(graph, mods)
    print(f"{len(mods)} modules, {len(graph)} imports between them, {len(RULES)} rules: "
          f"{len(bad)} violation(s)")
    for line in bad:
        print("  " + line)
    print("the five longest functions of app/ and export/:")
    for n, where in function_lengths(ROOT)[:5]:
        print(f"  {n:4d} lines  {where}")
    sys.exit(1 if bad else 0)
