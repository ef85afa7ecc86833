"""The registry, the `pynetbuilder build` command and the ImageNet ResNet family."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, check_in_caffe, small_data

from pynetbuilder import models
from pynetbuilder.errors import UsageError

VENV_BIN = ROOT / ".venv" / "bin"


def test_list_names_every_family():
    assert "resnet_imagenet" in models.list()
    assert models.list() == sorted(models.list())


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"depth": 50}, "resnet_imagenet has no knob 'depth'; its knobs: main_branch"),
        ({"blocks": (3, 4, "6", 3)}, "knob blocks accepts a list of integers"),
        ({"main_branch": "wide"}, "knob main_branch accepts one of normal, bottleneck"),
        ({"num_output_stage1": 2.5}, "knob num_output_stage1 accepts an integer, got 2.5"),
        ({"fc_layers": 1}, "knob fc_layers accepts true or false, got 1"),
    ],
)
def test_bad_knobs_are_named(knobs, message):
    with pytest.raises(UsageError, match=message):
        models.build("resnet_imagenet", **knobs)


def test_unknown_family_lists_the_known_ones():
    with pytest.raises(Exception, match="unknown model 'resnet5'; known models: .*resnet_imagenet"):
        models.build("resnet5")


def run_cli(*args, cwd):
    return subprocess.run([str(VENV_BIN / "pynetbuilder"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_build_command_writes_prototxt_and_json(tmp_path):
    done = run_cli("build", "resnet_imagenet", "--num_output_stage1", "256", "-o", "out",
                   "--json", "report.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Number of params: 25.556032 Million" in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["params"], report["macs"]) == (25_557_032, 3_857_973_248)
    assert report["phase"] == "deploy" and len(report["layers"]) == 229
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "deploy.prototxt", "test.prototxt", "train.prototxt"]


def test_python_dash_m_is_the_same_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pynetbuilder", "build", "resnet_imagenet",
                           "--main_branch", "normal", "--num_output_stage1", "64",
                           "--blocks", "2", "2", "2", "2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Learnable params: 11,689,512" in done.stdout  # torchvision resnet18


@pytest.mark.parametrize(
    "args, message",
    [
        (["resnet_imagenet", "--depth", "3"], "has no knob or flag '--depth'"),
        (["resnet_imagenet", "--blocks", "3", "x"], "knob blocks accepts a list of integers"),
        (["resnet_imagenet", "--fc_layers", "maybe"], "knob fc_layers accepts true or false"),
        (["resnet_imagenet", "--main_branch", "wide"], "knob main_branch accepts one of"),
        (["vgg99"], "unknown model 'vgg99'"),
        ([], "build needs a model name first"),
    ],
)
def test_bad_command_line_one_line_exit_2_nothing_written(tmp_path, args, message):
    done = run_cli("build", *args, "-o", "out", "--json", "r.json", cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert list(tmp_path.iterdir()) == []


def test_switch_knobs_take_both_spellings(tmp_path):
    on = run_cli("build", "resnet_imagenet", "--fc_layers", cwd=tmp_path)
    off = run_cli("build", "resnet_imagenet", "--fc_layers", "--no-fc_layers", cwd=tmp_path)
    false = run_cli("build", "resnet_imagenet", "--fc_layers", "false", cwd=tmp_path)
    assert on.returncode == off.returncode == false.returncode == 0
    assert on.stdout != off.stdout and off.stdout == false.stdout


def test_list_command_shows_knobs_and_references(tmp_path):
    done = run_cli("list", cwd=tmp_path)
    assert done.returncode == 0
    assert "--num_output_stage1" in done.stdout and "reference ResNet-50" in done.stdout


# torchvision's published parameter counts (torchvision.models docs, "num_params"):
# ResNet-18 11,689,512; ResNet-34 21,797,672; ResNet-50 25,557,032;
# ResNet-101 44,549,160; ResNet-152 60,192,808.  Same architecture: 7x7/2 stem,
# 1x1-conv + BN projections where the shape changes, BN affine = our Scale with bias.
TORCHVISION_RESNET = {
    "ResNet-18": 11_689_512,
    "ResNet-34": 21_797_672,
    "ResNet-50": 25_557_032,
    "ResNet-101": 44_549_160,
    "ResNet-152": 60_192_808,
}


@pytest.mark.parametrize("label", sorted(TORCHVISION_RESNET))
def test_imagenet_resnets_match_torchvision(label):
    knobs = models.FAMILIES["resnet_imagenet"].references[label]
    assert models.build("resnet_imagenet", **knobs).report().totals.params == (
        TORCHVISION_RESNET[label])


def test_resnet18_builds_and_trains_in_caffe(caffe, image_lmdb, tmp_path):
    knobs = models.FAMILIES["resnet_imagenet"].references["ResNet-18"]
    net = models.build("resnet_imagenet", data=small_data(image_lmdb, "imagenet"), **knobs)
    check_in_caffe(caffe, net, tmp_path)


def test_readme_zoo_table_is_current():
    """README's model table is what tools/zoo_table.py computes from the registry now."""
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "zoo_table.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_every_reference_configuration_builds_from_the_command_line(tmp_path):
    """The knobs of each named configuration, typed as README's table shows them."""
    sys.path.insert(0, str(ROOT / "tools"))
    import zoo_table

    for family in models.FAMILIES:
        for label, knobs in family.references.items():
            args = zoo_table.knob_flags(knobs).split()
            expected = family.build(**knobs).report().totals.params
            done = run_cli("build", family.name, *args, cwd=tmp_path)
            assert done.returncode == 0, (label, done.stderr)
            assert f"Learnable params: {expected:,}" in done.stdout, label


REFERENCES = [(f.name, label) for f in models.FAMILIES for label in f.references]


@pytest.mark.parametrize("family, label", REFERENCES)
def test_every_reference_configuration_builds_in_caffe(caffe, cifar_lmdb, image_lmdb, tmp_path,
                                                       family, label):
    """Every named configuration, at full size: real Caffe builds its train, test and
    deploy nets and every blob and parameter blob has our shape.  (The family test
    files also run forward and backward, on these or reduced configurations.)"""
    f = models.FAMILIES[family]
    dbs = cifar_lmdb if f.dataset == "cifar" else image_lmdb
    net = f.build(data=small_data(dbs, f.dataset), **f.references[label])
    check_in_caffe(caffe, net, tmp_path, run=False)
