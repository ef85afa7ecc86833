"""Examples run and what they build is what Caffe builds."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT, assert_report_matches_caffe, caffe_net

from pynetbuilder.graph import prototxt_files


def test_cifar_example_runs_and_caffe_agrees(caffe, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "cifar_resnet.py"),
                           str(tmp_path / "out")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "total" in proc.stdout
    sys.path.insert(0, str(ROOT / "examples"))
    from cifar_resnet import cifar_resnet

    net = cifar_resnet()
    files = prototxt_files(net)
    assert (tmp_path / "out" / "deploy.prototxt").read_text() == files["deploy.prototxt"]
    deploy = caffe_net(caffe, files["deploy.prototxt"], "test", tmp_path)
    report = net.report()
    assert_report_matches_caffe(report, deploy)
    # 3 stages of 2 basic blocks, widths 16/32/64, projection shortcuts at the two
    # downsampling blocks: counted by hand from the architecture
    convs = 3 * 3 * 3 * 16 + 2 * 2 * 16 * 16 * 9 + (16 * 32 * 9 + 32 * 32 * 9 * 3 + 16 * 32) + (
        32 * 64 * 9 + 64 * 64 * 9 * 3 + 32 * 64)
    bn = 2 * (16 + 4 * 16 + 5 * 32 + 5 * 64)
    fc = 64 * 10 + 10
    assert report.totals.params == convs + bn + fc
