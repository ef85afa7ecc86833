"""Large drawings: the block view above draw.MAX_NODES layer nodes, a clear refusal
when even that is too large, decided before Graphviz starts (issue: a 100,000-layer
prototxt had drawn nothing after 400 s)."""

from __future__ import annotations

import subprocess
import time

from conftest import VENV_PY

from pynetbuilder import draw


def _draw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_PY), "-m", "pynetbuilder", "draw", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_huge_layer_view_becomes_the_block_view(tmp_path):
    out = tmp_path / "r.svg"
    done = _draw("resnet_imagenet:blocks=3,4,700,3", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (716 nodes, block view")
    assert "the layer view would have 2,850 nodes" in done.stdout
    svg = out.read_text()
    assert svg.count('class="node"') == 716 and "</svg>" in svg


def test_a_net_too_large_even_in_blocks_is_refused_quickly(tmp_path):
    layers = ['input: "data" input_shape { dim: 1 dim: 4 dim: 8 dim: 8 }']
    bottom = "data"
    for i in range(draw.MAX_NODES + 500):  # names share no block: every layer its own
        layers.append(f'layer {{ name: "l{i}" type: "ReLU" bottom: "{bottom}" top: "l{i}" }}')
        bottom = f"l{i}"
    path = tmp_path / "chain.prototxt"
    path.write_text("\n".join(layers) + "\n")
    out = tmp_path / "chain.svg"
    start = time.monotonic()
    done = _draw(str(path), "-o", str(out))
    assert time.monotonic() - start < 60
    assert done.returncode == 2
    assert done.stderr.startswith("pynetbuilder: error: the drawing would have 2,501 nodes")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [path]
