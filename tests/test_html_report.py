"""The HTML report, opened in a real headless Chromium (Debian's, installed by
tools/browser_setup.py): it loads without script errors, shows the totals, its table
sorts when a header is clicked, and it fetches nothing from anywhere.

Figures on the page are compared with real Caffe's net and torchvision's ResNet-50
parameter count (25,557,032); the count of blocks with the paper's 16 residual blocks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import ROOT

PYNETBUILDER = ROOT / ".venv" / "bin" / "pynetbuilder"
RESNET50 = ["resnet_imagenet", "--main_branch", "bottleneck", "--num_output_stage1", "256"]
NAMESPACES = {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PYNETBUILDER), *args], capture_output=True, text=True)


def chromium(tmp_path: Path, page: Path, *flags: str) -> subprocess.CompletedProcess:
    """Run headless Chromium on ``page`` with the console logged to stderr."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run `make test` or, as root, "
                    "`python tools/browser_setup.py`")
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
    cmd = [exe, "--headless", *sandbox, "--disable-gpu", "--no-first-run",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--enable-logging=stderr",
           "--v=0", *flags, page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def console_messages(proc: subprocess.CompletedProcess) -> list[str]:
    """What the page wrote to the JavaScript console (uncaught errors included)."""
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


class _Texts(HTMLParser):
    """Text of elements with an ``id``, and every table row of ``#layers``' body."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self._open: list[str | None] = []
        self.rows: list[list[str]] = []
        self._in_layers = self._in_body = False
        self.svgs: list[str] = []
        self.attrs: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.attrs[attrs["id"]] = attrs
        if tag == "html":
            self.attrs["html"] = attrs
        if tag == "table" and attrs.get("id") == "layers":
            self._in_layers = True
        if self._in_layers and tag == "tbody":
            self._in_body = True
        if self._in_body and tag == "tr":
            self.rows.append([])
        if self._in_body and tag == "td":
            self.rows[-1].append("")
        if tag == "svg":
            self.svgs.append("")
        if attrs.get("class") == "node" and tag == "g" and self.svgs:
            self.svgs[-1] += "N"
        if tag in ("br", "meta", "path", "polygon", "ellipse", "polyline"):
            return
        self._open.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        if tag == "table":
            self._in_layers = False
        if tag in ("br", "meta", "path", "polygon", "ellipse", "polyline"):
            return
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        for key in self._open:
            if key:
                self.by_id[key] = self.by_id.get(key, "") + data
        if self._in_body and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


def read_dom(text: str) -> _Texts:
    parser = _Texts()
    parser.feed(text)
    return parser


@pytest.fixture(scope="module")
def resnet50_page(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    proc = cli("report", *RESNET50, "-o", str(folder / "resnet50.html"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {folder / 'resnet50.html'} (229 layers")
    return folder / "resnet50.html"


@pytest.fixture(scope="module")
def resnet50_caffe(caffe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    assert cli("build", *RESNET50, "-o", str(folder)).returncode == 0
    return caffe.Net(str(folder / "deploy.prototxt"), caffe.TEST)


def test_page_is_self_contained(resnet50_page):
    page = resnet50_page.read_text()
    assert "<link" not in page and "@import" not in page and "url(" not in page
    for attr, value in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page):
        assert value.startswith("#"), (attr, value)
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= NAMESPACES


def test_page_runs_in_chromium_without_errors_and_shows_the_totals(
        resnet50_page, resnet50_caffe, tmp_path):
    proc = chromium(tmp_path, resnet50_page, "--dump-dom")
    assert console_messages(proc) == []
    dom = read_dom(proc.stdout)
    assert dom.attrs["html"]["data-script"] == "ok"  # the page's script ran to its end
    assert dom.by_id["total-params"] == "25,557,032"  # torchvision's ResNet-50
    net = resnet50_caffe
    layers = [n for n, layer in zip(net._layer_names, net.layers) if layer.type != "Split"]
    assert dom.by_id["total-layers"] == str(len(layers))
    macs = sum(_caffe_macs(net).values())
    assert dom.by_id["total-macs"] == f"{macs:,}"
    assert [row[1] for row in dom.rows] == layers  # the table: every layer, in order
    # drawings: the block view (16 residual blocks + data, conv1, pool1, pool5, fc, prob)
    # and the layer view (53 convolutions, 2 poolings, 16 additions, fc, input, softmax)
    assert [len(svg) for svg in dom.svgs] == [16 + 6, 53 + 2 + 16 + 1 + 1 + 1]
    # cost per block: the 16 blocks, conv1 and the classifier have a cost
    bars = re.findall(r'<span class="bar macs" style="width: ([\d.]+)%', proc.stdout)
    assert len(bars) == 16 + 2 and max(map(float, bars)) == 100.0


def _caffe_macs(net) -> dict[str, int]:
    """MACs per Convolution / InnerProduct layer from Caffe's blobs: weights x output HxW."""
    macs = {}
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type in ("Convolution", "InnerProduct"):
            out = net.blobs[net.top_names[name][0]].data.shape
            macs[name] = net.params[name][0].data.size * (out[2] * out[3] if len(out) == 4 else 1)
    return macs


CLICKS = """
<script>
(function () {
  var heads = document.querySelectorAll("#layers thead th");
  function column(i) {
    return Array.prototype.map.call(document.querySelectorAll("#layers tbody tr"),
      function (row) { return row.cells[i].getAttribute("data-v") || row.cells[i].textContent; });
  }
  var out = {};
  heads[6].click(); out.macs_first = column(1).slice(0, 3); out.macs = column(6);
  heads[6].click(); out.macs_again = column(1).slice(0, 2);
  heads[1].click(); out.names = column(1);
  heads[0].click(); heads[0].click(); out.index = column(0);
  var drawing = document.getElementById("drawing-blocks");
  var natural = drawing.querySelector("svg").getBoundingClientRect().height;
  drawing.querySelector("button.fit").click();
  out.fit = [natural, drawing.querySelector("svg").getBoundingClientRect().height,
             window.innerHeight, drawing.open];
  document.body.setAttribute("data-clicked", JSON.stringify(out));
}());
</script>
</body>"""


def test_clicking_a_header_sorts_the_table(resnet50_page, resnet50_caffe, tmp_path):
    import json

    page = tmp_path / "clicked.html"
    page.write_text(resnet50_page.read_text().replace("</body>", CLICKS))
    proc = chromium(tmp_path, page, "--dump-dom")
    assert console_messages(proc) == []
    found = re.search(r'data-clicked="([^"]*)"', proc.stdout)
    clicked = json.loads(found.group(1).replace("&quot;", '"'))
    macs = _caffe_macs(resnet50_caffe)
    assert clicked["macs_first"][0] == max(macs, key=macs.get) == "conv1"
    values = [int(v) for v in clicked["macs"]]
    assert values == sorted(values, reverse=True)  # largest first
    assert clicked["macs_again"] == ["data", "conv1_bn"]  # reversed: zeros in layer order
    assert clicked["names"] == sorted(clicked["names"]) and len(clicked["names"]) == len(values)
    assert clicked["index"] == [str(i) for i in range(1, len(values) + 1)]
    natural, fitted, window, still_open = clicked["fit"]
    assert natural > window >= fitted > 0.5 * window and still_open


def test_screenshot_shows_a_page(resnet50_page, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    chromium(tmp_path, resnet50_page, f"--screenshot={shot}", "--window-size=1280,1600",
             "--hide-scrollbars")
    with Image.open(shot) as image:
        assert image.size == (1280, 1600)
        grey = image.convert("L")
        assert len(grey.getcolors(256)) > 50  # text, cards, a drawing: not an empty page
        top = grey.crop((0, 0, 1280, 400))
        assert top.getextrema()[0] < 60  # dark text (the title and totals) at the top


def test_prototxt_report_lists_layers_it_could_not_analyse(tmp_path):
    proto = tmp_path / "odd.prototxt"
    proto.write_text(
        'name: "odd" input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        '  convolution_param { num_output: 4 kernel_size: 3 } }\n'
        'layer { name: "norm" type: "MyOwnNorm" bottom: "conv" top: "norm" }\n')
    out = tmp_path / "odd.html"
    assert cli("report", str(proto), "-o", str(out)).returncode == 0
    dom = read_dom(out.read_text())
    assert "norm" in dom.by_id["skipped"] and "MyOwnNorm" in dom.by_id["skipped"]
    assert dom.by_id["total-params"] == f"{4 * 3 * 3 * 3 + 4:,}"
    assert dom.by_id["total-macs"] == f"{4 * 6 * 6 * 3 * 3 * 3:,}"


BAD = [
    (["resnet", "-o", "{tmp}/out/r.svg"], "name it FILE.html"),
    (["nosuchmodel", "-o", "{tmp}/out/r.html"], "known models"),
    (["resnet", "--depth", "9", "-o", "{tmp}/out/r.html"], "depth"),
    (["resnet", "-o", "{tmp}/out/r.html", "--phase", "val"], "--phase"),
    (["resnet", "-o", "{tmp}/file/r.html"], "cannot write"),
    (["resnet"], "-o"),
]


@pytest.mark.parametrize("args,says", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, args, says):
    (tmp_path / "file").write_text("a file where a folder is needed\n")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = subprocess.run([sys.executable, "-m", "pynetbuilder", "report",
                           *(a.format(tmp=tmp_path) for a in args)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("pynetbuilder: error: ")
    assert says in proc.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_browser_setup_is_idempotent_and_fails_in_one_line(tmp_path):
    setup = ROOT / "tools" / "browser_setup.py"
    again = subprocess.run([sys.executable, str(setup)], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == again.stderr == ""  # all there already
    bare = subprocess.run([sys.executable, str(setup)], capture_output=True, text=True,
                          env={"PATH": str(tmp_path)})  # no dpkg-query, no apt-get
    assert bare.returncode == 1
    assert bare.stderr.count("\n") == 1 and bare.stderr.startswith("browser_setup: error: ")
