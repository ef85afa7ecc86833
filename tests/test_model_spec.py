"""Model specs parsed once by the library (pynetbuilder.models.spec) for every command:
both spellings, named configurations (NAME@CONFIG, --config), data settings, errors,
no flag abbreviations; ClassificationData an immutable value; the library never
imports the command layer."""

from __future__ import annotations

import ast
import dataclasses
import json

import pytest
from conftest import ROOT, run_command

from pynetbuilder import models
from pynetbuilder.errors import UsageError
from pynetbuilder.legos import ClassificationData
from pynetbuilder.models.spec import (
    DataSettings,
    ModelSpec,
    UnknownFlagError,
    build_model,
    model_name,
    parse_model_spec,
)

# torchvision's published parameter counts (torchvision.models docs, "num_params")
TORCHVISION = {"ResNet-18": 11_689_512, "ResNet-34": 21_797_672, "ResNet-50": 25_557_032,
               "ResNet-101": 44_549_160}


def params(spec) -> int:
    return build_model(spec).report("deploy").totals.params


# --- both spellings ---------------------------------------------------------------------


SAME = [
    (["resnet", "--depth", "20"], "resnet:depth=20"),
    (["resnet", "--depth=20"], "resnet:depth=20"),
    (["resnet_imagenet", "--blocks", "3", "4", "23", "3", "--num_output_stage1", "256",
      "--main_branch", "bottleneck"],
     "resnet_imagenet:blocks=3,4,23,3:num_output_stage1=256:main_branch=bottleneck"),
    (["resnet_imagenet", "--blocks=3,4,23,3", "--num_output_stage1", "256"],
     "resnet_imagenet:num_output_stage1=256:blocks=3,4,23,3"),
    (["vgg", "--no-use_bn"], "vgg:use_bn=false"),
    (["vgg", "--use_bn", "false"], "vgg:use_bn=0"),
    (["resnet_preact", "--preact_stage", "true", "false", "false"],
     "resnet_preact:preact_stage=true,false,false"),
]


@pytest.mark.parametrize("words, text", SAME, ids=[t for _, t in SAME])
def test_words_and_one_word_give_the_same_spec(words, text):
    a, b = parse_model_spec(words), parse_model_spec(text)
    assert a.family is b.family and dict(a.knobs) == dict(b.knobs)
    assert dict(a.knobs)  # something was parsed
    assert a.data == b.data == DataSettings()


def test_knob_values_have_the_registry_types():
    spec = parse_model_spec("resnet_imagenet:blocks=3,4,23,3:fc_layers=yes")
    assert spec.knobs == {"blocks": (3, 4, 23, 3), "fc_layers": True}
    words = parse_model_spec(["vgg", "--n_layers", "2", "2", "3", "3", "3", "--use_bn"])
    assert words.knobs == {"n_layers": (2, 2, 3, 3, 3), "use_bn": True}
    # the same as the registry's own keyword call
    assert params(words) == models.build("vgg", n_layers=(2, 2, 3, 3, 3),
                                         use_bn=True).report("deploy").totals.params


def test_a_text_with_flags_is_split_as_a_shell_would():
    spec = parse_model_spec("resnet_imagenet --blocks 3 4 23 3 --num_output_stage1 256")
    assert params(spec) == TORCHVISION["ResNet-101"]
    quoted = parse_model_spec("'wrn@WRN-28-10 (dropout 0.3)' --depth 16")
    assert quoted.config == "WRN-28-10 (dropout 0.3)"
    assert quoted.knobs == {"depth": 16, "widening_factor": 10, "drop_rate": 0.3}


def test_data_settings_in_words_and_in_one_word():
    spec = parse_model_spec(["resnet", "--batch_size", "8", "--crop_size", "28",
                             "--no-mirror", "--mean", "1,2,3", "--train_source", "a",
                             "--backend", "LEVELDB"])
    assert spec.data == DataSettings(train_source="a", backend="LEVELDB", batch_size=8,
                                     crop_size=28, mirror=False, mean_values=(1.0, 2.0, 3.0))
    data = spec.data_lego()
    assert (data.batch_size, data.crop_size, data.mirror, data.backend) == (8, 28, False,
                                                                          "LEVELDB")
    assert data.test_source == "data/cifar/test_lmdb"  # unset: the dataset's default
    assert data.test_batch_size == 100
    one = parse_model_spec("resnet:batch_size=8:mean=mean.binaryproto")
    assert (one.data.batch_size, one.data.mean_file, one.data.mean_values) == (
        8, "mean.binaryproto", None)
    lego = one.data_lego()
    assert lego.mean_file == "mean.binaryproto" and lego.mean_values is None
    train = build_model(["resnet", "--depth", "20", "--batch_size", "8"]).report("train")
    assert train.blob_shapes["data"] == (8, 3, 32, 32)


# --- named configurations ---------------------------------------------------------------


@pytest.mark.parametrize("label", sorted(TORCHVISION))
def test_a_named_configuration_builds_by_name(label):
    at = parse_model_spec(f"resnet_imagenet@{label}")
    flag = parse_model_spec(["resnet_imagenet", "--config", label])
    keyword = parse_model_spec("resnet_imagenet", config=label)
    assert at.config == flag.config == keyword.config == label
    assert dict(at.knobs) == dict(flag.knobs) == dict(keyword.knobs) == dict(
        models.FAMILIES["resnet_imagenet"].references[label])
    assert params(at) == TORCHVISION[label]


def test_knobs_given_with_a_configuration_change_it():
    spec = parse_model_spec(["resnet_imagenet@ResNet-50", "--blocks", "3", "4", "23", "3"])
    assert params(spec) == TORCHVISION["ResNet-101"]
    assert params("resnet_imagenet@resnet-34") == TORCHVISION["ResNet-34"]  # any case
    assert params("resnet_imagenet:config=ResNet-18") == TORCHVISION["ResNet-18"]


def test_named_configuration_on_the_command_line(capsys, tmp_path):
    expected = f"Learnable params: {TORCHVISION['ResNet-50']:,}"
    for args in (["build", "resnet_imagenet@ResNet-50"],
                 ["build", "resnet_imagenet", "--config", "ResNet-50"],
                 ["build", "resnet_imagenet", "--config=ResNet-50"]):
        code, out, err = run_command(*args, capsys=capsys)
        assert code == 0, err
        assert expected in out
    code, out, err = run_command("analyze", "resnet_imagenet", "--config", "ResNet-18",
                                 "--json", str(tmp_path / "r.json"), capsys=capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["params"] == TORCHVISION["ResNet-18"]
    code, out, err = run_command("compare", "resnet_imagenet@ResNet-18",
                                 "resnet_imagenet@ResNet-34", capsys=capsys)
    assert code == 0, err
    assert "11,689,512" in out and "21,797,672" in out
    code, out, _ = run_command("list", capsys=capsys)
    assert "reference ResNet-50: " in out and "(resnet_imagenet@ResNet-50)" in out


BAD_CONFIGS = [
    (["build", "resnet_imagenet@ResNet-5"],
     "resnet_imagenet has no configuration 'ResNet-5'; its configurations: ResNet-18, "
     "ResNet-34, ResNet-50, ResNet-101, ResNet-152"),
    (["build", "resnet_imagenet", "--config", "Nope"],
     "resnet_imagenet has no configuration 'Nope'; its configurations: ResNet-18"),
    (["analyze", "resnet_imagenet@x"], "has no configuration 'x'"),
    (["build", "resnet_imagenet@ResNet-18", "--config", "ResNet-34"],
     "two configurations given (ResNet-18, ResNet-34)"),
    (["build", "resnet_imagenet", "--config"], "--config needs a value"),
    (["build", "resnet_imagenet@"], "a configuration name follows '@'"),
    (["build", "densenet@DenseNet-121"], "its configurations: DenseNet-100 k=12, "),
]


@pytest.mark.parametrize("args, message", BAD_CONFIGS, ids=[" ".join(a) for a, _ in BAD_CONFIGS])
def test_an_unknown_configuration_is_one_line_exit_2(capsys, tmp_path, monkeypatch, args,
                                                     message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_command(*args, "--json", "r.json", capsys=capsys)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


# --- errors -----------------------------------------------------------------------------


BAD_SPECS = [
    (["resnet", "--dept", "20"], UnknownFlagError, "resnet has no knob '--dept'; its knobs: "
     "--depth"),
    (["resnet", "--depth"], UsageError, "resnet: --depth needs a value (an integer)"),
    (["resnet", "--depth", "20", "32"], UsageError, "--depth takes one value (an integer)"),
    (["resnet", "--depth", "x"], UsageError, "resnet: knob depth accepts an integer, got 'x'"),
    (["resnet", "20"], UsageError, "resnet: unexpected '20'"),
    (["resnet", "-o", "x"], UnknownFlagError, "resnet has no knob '-o'"),
    (["resnet", "--no-depth"], UnknownFlagError, "resnet has no knob '--no-depth'"),
    (["vgg", "--no-use_bn", "true"], UsageError, "--no-use_bn takes no value"),
    (["resnet", "--batch_size", "0"], UsageError, "--batch_size: expected a positive integer"),
    (["resnet", "--mean", "1,x"], UsageError, "--mean must be comma-separated numbers"),
    (["resnet", "--backend", "ROCKSDB"], UsageError, "--backend must be one of LMDB, LEVELDB"),
    ("resnet:depth", UsageError, "each knob after the model name is KNOB=VALUE"),
    ("resnet:dept=20", UnknownFlagError, "resnet has no knob 'dept'"),
    ("resnet_imagenet:blocks=3,x", UsageError, "knob blocks accepts a list of integers"),
    ("resnet_imagenet:main_branch=wide", UsageError, "knob main_branch accepts one of normal"),
    ("resnet5", UsageError, "unknown model 'resnet5'; known models: "),
    ([], UsageError, "a model spec starts with a model name"),
    (["--depth", "20"], UsageError, "a model spec starts with a model name"),
]


@pytest.mark.parametrize("spec, kind, message", BAD_SPECS, ids=[str(s) for s, _, _ in BAD_SPECS])
def test_bad_specs_name_what_is_wrong(spec, kind, message):
    with pytest.raises(kind) as err:
        parse_model_spec(spec)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_range_errors_come_from_the_family_when_built():
    spec = parse_model_spec("resnet:depth=21")  # an integer, so parsed
    with pytest.raises(UsageError, match="knob depth accepts 6n\\+2"):
        build_model(spec)


def test_model_name_of_a_first_word():
    assert [model_name(w) for w in ("resnet", "resnet:depth=2", "a@b:c=d", "x@y")] == [
        "resnet", "resnet", "a", "x"]


# --- no abbreviations -------------------------------------------------------------------


ABBREVIATED = [
    (["build", "resnet", "--dept", "20"], "resnet has no knob or flag '--dept'"),
    (["build", "resnet", "--js", "r.json"], "resnet has no knob or flag '--js'"),
    (["build", "resnet", "--batch", "8"], "resnet has no knob or flag '--batch'"),
    (["analyze", "resnet", "--dept", "20"], "resnet has no knob '--dept'"),
    (["draw", "resnet", "--dept", "20", "-o", "x.svg"], "resnet has no knob '--dept'"),
    (["report", "resnet", "--dept", "20", "-o", "x.html"], "resnet has no knob '--dept'"),
    (["time", "resnet", "--dept", "20"], "resnet has no knob or flag '--dept'"),
    (["time", "resnet", "--iter", "2"], "resnet has no knob or flag '--iter'"),
    (["train", "resnet", "--dept", "20", "-o", "run"], "resnet has no knob or flag '--dept'"),
    (["train", "resnet", "--epoch", "2", "-o", "run"], "resnet has no knob or flag '--epoch'"),
    (["compare", "resnet", "resnet", "--ph", "train"], "unrecognized arguments: --ph"),
    (["data", "--digit", "-o", "out"], "unrecognized arguments: --digit"),
    (["plot", "x.log", "--output", "out"], "unrecognized arguments: --output"),
]


@pytest.mark.parametrize("args, message", ABBREVIATED, ids=[" ".join(a) for a, _ in ABBREVIATED])
def test_no_flag_is_taken_for_an_abbreviation(capsys, tmp_path, monkeypatch, args, message):
    """argparse would take --dept for --depth (a unique prefix): refused everywhere."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_command(*args, capsys=capsys)
    assert code == 2, (out, err)
    assert message in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_every_parser_refuses_abbreviations():
    """Every argparse parser of the package is the project's Parser (allow_abbrev off)
    or says allow_abbrev=False itself."""
    import argparse

    from pynetbuilder.cli import Parser

    assert Parser(prog="x").allow_abbrev is False
    for path in (ROOT / "pynetbuilder").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == \
                    "ArgumentParser":
                assert any(k.arg == "allow_abbrev" for k in node.keywords), path
    assert argparse.ArgumentParser(allow_abbrev=False).allow_abbrev is False


# --- ClassificationData -----------------------------------------------------------------


def test_classification_data_is_an_immutable_value():
    data = ClassificationData("a", "b", mean_values=[1, 2, 3])
    assert data.mean_values == (1.0, 2.0, 3.0)  # kept as a tuple
    with pytest.raises(dataclasses.FrozenInstanceError):
        data.crop_size = 28
    smaller = dataclasses.replace(data, crop_size=28)
    assert (smaller.crop_size, data.crop_size) == (28, 224)
    assert smaller == ClassificationData("a", "b", crop_size=28, mean_values=(1, 2, 3))
    assert hash(smaller) == hash(ClassificationData("a", "b", crop_size=28,
                                                    mean_values=(1, 2, 3)))
    with pytest.raises(UsageError, match="crop_size must be a positive integer"):
        dataclasses.replace(data, crop_size=0)  # the checks run again
    with pytest.raises(UsageError, match=r"mean values: 1-channel data needs 1 number, got 3"):
        dataclasses.replace(data, channels=1)


def test_a_spec_is_a_value_too():
    spec = parse_model_spec("resnet:depth=20")
    assert isinstance(spec, ModelSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.config = "x"
    with pytest.raises(TypeError):
        spec.knobs["depth"] = 32  # read-only mapping


# --- layering ---------------------------------------------------------------------------


def test_the_library_never_imports_the_commands():
    """Outside pynetbuilder/commands/ no module imports pynetbuilder.commands, except
    ``__main__.py``, the ``python -m pynetbuilder`` entry point of the commands."""
    offenders = []
    for path in (ROOT / "pynetbuilder").rglob("*.py"):
        rel = path.relative_to(ROOT / "pynetbuilder")
        if rel.parts[0] == "commands" or rel.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            offenders += [f"{rel}: {n}" for n in names
                          if n == "pynetbuilder.commands" or n.startswith("pynetbuilder.commands.")]
    assert offenders == []


def test_the_family_table_names_every_module_family_and_nothing_else():
    """models.MODULES (read so commands import only the family they build) agrees with
    the FAMILIES list of every module of the package."""
    import importlib
    import pkgutil

    import pynetbuilder.models as models

    found = {}
    for info in pkgutil.iter_modules(models.__path__):
        module = importlib.import_module(f"pynetbuilder.models.{info.name}")
        for family in getattr(module, "FAMILIES", []):
            found[family.name] = info.name
    assert dict(models.MODULES) == found
    assert [f.name for f in models.FAMILIES] == sorted(found)


def test_building_one_family_imports_no_other():
    import subprocess
    import sys

    code = ("import sys; from pynetbuilder.models.spec import build_model; "
            "build_model('resnet --depth 20'); "
            "print(sorted(m for m in sys.modules if m.startswith('pynetbuilder.models.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = eval(out)  # noqa: S307 - a list literal we printed
    assert "pynetbuilder.models.resnet_cifar" in loaded
    assert not {"pynetbuilder.models.tresnet", "pynetbuilder.models.densenet"} & set(loaded)
