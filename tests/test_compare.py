"""Comparing nets (issue 6, item 3): ``pynetbuilder compare A B [C ...]``.

Totals side by side with each net's difference from the first, then the blocks (or
stages) whose params or MACs differ.  The published ResNet prototxt
(``../shared/fixtures/prototxt``) and registry models are compared; expected
differences come from real Caffe's parameter blobs or from the reference counts.
"""

from __future__ import annotations

import json

import pytest
from conftest import SHARED, run_command

from pynetbuilder.commands.compare import AlignedRow, align, stage_of
from pynetbuilder.inspect import BlockTotals

FIXTURES = SHARED / "fixtures" / "prototxt"
R50 = str(FIXTURES / "ResNet-50-deploy.prototxt")
R101 = str(FIXTURES / "ResNet-101-deploy.prototxt")
OURS_R50 = "resnet_imagenet:num_output_stage1=256"


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    return run_command("compare", *args, capsys=capsys)


def totals_lines(out: str) -> dict[str, list[str]]:
    """The totals table as ``figure -> [cells]``."""
    rows = {}
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in ("params", "MACs", "activations", "layers"):
            rows.setdefault(words[0], words[1:])
    return rows


def group_rows(out: str) -> list[list[str]]:
    """The rows of the second table (groups), split into cells."""
    tail = out.split("(matched by name, else in order):\n")[1]
    return [line.split() for line in tail.splitlines()[2:]]


def test_published_resnet50_against_ours(capsys, tmp_path):
    code, out, err = run_cli(R50, OURS_R50, "--json", str(tmp_path / "c.json"),
                             capsys=capsys)
    assert code == 0, err
    rows = totals_lines(out)
    # published: conv1 has a 64-value bias; ours declares its input with an Input layer
    # (one more layer, its 3x224x224 blob among the activations)
    assert rows["params"] == ["25,557,096", "25,557,032", "-64"]
    assert rows["MACs"] == ["3,857,973,248", "3,857,973,248", "0"]
    assert rows["activations"] == ["46,567,376", "46,717,904", f"+{3 * 224 * 224:,}"]
    assert rows["layers"] == ["228", "229", "+1"]
    assert [r[:5] for r in group_rows(out)] == [["conv1", "conv1", "9,600", "9,536", "-64"]]
    data = json.loads((tmp_path / "c.json").read_text())
    pairs = [[g and g["name"] for g in row] for row in data["groups"]]
    # res2a..res5c pair with stage1_block1..stage4_block3 in order, the rest by name
    residual = [p for p in pairs if p[0] and p[0].startswith("res")]
    assert residual[0] == ["res2a", "stage1_block1"] and residual[-1] == ["res5c", "stage4_block3"]
    assert len(residual) == 16
    assert ["fc1000", "fc"] in pairs and ["pool5", "pool5"] in pairs
    assert [n["params"] for n in data["nets"]] == [25_557_096, 25_557_032]


def test_resnet50_vs_101_by_stage_differs_by_seventeen_res4_blocks(caffe, capsys):
    code, out, err = run_cli(R50, R101, "--by", "stage", capsys=capsys)
    assert code == 0, err
    net = caffe.Net(R101, caffe.TEST)
    types = {name: layer.type for name, layer in zip(net._layer_names, net.layers)}
    # one res4 identity block of the published ResNet-101, from Caffe's blobs
    block = sum(b.data.size for name, blobs in net.params.items()
                if "4b1_branch2" in name and types[name] != "BatchNorm" for b in blobs)
    assert block == 1_117_184
    rows = group_rows(out)
    # params B-A: blocks b6..b22 of ResNet-101; the published ResNet-50's conv1 alone
    # has a bias (64); every other stage is identical
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("conv1", "conv1", "-64"), ("res4", "res4", f"+{17 * block:,}")]


def test_three_models_side_by_side(capsys):
    r18 = "resnet_imagenet:main_branch=normal:num_output_stage1=64:blocks=2,2,2,2"
    r34 = "resnet_imagenet:main_branch=normal:num_output_stage1=64:blocks=3,4,6,3"
    code, out, err = run_cli(r18, r34, OURS_R50, "--by", "stage", capsys=capsys)
    assert code == 0, err
    # torchvision's resnet18 / resnet34 / resnet50 parameter counts
    params = [11_689_512, 21_797_672, 25_557_032]
    assert totals_lines(out)["params"] == [
        *(f"{p:,}" for p in params), f"+{params[1] - params[0]:,}", f"+{params[2] - params[0]:,}"]
    assert out.splitlines()[0].startswith(f"A: {r18}  (resnet_normal_64_2_2_2_2, deploy)")


def test_same_net_twice_has_no_differing_blocks(capsys):
    code, out, err = run_cli(R50, R50, capsys=capsys)
    assert code == 0, err
    assert "every block has the same params and MACs in all nets" in out
    code, out, err = run_cli(R50, R50, "--all", capsys=capsys)
    rows = group_rows(out)
    assert len(rows) == 21 and ["res5c", "res5c"] in [r[:2] for r in rows]


def test_train_phase_of_models(capsys):
    code, out, err = run_cli("resnet:depth=20", "resnet:depth=32", "--phase", "train",
                             capsys=capsys)
    assert code == 0, err
    assert "(resnet20_basic, train)" in out and "(resnet32_basic, train)" in out


def bt(name: str, params: int = 1) -> BlockTotals:
    return BlockTotals(name, 1, params, 0, 0)


def names(rows: list[AlignedRow]) -> list[list[str | None]]:
    return [[g.block if g else None for g in row.groups] for row in rows]


def test_align_matches_names_then_order():
    a = [bt("conv1"), bt("res2a"), bt("res2b"), bt("pool5"), bt("fc1000")]
    b = [bt("data"), bt("conv1"), bt("s1b1"), bt("s1b2"), bt("s1b3"), bt("pool5"), bt("fc")]
    assert names(align([a, b])) == [
        [None, "data"], ["conv1", "conv1"], ["res2a", "s1b1"], ["res2b", "s1b2"],
        [None, "s1b3"], ["pool5", "pool5"], ["fc1000", "fc"]]
    rows = align([a, b])
    assert rows[0].differs() and not rows[1].differs()
    assert not AlignedRow([None, BlockTotals("data", 1, 0, 0, 150_528)]).differs()
    assert align([a, [bt("conv1"), bt("res2a", 2)]])[1].differs()


@pytest.mark.parametrize("block,stage", [
    ("stage2_block3", "stage2"), ("res4b22", "res4"), ("res2a", "res2"),
    ("inception_3a", "inception_3"), ("conv1", "conv1"), ("pool5", "pool5"),
])
def test_stage_of_a_block(block, stage):
    assert stage_of(block) == stage


BAD = [
    ([R50], "compare needs at least two nets, got 1"),
    ([R50, "nothere.prototxt"], "nothere.prototxt: no such file"),
    ([R50, "resnet:depth"], "each knob after the model name is KNOB=VALUE"),
    ([R50, "resnet:depth=21"], "knob depth accepts 6n+2"),
    ([R50, "alexnetz"], "'alexnetz' is neither a prototxt file nor a model"),
    ([R50, R101, "--by", "layer"], "invalid choice: 'layer'"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_input_one_line_exit_2_nothing_written(args, message, capsys, tmp_path):
    target = tmp_path / "out" / "c.json"
    code, out, err = run_cli(*args, "--json", str(target), capsys=capsys)
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_bad_prototxt_among_good_ones_names_file_line_and_column(capsys, tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: Convolution\n}\n')
    code, out, err = run_cli(R50, str(bad), capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith(f"pynetbuilder: error: {bad}:4:") and "line 4, column" in err
