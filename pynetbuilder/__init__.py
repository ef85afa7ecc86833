"""pynetbuilder: compose Caffe networks from legos and size them exactly.

    from pynetbuilder import Net, legos
    net = Net("tiny")
    ...
    net.to_proto("deploy")     # a caffe_pb2.NetParameter
    net.report()               # per-layer shapes, params, MACs

See README.md for the conventions used in reports.
"""

from pynetbuilder.errors import NetError, ShapeError, UsageError
from pynetbuilder.graph import Net, Phase

__all__ = ["Net", "NetError", "Phase", "ShapeError", "UsageError"]
__version__ = "0.1.0"
