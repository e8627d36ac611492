"""app.eval.stage_cost and app.eval.ab_cpu: real runs on shared media (small), bad input."""
import pytest

from app.eval import ab_cpu, stage_cost
from tests.conftest import shared


def test_stage_cost_rows(capsys):
    img = shared("media", "portrait_glasses.jpg")
    assert stage_cost.main(["--image", str(img), "--rounds", "1", "--calls", "3"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split("  ")[0].strip(): ln.split() for ln in out.splitlines()[2:] if ln.strip()}
    assert set(rows) == {"single pass", "flip average (batch 2)", "landmark two-pass"}
    assert rows["single pass"][-1] == "1.00x"
    for r in rows.values():
        assert float(r[-3]) > 0   # CPU ms per face, measured


def test_stage_cost_bad_image(tmp_path, capsys):
    assert stage_cost.main(["--image", str(tmp_path / "none.jpg")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read image" in err[0]


def test_ab_cpu_same_work_for_the_crop_scale(capsys):
    clip = shared("media", "clips", "expressions_d13.mp4")
    assert ab_cpu.main(["--video", str(clip), "--frames", "12", "--rounds", "2", "--a", "--landmark-crop-scale 1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("round")]
    assert len(lines) == 4
    # both settings: the same detector calls and 3DMM runs on the same frames
    assert len({ln.split("frames, ")[1].split(", CPU")[0] for ln in lines}) == 1


def test_ab_cpu_bad_video(tmp_path, capsys):
    assert ab_cpu.main(["--video", str(tmp_path / "none.mp4")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no frame decoded" in err[0]
