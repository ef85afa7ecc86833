"""Drawings: the SVG Graphviz draws is read back and compared with the net real Caffe builds.

Caffe is the oracle for the structure: one node per layer that is neither a Split
Caffe inserted nor an in-place layer, the in-place layers listed in the node of the
blob they overwrite, one edge per (producer, reader) pair of blobs (through Caffe's
Splits), and each node's shape line equal to Caffe's blob shapes.  Architecture facts
from the ResNet paper (53 convolutions and 16 residual blocks in ResNet-50, blocks
3-8-36-3 in ResNet-152) are the independent count of nodes and clusters.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED

from pynetbuilder import draw
from pynetbuilder.commands import main as pynetbuilder
from pynetbuilder.inspect import load

FIXTURES = SHARED / "fixtures" / "prototxt"
R50 = FIXTURES / "ResNet-50-deploy.prototxt"
R152 = FIXTURES / "ResNet-152-deploy.prototxt"
SVG_NS = "{http://www.w3.org/2000/svg}"
RESNET50 = ["resnet_imagenet", "--main_branch", "bottleneck", "--num_output_stage1", "256"]
FOLDED_SHORT = {"BatchNorm": "BN"}

# ---------------------------------------------------------------- reading the SVG back


def _bbox(element: ET.Element) -> tuple[float, float, float, float]:
    """Bounding box of a node's or cluster's outline (path ``d`` or polygon ``points``)."""
    shape = element.find(f".//{SVG_NS}path")
    if shape is None:
        shape = element.find(f".//{SVG_NS}polygon")
    text = shape.get("d") or shape.get("points")
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def parse_svg(svg: str | bytes) -> dict:
    """Nodes (by their ``id``: ``layer:NAME``, ``input:BLOB``, ``block:NAME``) with their
    text lines and box, edges as (id, id), clusters as (label, box)."""
    root = ET.fromstring(svg)
    nodes, by_title, clusters, edge_titles = {}, {}, [], []
    for g in root.iter(f"{SVG_NS}g"):
        kind = g.get("class")
        if kind == "node":
            texts = ["".join(t.itertext()) for t in g.iter(f"{SVG_NS}text")]
            nodes[g.get("id")] = {"texts": texts, "box": _bbox(g)}
            by_title[g.find(f"{SVG_NS}title").text] = g.get("id")
        elif kind == "cluster":
            label = "".join(g.find(f"{SVG_NS}text").itertext())
            clusters.append((label, _bbox(g)))
        elif kind == "edge":
            edge_titles.append(g.find(f"{SVG_NS}title").text)
    edges = [tuple(by_title[end] for end in title.split("->")) for title in edge_titles]
    return {"nodes": nodes, "edges": edges, "clusters": clusters}


def inside(inner: tuple, outer: tuple) -> bool:
    return (outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2]
            and inner[3] <= outer[3])


# ---------------------------------------------------------------- what Caffe built


def caffe_structure(net) -> dict:
    """Nodes and edges of a ``caffe.Net`` the way the drawing should show them."""
    split_source = {}
    writer = {}  # blob -> node key of the layer that wrote it (not in place)
    nodes, edges = {}, set()
    for name, layer in zip(net._layer_names, net.layers):
        bottoms, tops = list(net.bottom_names[name]), list(net.top_names[name])
        if layer.type == "Split":
            for top in tops:
                split_source[top] = split_source.get(bottoms[0], bottoms[0])
            continue
        bottoms = [split_source.get(b, b) for b in bottoms]
        if tops and tops == bottoms[: len(tops)]:  # in place: folded into the writer
            nodes[writer[tops[0]]]["folded"].append(layer.type)
            continue
        # Caffe turns a prototxt's ``input:`` header into an Input layer named "input"
        header = layer.type == "Input" and name == "input" and tops[0] in net.inputs
        key = f"input:{tops[0]}" if header else f"layer:{name}"
        nodes[key] = {"type": layer.type, "folded": [], "tops": tops,
                      "params": [tuple(b.data.shape) for b in net.params.get(name, [])]}
        edges.update((writer[b], key) for b in dict.fromkeys(bottoms))
        for top in tops:
            writer[top] = key
    for node in nodes.values():
        node["shape"] = ", ".join("x".join(map(str, net.blobs[t].data.shape)) or "scalar"
                                  for t in node["tops"])
    return {"nodes": nodes, "edges": edges}


def assert_drawing_matches_caffe(svg: bytes, net) -> dict:
    """Every node, folded layer, shape and edge of the drawing is what Caffe built."""
    drawn, built = parse_svg(svg), caffe_structure(net)
    assert set(drawn["nodes"]) == set(built["nodes"])
    assert len(drawn["edges"]) == len(set(drawn["edges"]))
    assert set(drawn["edges"]) == built["edges"]
    for key, node in built["nodes"].items():
        texts = drawn["nodes"][key]["texts"]
        assert texts[1].startswith(node["type"]), (key, texts)
        assert node["shape"] in texts, (key, texts, node["shape"])
        folded = " ".join(f"+ {FOLDED_SHORT.get(t, t)}" for t in node["folded"])
        if folded:
            assert re.sub(r" [\d.]+", "", texts[2]) == folded, (key, texts)
        else:
            assert not any(t.startswith("+ ") for t in texts), (key, texts)
        if node["type"] == "Convolution":  # kernel and outputs from the weight blob
            out, _, kh, kw = node["params"][0]
            assert f"{kh}x{kw} " in texts[1] and texts[1].endswith(f"\u2192 {out}"), texts
    return drawn


@pytest.fixture(scope="module")
def r50_fixture_net(caffe):
    return caffe.Net(str(R50), caffe.TEST)


def caffe_deploy(caffe, net_arg, tmp_path, phase="deploy"):
    from pynetbuilder.schema import to_text

    path = tmp_path / f"{phase}.prototxt"
    path.write_text(to_text(load(net_arg, phase=phase).net))
    return caffe.Net(str(path), caffe.TRAIN if phase == "train" else caffe.TEST)


def run_cli(args: list[str]) -> int:
    """``pynetbuilder ARGS`` in this process; its exit status (argparse exits itself)."""
    try:
        return pynetbuilder(args)
    except SystemExit as exc:
        return exc.code


def draw_cli(tmp_path: Path, *args: str, name: str = "net.svg") -> bytes:
    out = tmp_path / name
    assert pynetbuilder(["draw", *args, "-o", str(out)]) == 0
    return out.read_bytes()


# ---------------------------------------------------------------- layer view


def test_resnet50_prototxt_layer_view_is_what_caffe_builds(r50_fixture_net, tmp_path, capsys):
    svg = draw_cli(tmp_path, str(R50))
    drawn = assert_drawing_matches_caffe(svg, r50_fixture_net)
    # the paper's ResNet-50: 53 convolutions (49 + 4 projections), 2 poolings,
    # 16 residual additions, 1 fully connected layer, input and softmax
    types = Counter(texts["texts"][1].split()[0] for texts in drawn["nodes"].values())
    assert types == {"Convolution": 53, "Pooling": 2, "Eltwise": 16, "InnerProduct": 1,
                     "Input": 1, "Softmax": 1}
    assert len(drawn["edges"]) == 53 + 2 + 2 * 16 + 1 + 1
    conv1 = drawn["nodes"]["layer:conv1"]["texts"]
    assert conv1 == ["conv1", "Convolution 7x7 s2 p3 \u2192 64", "+ BN + Scale + ReLU",
                     "1x64x112x112"]
    # names derive 16 clusters, one per residual block; the fixture names each block's
    # addition after the block (res2a ... res5c), so Caffe's Eltwise names are the labels
    labels = [label for label, _ in drawn["clusters"]]
    eltwise = [n for n, layer in zip(r50_fixture_net._layer_names, r50_fixture_net.layers)
               if layer.type == "Eltwise"]
    assert labels == eltwise
    for label, box in drawn["clusters"]:
        members = [k for k in drawn["nodes"] if k.startswith(f"layer:{label}")]
        assert len(members) in (4, 5)  # 3 convolutions (+ projection) and the addition
        assert all(inside(drawn["nodes"][k]["box"], box) for k in members), label
    assert "74 nodes in 16 blocks" in capsys.readouterr().out


def test_lego_resnet50_layer_view_is_what_caffe_builds(caffe, tmp_path):
    svg = draw_cli(tmp_path, *RESNET50)
    net = caffe_deploy(caffe, "resnet_imagenet:main_branch=bottleneck:num_output_stage1=256",
                       tmp_path)
    drawn = assert_drawing_matches_caffe(svg, net)
    assert len(drawn["nodes"]) == 1 + 53 + 2 + 16 + 1 + 1
    # lego blocks are the clusters: 3-4-6-3 bottleneck blocks, each node in its own
    blocks = [f"stage{s}_block{b}" for s, n in enumerate((3, 4, 6, 3), 1)
              for b in range(1, n + 1)]
    assert [label for label, _ in drawn["clusters"]] == blocks
    for label, box in drawn["clusters"]:
        members = [k for k in drawn["nodes"] if k.startswith(f"layer:{label}_")]
        assert len(members) in (4, 5)
        assert all(inside(drawn["nodes"][k]["box"], box) for k in members), label
        others = [k for k in drawn["nodes"] if not k.startswith(f"layer:{label}_")]
        assert not any(inside(drawn["nodes"][k]["box"], box) for k in others), label


@pytest.mark.parametrize("phase", ["train", "test"])
def test_phase_draws_that_phases_net(caffe, cifar_lmdb, tmp_path, phase):
    data = ["--train_source", str(cifar_lmdb[0]), "--test_source", str(cifar_lmdb[1]),
            "--batch_size", "2", "--test_batch_size", "2"]
    svg = draw_cli(tmp_path, "resnet", "--depth", "8", *data, "--phase", phase.upper())
    assert pynetbuilder(["build", "resnet", "--depth", "8", *data, "-o", str(tmp_path)]) == 0
    net = caffe.Net(str(tmp_path / "train.prototxt"),
                    caffe.TRAIN if phase == "train" else caffe.TEST)
    drawn = assert_drawing_matches_caffe(svg, net)
    types = Counter(t["texts"][1].split()[0] for t in drawn["nodes"].values())
    assert types["Data"] == 1 and types["SoftmaxWithLoss"] == 1
    accuracy = sum(layer.type == "Accuracy" for layer in net.layers)
    assert types["Accuracy"] == accuracy and (accuracy > 0) == (phase == "test")


# ---------------------------------------------------------------- block view


def _caffe_costs(net, prefix: str) -> tuple[int, int]:
    """Learnable params and MACs of the layers named ``prefix...``, from Caffe's blobs:
    every parameter blob but BatchNorm's statistics; MACs = weights x output H x W."""
    params = macs = 0
    for name, layer in zip(net._layer_names, net.layers):
        if not name.startswith(prefix) or name not in net.params:
            continue
        blobs = net.params[name]
        if layer.type != "BatchNorm":
            params += sum(b.data.size for b in blobs)
        if layer.type in ("Convolution", "InnerProduct"):
            out = net.blobs[net.top_names[name][0]].data.shape
            spatial = out[2] * out[3] if len(out) == 4 else 1
            macs += blobs[0].data.size * spatial
    return params, macs


def test_resnet50_block_view_one_node_per_block_with_caffes_costs(caffe, tmp_path):
    spec = "resnet_imagenet:main_branch=bottleneck:num_output_stage1=256"
    svg = draw_cli(tmp_path, spec, "--level", "block")
    drawn = parse_svg(svg)
    blocks = [f"stage{s}_block{b}" for s, n in enumerate((3, 4, 6, 3), 1)
              for b in range(1, n + 1)]
    chain = ["layer:data", "layer:conv1", "layer:pool1", *(f"block:{b}" for b in blocks),
             "layer:pool5", "layer:fc_classifier", "layer:prob"]
    assert set(drawn["nodes"]) == set(chain) and not drawn["clusters"]
    assert sorted(drawn["edges"]) == sorted(zip(chain, chain[1:]))
    # each block node's figures equal Caffe's blobs of the layers named after the block
    net = caffe_deploy(caffe, spec, tmp_path)
    inspected = load(spec)
    d = draw.diagram(inspected.net, inspected.report, "block")
    by_name = {n.name: n for n in d.nodes}
    for block in blocks:
        assert (by_name[block].params, by_name[block].macs) == _caffe_costs(net, block + "_")
        label = drawn["nodes"][f"block:{block}"]["texts"]
        assert label[1] == (f"{len(by_name[block].layers)} layers \u00b7 "
                            f"{draw.human(by_name[block].params)} params \u00b7 "
                            f"{draw.human(by_name[block].macs)} MACs")
    assert by_name["conv1"].params == 3 * 7 * 7 * 64 + 2 * 64  # conv + BN's Scale
    # the totals are torchvision's ResNet-50: 25,557,032 params
    assert sum(n.params for n in d.nodes) == 25_557_032
    assert sum(n.macs for n in d.nodes) == _caffe_costs(net, "")[1]


def test_resnet152_block_view_fits(tmp_path):
    drawn = parse_svg(draw_cli(tmp_path, str(R152), "--level", "block"))
    # blocks 3-8-36-3 of the paper, named res2a ... res5c in this prototxt
    assert sum(k.startswith("block:res") for k in drawn["nodes"]) == 3 + 8 + 36 + 3
    assert set(k for k in drawn["nodes"] if not k.startswith("block:")) == {
        "input:data", "layer:conv1", "layer:pool1", "layer:pool5", "layer:fc1000",
        "layer:prob"}
    assert len(drawn["edges"]) == len(drawn["nodes"]) - 1  # a chain


# ---------------------------------------------------------------- options and formats


def _spans(drawn: dict) -> tuple[float, float]:
    xs = [(n["box"][0] + n["box"][2]) / 2 for n in drawn["nodes"].values()]
    ys = [(n["box"][1] + n["box"][3]) / 2 for n in drawn["nodes"].values()]
    return max(xs) - min(xs), max(ys) - min(ys)


def test_rankdir_turns_the_drawing(tmp_path):
    args = ["resnet_imagenet", "--blocks", "1", "1", "1", "1", "--level", "block"]
    tb = parse_svg(draw_cli(tmp_path, *args, name="tb.svg"))
    lr = parse_svg(draw_cli(tmp_path, *args, "--rankdir", "lr", name="lr.svg"))
    (tb_x, tb_y), (lr_x, lr_y) = _spans(tb), _spans(lr)
    assert tb_x < 1 and tb_y > 300  # a chain straight down
    assert lr_y < 1 and lr_x > 300  # and straight across
    order = ["layer:data", "layer:conv1", "layer:pool1", "block:stage1_block1"]
    assert [lr["nodes"][k]["box"][0] for k in order] == sorted(
        lr["nodes"][k]["box"][0] for k in order)


def test_png_pdf_and_dot_outputs(tmp_path):
    from PIL import Image

    args = ["resnet", "--depth", "8", "--level", "block"]
    png = tmp_path / "net.png"
    draw_cli(tmp_path, *args, name="net.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[1] > image.size[0] > 50
        assert len(image.convert("L").getcolors(1 << 16)) > 10  # not a blank page
    assert draw_cli(tmp_path, *args, name="net.pdf").startswith(b"%PDF-")
    source = draw_cli(tmp_path, *args, name="net.dot").decode()
    assert source.startswith("digraph") and 'id="block:stage1_block1"' in source


def test_prototxt_without_block_information_derives_the_same_clusters():
    from pynetbuilder.report import analyze
    from pynetbuilder.schema import parse_net

    net = parse_net(R50.read_text())
    plain = draw.layer_diagram(net, analyze(net))
    loaded = load(str(R50))
    assert [n.group for n in plain.nodes] == [
        n.group for n in draw.layer_diagram(loaded.net, loaded.report).nodes]
    assert len(plain.groups()) == 16


def test_layer_without_a_shape_rule_is_drawn_dashed(tmp_path):
    proto = tmp_path / "odd.prototxt"
    proto.write_text(
        'name: "odd" input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        '  convolution_param { num_output: 4 kernel_size: 3 } }\n'
        'layer { name: "norm" type: "MyOwnNorm" bottom: "conv" top: "norm" }\n'
        'layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool"\n'
        '  pooling_param { pool: AVE global_pooling: true } }\n')
    svg = draw_cli(tmp_path, str(proto))
    drawn = parse_svg(svg)
    assert drawn["nodes"]["layer:conv"]["texts"][-1] == "1x4x6x6"
    assert drawn["nodes"]["layer:norm"]["texts"][-1] == "not analysed"
    assert drawn["nodes"]["layer:pool"]["texts"][-1] == "not analysed"
    assert set(drawn["edges"]) == {("input:data", "layer:conv"), ("layer:conv", "layer:norm"),
                                   ("layer:norm", "layer:pool")}
    assert b'stroke-dasharray' in svg


# ---------------------------------------------------------------- bad input


BAD = [
    (["resnet", "-o", "{out}.jpg"], ".svg, .png, .pdf or .dot"),
    (["resnet", "-o", "{out}.svg", "--level", "stage"], "--level"),
    (["resnet", "-o", "{out}.svg", "--rankdir", "XY"], "--rankdir"),
    (["resnet", "-o", "{out}.svg", "--phase", "val"], "--phase"),
    (["resnet", "--depth", "9", "-o", "{out}.svg"], "depth"),
    (["resnet", "--bogus", "1", "-o", "{out}.svg"], "--bogus"),
    (["nosuchmodel", "-o", "{out}.svg"], "known models"),
    ([str(R50), "--depth", "8", "-o", "{out}.svg"], "registry models only"),
    (["missing.prototxt", "-o", "{out}.svg"], "no such file"),
    (["resnet"], "-o"),
    (["-o", "{out}.svg"], "a net comes first"),
]


@pytest.mark.parametrize("args,says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, args, says):
    out = tmp_path / "sub" / "net"
    code = run_cli(["draw", *(a.format(out=out) for a in args)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pynetbuilder: error: ") and says in err
    assert not (tmp_path / "sub").exists()


def test_missing_graphviz_is_one_line_and_nothing_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program on it
    code = pynetbuilder(["draw", "resnet", "-o", str(tmp_path / "out" / "net.svg")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "apt-get install graphviz" in err
    assert not (tmp_path / "out").exists()
