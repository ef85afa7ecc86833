"""The app as a user runs it: printed figures, bad input, atomic output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT

APP = ROOT / "apps" / "imagenet" / "build_resnet.py"


def run_app(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(APP), *args], capture_output=True, text=True,
                          cwd=cwd)


def test_resnet50_prints_the_original_lines_and_writes_three_files(tmp_path):
    out = tmp_path / "out"
    proc = run_app("-m", "bottleneck", "-b", "3", "4", "6", "3", "-n", "256", "--no-fc_layers",
                   "-o", str(out), "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    i = lines.index("Number of params: 25.556032 Million")
    assert lines[i + 1] == "Number of flops: 3858.026368 Million"
    assert "Learnable params: 25,557,032" in lines[i + 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["params"] == 25_557_032 and report["legacy_params"] == 25_556_032
    assert report["macs"] == sum(row["macs"] for row in report["layers"])
    conv1 = next(r for r in report["layers"] if r["name"] == "conv1")
    assert conv1["output_shapes"] == [[1, 64, 112, 112]]
    assert conv1["macs"] == 64 * 112 * 112 * 3 * 7 * 7


def test_table_lists_every_layer(tmp_path):
    proc = run_app("-m", "normal", "-n", "64", "-b", "2", "2", "2", "2", "--table")
    assert proc.returncode == 0
    assert "stage4_block2_branch2b" in proc.stdout and "total" in proc.stdout


BAD = [
    (["-m", "resnext"], "-m/--main_branch", "normal"),
    (["-m", "bottleneck", "-b", "3", "4", "6"], "-b/--blocks", "4 numbers"),
    (["-m", "bottleneck", "-b", "3", "4", "0", "3"], "-b/--blocks", "positive integer"),
    (["-m", "bottleneck", "-n", "-8"], "-n/--num_output_stage1", "positive integer"),
    (["-m", "bottleneck", "-n", "66"], "-n/--num_output_stage1", "divisible by 4"),
    (["-m", "normal", "--crop_size", "0"], "--crop_size", "positive integer"),
    (["-m", "normal", "--mean", "1,2,x"], "--mean", "comma-separated"),
    (["-m", "normal", "--mean", "1,2"], "mean values", "1 or 3"),
    ([], "-m/--main_branch", "required"),
]


@pytest.mark.parametrize("args,names,allowed", BAD, ids=[" ".join(b[0]) or "none" for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, names, allowed):
    out = tmp_path / "out"
    proc = run_app(*args, "-o", str(out), "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, err
    assert names in err[0] and allowed in err[0]
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_old_files_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.prototxt").write_text("old")
    # the JSON report cannot be written (its folder is a file): nothing may change
    blocker = tmp_path / "file"
    blocker.write_text("")
    proc = run_app("-m", "normal", "-o", str(out), "--json", str(blocker / "r.json"))
    assert proc.returncode == 2
    assert "cannot write" in proc.stderr and proc.stderr.count("\n") == 1
    assert (out / "train.prototxt").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["train.prototxt"]


def test_too_small_input_is_a_clear_error():
    from pynetbuilder import Net, ShapeError
    from pynetbuilder.legos import Conv, Input

    net = Net("small")
    x = Input("data", [(1, 3, 4, 4)])(net)
    with pytest.raises(ShapeError, match="too small"):
        Conv("conv", 8, 5, pad=0)(net, x)
        net.report()


def test_written_files_get_the_usual_permissions(tmp_path):
    """Outputs are readable as any file the user writes (umask applies), not 0600."""
    import os
    import stat

    from pynetbuilder.io import write_files

    old = os.umask(0o022)
    try:
        (path,) = write_files({tmp_path / "a" / "deploy.prototxt": "name: 'x'\n"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_reader_that_goes_away_ends_quietly(tmp_path):
    """`pynetbuilder build ... --table | head -1`: exit 0 and no error about the pipe."""
    import subprocess

    from conftest import ROOT

    done = subprocess.run(
        f"{ROOT}/.venv/bin/pynetbuilder build resnet_imagenet --table | head -1",
        shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=120,
        executable="/bin/bash",
    )
    assert done.stdout.startswith("layer") and done.stdout.count("\n") == 1
    assert done.stderr == ""
    piped = subprocess.run(
        f"set -o pipefail; {ROOT}/.venv/bin/pynetbuilder build resnet_imagenet --table | head -1",
        shell=True, capture_output=True, text=True, cwd=tmp_path, timeout=120,
        executable="/bin/bash",
    )
    assert piped.returncode == 0, piped.stderr


def test_reading_commands_do_not_load_the_builder(tmp_path):
    """``analyze`` of a prototxt and ``--version`` import neither the builder (graph,
    legos, models) nor, for ``--version``, Caffe's schema (start-up, issue 11)."""
    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text("layer { name: 'x' type: 'Input' top: 'x' "
                        "input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n"
                        "layer { name: 'r' type: 'ReLU' bottom: 'x' top: 'r' }\n")
    code = ("import sys, io, contextlib; from pynetbuilder.commands import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out: status = main(sys.argv[1:])\n"
            "print(status, 'ReLU' in out.getvalue(), sorted(m for m in sys.modules if m in "
            "('pynetbuilder.graph', 'pynetbuilder.legos', 'pynetbuilder.models', "
            "'pynetbuilder.proto.caffe_pb2')))")
    for argv, loaded in (([str(prototxt)], ["pynetbuilder.proto.caffe_pb2"]), (["--x"], [])):
        argv = ["analyze", *argv] if loaded else ["--version"]
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                             text=True, check=True).stdout.split(" ", 2)
        assert out[0] == "0" and eval(out[2]) == loaded, out  # noqa: S307 - our list literal
        assert out[1] == str(bool(loaded)), out
