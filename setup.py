"""pynetbuilder: compose Caffe networks from legos and size them exactly."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithSchema(build_py):
    """Compile Caffe's caffe.proto into pynetbuilder/proto before packaging."""

    def run(self) -> None:
        if not (HERE / "pynetbuilder" / "proto" / "caffe_pb2.py").exists():
            sys.path.insert(0, str(HERE / "tools"))
            import caffe_setup

            caffe_setup.generate_schema()
        super().run()


setup(
    name="pynetbuilder",
    version="0.1.0",
    description="Compose Caffe networks from legos; exact params/MACs reports",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["pynetbuilder", "pynetbuilder.*"]),
    package_data={"pynetbuilder": ["templates/*", "py.typed", "targets/profiles/*.toml",
                                   "dialects/forks.proto"]},
    install_requires=[
        "protobuf>=5.29,<8",
        "numpy>=2.0",
        "graphviz>=0.20",
        "jinja2>=3.1",
        "lmdb>=1.4",  # writing Caffe's Data-layer databases
        "plyvel>=1.5",  # reading LevelDB sources (Data layer, backend: LEVELDB)
        "h5py>=3.10",  # writing HDF5Data files
        "pillow>=10",  # reading and resizing image folders
        "matplotlib>=3.8",  # plotting training logs
    ],
    extras_require={
        # `pynetbuilder data --digits` reads scikit-learn's bundled handwritten digits
        "digits": ["scikit-learn>=1.4"],
        # the PyTorch backend (pynetbuilder.pytorch; verify, convert, export)
        "torch": ["torch>=2.4,<3", "onnx>=1.16", "onnxruntime>=1.18", "safetensors>=0.4"],
    },
    entry_points={"console_scripts": ["pynetbuilder=pynetbuilder.commands:main"]},
    cmdclass={"build_py": BuildPyWithSchema},
)
