"""The window fits the screen it opens on: first size from the screen's available area (never
larger), every control visible or in the side column's scroll area, saved geometry from a larger
screen shrunk onto a smaller one. And the mesh style control.

The laptop / desktop screens are real Qt screens: each case runs the window in a fresh process on
Qt's offscreen platform with a configured screen size (``offscreen:configfile=...``), behind the
real ProcessingWorker with a stand-in pipeline (tests/test_gui_controls.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("app.pipeline")

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ pure size logic
def test_initial_geometry_fits_the_available_area_and_prefers_its_size_on_big_screens():
    from app.gui.window import FRAME_MARGIN, PREFERRED_SIZE, initial_geometry

    mx, my = FRAME_MARGIN
    for avail in ((0, 0, 1280, 720), (0, 0, 1366, 768), (0, 27, 1280, 773), (1920, 0, 1366, 740)):
        x, y, w, h = initial_geometry(avail)
        ax, ay, aw, ah = avail
        assert (w, h) == (aw - mx, ah - my)           # smaller than preferred: all of it
        assert ax <= x and x + w <= ax + aw and ay + my - mx // 2 <= y and y + h <= ay + ah
    x, y, w, h = initial_geometry((0, 0, 1920, 1080))
    assert (w, h) == PREFERRED_SIZE and x == (1920 - w) // 2
    assert initial_geometry((0, 0, 2560, 1440))[2:] == PREFERRED_SIZE


def test_fit_geometry_shrinks_and_moves_a_rect_saved_on_a_larger_screen():
    from app.gui.window import fit_geometry

    avail = (0, 0, 1366, 768)
    x, y, w, h = fit_geometry((200, 100, 1600, 960), avail)
    assert (w, h) == (1350, 728) and x >= 0 and y >= 0 and x + w <= 1366 and y + h <= 768
    assert fit_geometry((100, 80, 900, 600), avail) == (100, 80, 900, 600)       # fits: unchanged
    x, y, w, h = fit_geometry((3000, 900, 900, 600), avail)                     # on a screen now gone
    assert (w, h) == (900, 600) and x + w <= 1366 and y + h <= 768
    x, y, w, h = fit_geometry((-500, -300, 900, 600), (1920, 0, 1280, 720))      # second monitor
    assert x >= 1920 and y >= 0 and x + w <= 3200


# ------------------------------------------------------------------------ the real window
def test_window_on_the_test_screen_fits_it(qtbot, tmp_path):
    """The screen of this test process (offscreen: 800x800): smaller than any laptop."""
    from PyQt6.QtCore import QSettings

    from app.gui.window import MainWindow
    from app.gui.worker import ProcessingWorker
    from tests.test_gui_controls import _FakePipeline, _settings, _Sound

    st = _settings()
    qs = QSettings(str(tmp_path / "gui.ini"), QSettings.Format.IniFormat)
    win = MainWindow(st, qsettings=qs, worker=ProcessingWorker(st, pipeline_factory=_FakePipeline),
                     restore=True, list_cameras_at_start=False, sound=_Sound())
    qtbot.addWidget(win)
    avail = win.screen().availableGeometry()
    assert avail.contains(win.geometry())
    assert win.minimumSizeHint().width() <= avail.width() and win.minimumSizeHint().height() <= avail.height()
    # a geometry larger than the screen and partly off it (Qt's restoreGeometry clamps the saved
    # state too; this is the window's own check, also for a geometry set any other way)
    from PyQt6.QtCore import QRect

    win.setGeometry(QRect(avail.x() - 400, avail.y() - 300, avail.width() + 1200, avail.height() + 700))
    assert not avail.contains(win.geometry())
    win.fit_to_screen(restored=True)
    assert avail.contains(win.geometry())
    assert win.geometry().width() >= avail.width() - 100
    win.close()


PROBE = r'''
import json, sys
from PyQt6.QtCore import QPoint, QRect, QSettings
from PyQt6.QtWidgets import QApplication
app = QApplication([])
from app.gui.window import MainWindow
from app.gui.worker import ProcessingWorker
from tests.test_gui_controls import _FakePipeline, _settings, _Sound

ini, resize = sys.argv[1], sys.argv[2]
st = _settings()
qs = QSettings(ini, QSettings.Format.IniFormat)
win = MainWindow(st, qsettings=qs, worker=ProcessingWorker(st, pipeline_factory=_FakePipeline),
                 restore=True, list_cameras_at_start=False, sound=_Sound())
win.show()
for _ in range(5):
    app.processEvents()
side = win.side.widget()
controls = {"source": win.source_combo, "open": win.btn_open, "model": win.model_combo,
            "pause": win.btn_pause, "record": win.btn_record, "record_to": win.btn_record_path,
            "snapshot": win.btn_snapshot, "video": win.view, "banner": win.banner,
            "recalibrate": win.btn_recal, "calibration": win.lbl_calib, "plots": win.plots,
            "smoothing": win.chk_smooth, "mesh_style": win.mesh_style_combo,
            **{"angle_" + k: v for k, v in win.lbl_angles.items()},
            **{"spin_" + k: v for k, v in win.spin.items()},
            **{"layer_" + k: v for k, v in win.chk_layer.items()},
            **{"status_" + k: v for k, v in win.st.items()}}
where = {}
for name, c in controls.items():
    if not c.isVisible():
        where[name] = "hidden"
    elif side.isAncestorOf(c):
        r = QRect(c.mapTo(side, QPoint(0, 0)), c.size())
        inside = side.rect().contains(r) and r.width() <= win.side.viewport().width()
        shown = QRect(c.mapTo(win, QPoint(0, 0)), c.size())
        where[name] = ("window" if win.rect().contains(shown) and
                       win.side.viewport().rect().contains(QRect(c.mapTo(win.side.viewport(), QPoint(0, 0)), c.size()))
                       else "scroll") if inside else "clipped"
    else:
        r = QRect(c.mapTo(win, QPoint(0, 0)), c.size())
        where[name] = "window" if win.rect().contains(r) and c.width() >= c.minimumSizeHint().width() else "clipped"
a = win.screen().availableGeometry()
g, fg = win.geometry(), win.frameGeometry()
print(json.dumps({"avail": [a.x(), a.y(), a.width(), a.height()], "geometry": [g.x(), g.y(), g.width(), g.height()],
                  "scrolls": side.height() > win.side.viewport().height(), "where": where,
                  "plots_height": win.plots.height()}))
if resize != "-":
    w, h = map(int, resize.split("x"))
    win.resize(w, h)
    app.processEvents()
win.close()
'''


def _probe(tmp_path, screen: str, ini: Path, resize: str = "-") -> dict:
    w, h = map(int, screen.split("x"))
    cfg = tmp_path / f"screen_{screen}.json"
    cfg.write_text(json.dumps({"screens": [{"name": "test", "x": 0, "y": 0, "width": w, "height": h,
                                            "logicalDpi": 96, "logicalBaseDpi": 96, "dpr": 1}]}))
    env = dict(os.environ, QT_QPA_PLATFORM=f"offscreen:configfile={cfg}")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-c", PROBE, str(ini), resize], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("screen", ["1280x720", "1366x768", "1920x1080"])
def test_every_control_visible_or_one_scroll_away(tmp_path, screen):
    r = _probe(tmp_path, screen, tmp_path / "gui.ini")
    ax, ay, aw, ah = r["avail"]
    x, y, w, h = r["geometry"]
    assert r["avail"] == [0, 0] + list(map(int, screen.split("x")))
    assert ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah
    bad = {k: v for k, v in r["where"].items() if v not in ("window", "scroll")}
    assert not bad, bad
    # the toolbar, the video and the status bar always on screen; at these sizes the side column
    # needs no scrolling at all (plots PLOTS_MIN_HEIGHT px at the least)
    assert all(v == "window" for k, v in r["where"].items()
               if k in ("source", "open", "model", "pause", "record", "record_to", "snapshot", "video"))
    assert not r["scrolls"] and all(v == "window" for v in r["where"].values())
    assert r["plots_height"] >= 300


@pytest.mark.slow
def test_geometry_saved_on_a_big_screen_is_clamped_on_a_laptop(tmp_path):
    ini = tmp_path / "gui.ini"
    big = _probe(tmp_path, "1920x1080", ini, resize="1850x1020")
    assert big["geometry"][2:] == [1600, 960]
    small = _probe(tmp_path, "1280x720", ini)
    x, y, w, h = small["geometry"]
    assert w <= 1280 and h <= 720 and x >= 0 and y >= 0 and x + w <= 1280 and y + h <= 720
    assert all(v in ("window", "scroll") for v in small["where"].values())


# ------------------------------------------------------------------------ mesh style control
def test_mesh_style_control_reaches_the_pipeline_persists_and_yields_to_the_flag(qtbot, tmp_path):
    from PyQt6.QtCore import QSettings

    from app.gui import explicit_flags
    from app.gui.window import MainWindow
    from app.gui.worker import ProcessingWorker
    from tests.test_gui_controls import _FakePipeline, _settings, _Sound

    ini = str(tmp_path / "gui.ini")

    def make(*argv):
        st = _settings(*argv)

        class W(MainWindow):
            cli_explicit = explicit_flags(list(argv))

        win = W(st, qsettings=QSettings(ini, QSettings.Format.IniFormat),
                worker=ProcessingWorker(st, pipeline_factory=_FakePipeline), restore=True,
                list_cameras_at_start=False, sound=_Sound())
        qtbot.addWidget(win)
        return win

    win = make()
    c = win.mesh_style_combo
    assert [c.itemData(i) for i in range(c.count())] == ["shaded", "wire", "points"]
    assert c.currentData() == "shaded" == win.settings.layers.mesh_style
    qtbot.waitUntil(lambda: win.worker.pipeline is not None, timeout=20_000)
    c.activated.emit(c.findData("wire"))
    assert win.settings.layers.mesh_style == "wire"
    qtbot.waitUntil(lambda: win.worker.pipeline.layers.mesh_style == "wire", timeout=20_000)
    win.close()
    win = make()                                   # restored from the saved settings
    assert win.settings.layers.mesh_style == "wire" and win.mesh_style_combo.currentData() == "wire"
    win.close()
    win = make("--layers", "points")               # the command line wins
    assert win.settings.layers.mesh_style == "points" and win.mesh_style_combo.currentData() == "points"
    win.close()
