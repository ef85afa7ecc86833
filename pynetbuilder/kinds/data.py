"""Layer kinds that bring data into a net: inputs, data layers, Python layers."""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    Shape,
    UnknownShapeError,
    declared_tops,
    kind,
    refuse,
)

GREY = "#e6e6e6"
_DATA = Category.DATA


def _input(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    if not shapes:
        return LayerCost(declared_tops(layer, declared, "Input layer without shape"))
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    if len(shapes) != len(layer.top):
        raise refuse(layer, f"has {len(layer.top)} tops but {len(shapes)} shapes")
    return LayerCost(shapes)


def _dummy(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    p = layer.dummy_data_param
    if p.shape:
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
    else:
        shapes = [tuple(int(x) for x in dims) for dims in zip(p.num, p.channels, p.height, p.width)]
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    return LayerCost(shapes)


def _memory(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    p = layer.memory_data_param
    n = p.batch_size
    c, h, w = p.channels, p.height, p.width
    crop = layer.transform_param.crop_size
    if crop:
        h = w = crop
    tops = [(n, c, h, w), (n,)]
    return LayerCost(tops[: len(layer.top)])


def _external(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
              ) -> LayerCost:
    """Data layers whose tops come from what they read: the shapes are given from outside
    (batch and crop from the prototxt, the rest from the source: see inspect)."""
    return LayerCost(declared_tops(layer, declared, "it depends on the data it reads"))


# Python layers shipped in pynetbuilder.caffe_layers whose shapes follow from their bottoms.
_SAME_SHAPE_PYTHON_LAYERS = frozenset({("pynetbuilder.caffe_layers.shake_shake", "ShakeShake")})


def _python(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    """pynetbuilder's own Python layers by their shape; any other from declared shapes.

    ``ShakeShake`` mixes two bottoms of one shape into a top of that shape.
    """
    p = layer.python_param
    if (p.module, p.layer) not in _SAME_SHAPE_PYTHON_LAYERS:
        if declared is None:
            raise UnknownShapeError(
                f"Python layer {p.module}.{p.layer}: its output shapes are set by its own "
                "code, which analysis does not run (if it is a data layer, give the input "
                "shape explicitly)"
            )
        return _external(layer, bottoms, declared)
    if len(bottoms) != 2 or bottoms[0] != bottoms[1]:
        raise refuse(layer, f"({p.layer}) needs two inputs of one shape, got "
                     + ", ".join(str(b) for b in bottoms))
    return LayerCost([bottoms[0]])


def _crop_summary(layer: LayerLike) -> str:
    crop = layer.transform_param.crop_size
    return f"crop {crop}" if crop else ""


def _python_summary(layer: LayerLike) -> str:
    p = layer.python_param
    return f"{p.module}.{p.layer}"


KINDS = (
    kind("Input", _input, category=Category.INPUT, fill=GREY),
    kind("Data", _external, category=_DATA, v1="DATA", source="data_param",
         reads="database", summary=_crop_summary, fill=GREY),
    kind("ImageData", _external, category=_DATA, v1="IMAGE_DATA", source="image_data_param",
         reads="IMAGE_LIST", fill=GREY),
    kind("HDF5Data", _external, category=_DATA, v1="HDF5_DATA", source="hdf5_data_param",
         reads="HDF5", fill=GREY),
    kind("WindowData", _external, category=_DATA, v1="WINDOW_DATA", source="window_data_param",
         reads="WINDOW_FILE"),
    kind("AnnotatedData", _external, category=_DATA, param="annotated_data_param",
         source="data_param", reads="database", origin="ssd"),
    kind("DummyData", _dummy, category=_DATA, v1="DUMMY_DATA"),
    kind("MemoryData", _memory, category=_DATA, v1="MEMORY_DATA"),
    kind("Python", _python, summary=_python_summary, torch="emit_python:python"),
)
