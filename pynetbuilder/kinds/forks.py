"""Layer types of Caffe's widespread forks (``origin`` names the fork).

Their settings live in messages the strict schema does not know; a prototxt using
them is read through the dialect schema (:mod:`pynetbuilder.dialects`) and the
rules read those settings with :func:`~pynetbuilder.dialects.schema.dialect_view`.
Each rule follows the fork's C++ ``Reshape`` (named in its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence

from pynetbuilder.kinds.base import (
    Category,
    LayerCost,
    LayerLike,
    ParamBlob,
    Shape,
    declared_tops,
    kind,
    legacy,
    refuse,
)


def _view(layer: LayerLike):  # noqa: ANN202 - a dialect LayerParameter
    from pynetbuilder.dialects.schema import dialect_view

    return dialect_view(layer)


def is_segnet_bn(layer: LayerLike) -> bool:
    """SegNet's BN (it sets one of SegNet's fields: ``bn_mode``, ``scale_filler``,
    ``shift_filler``) rather than PSPNet's (whose fields are the BNParameter of this
    build's caffe.proto, though this build registers no BN layer)."""
    p = _view(layer).bn_param
    return any(p.HasField(f) for f in ("bn_mode", "scale_filler", "shift_filler"))


def _bn(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
        ) -> LayerCost:
    """SegNet's BN (caffe-segnet bn_layer.cpp: scale and shift, 1 x C x 1 x 1) and
    PSPNet's, set by this build's BNParameter (PSPNet bn_layer.cpp: the same two plus
    the moving mean and variance, not learnt)."""
    bottom = bottoms[0]
    if len(bottom) > 4:
        raise refuse(layer, f"takes at most 4 axes (Caffe's legacy shape), got {bottom}")
    channels = legacy(bottom, 1)
    blob = (1, channels, 1, 1)
    blobs = [ParamBlob(blob), ParamBlob(blob)]
    if not is_segnet_bn(layer):  # PSPNet's BN: 4 blobs
        blobs += [ParamBlob(blob, False), ParamBlob(blob, False)]
    return LayerCost([bottom], blobs)


def segnet_upsample(layer: LayerLike, bottoms: list[Shape]) -> LayerCost:
    """SegNet's Upsample (caffe-segnet upsample_layer.cpp): unpooling with the pooling
    mask as second input; ``upsample_h``/``upsample_w`` when given, else
    ``H * scale_h - pad_out_h`` (``scale_h``/``scale_w`` default to ``scale``)."""
    p = _view(layer).upsample_param
    n, c, h, w = bottoms[0]
    if len(bottoms) > 1 and bottoms[1] != bottoms[0]:
        raise refuse(layer, f"the mask {bottoms[1]} must have the input's shape {bottoms[0]}")
    if p.upsample_h and p.upsample_w:
        return LayerCost([(n, c, p.upsample_h, p.upsample_w)])
    scale_h = p.scale_h if p.HasField("scale_h") else p.scale
    scale_w = p.scale_w if p.HasField("scale_w") else p.scale
    return LayerCost([(n, c, h * scale_h - int(p.pad_out_h), w * scale_w - int(p.pad_out_w))])


def is_segnet_upsample(layer: LayerLike) -> bool:
    """SegNet's Upsample (two inputs, or SegNet's fields) rather than this build's."""
    if len(layer.bottom) == 2:
        return True
    p = _view(layer).upsample_param
    return any(p.HasField(f) for f in ("upsample_h", "upsample_w", "scale_h", "scale_w",
                                       "pad_out_h", "pad_out_w"))


def _interp(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
            ) -> LayerCost:
    """PSPNet / DeepLab-v2's Interp (interp_layer.cpp): the input padded by ``pad_beg`` /
    ``pad_end`` (<= 0), then shrunk, zoomed, set to ``height`` x ``width``, or to the
    second input's size."""
    p = _view(layer).interp_param
    n, c, h, w = bottoms[0]
    if p.pad_beg > 0 or p.pad_end > 0:
        raise refuse(layer, "only negative (cropping) pad_beg / pad_end are supported")
    h_eff, w_eff = h + p.pad_beg + p.pad_end, w + p.pad_beg + p.pad_end
    shrink, zoom = p.HasField("shrink_factor"), p.HasField("zoom_factor")
    if shrink and not zoom:
        h_out, w_out = (h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1
    elif zoom and not shrink:
        h_out = h_eff + (h_eff - 1) * (p.zoom_factor - 1)
        w_out = w_eff + (w_eff - 1) * (p.zoom_factor - 1)
    elif p.height and p.width:
        h_out, w_out = p.height, p.width
    elif shrink and zoom:
        h_out, w_out = (h_eff - 1) // p.shrink_factor + 1, (w_eff - 1) // p.shrink_factor + 1
        h_out = h_out + (h_out - 1) * (p.zoom_factor - 1)
        w_out = w_out + (w_out - 1) * (p.zoom_factor - 1)
    elif len(bottoms) > 1:
        h_out, w_out = bottoms[1][2], bottoms[1][3]
    else:
        raise refuse(layer, "needs shrink_factor, zoom_factor, height and width, or a second "
                            "input to take the size from")
    return LayerCost([(n, c, h_out, w_out)])


def _shuffle_channel(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                     ) -> LayerCost:
    """ShuffleNet's ShuffleChannel: same shape; ``group`` divides the channels."""
    group = _view(layer).shuffle_channel_param.group
    channels = legacy(bottoms[0], 1)
    if group < 1 or channels % group:
        raise refuse(layer, f"group {group} must divide the channels {channels}")
    return LayerCost([bottoms[0]])


def _roi_pooling(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
                 ) -> LayerCost:
    """Fast/Faster R-CNN's ROIPooling: ``rois x C x pooled_h x pooled_w``."""
    p = _view(layer).roi_pooling_param
    if len(bottoms) != 2:
        raise refuse(layer, "takes the feature map and the rois")
    if p.pooled_h < 1 or p.pooled_w < 1:
        raise refuse(layer, "pooled_h and pooled_w must be positive")
    return LayerCost([(bottoms[1][0], legacy(bottoms[0], 1), p.pooled_h, p.pooled_w)])


def _axpy(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    """SENet's Axpy (axpy_layer.cpp): ``a * x + y``, a of shape N x C x 1 x 1."""
    if len(bottoms) != 3:
        raise refuse(layer, "takes a, x and y")
    a, x, y = bottoms
    if x != y or a[:2] != x[:2] or any(d != 1 for d in a[2:]):
        raise refuse(layer, f"needs a N x C x 1 x 1 and x, y of one shape, got {bottoms}")
    return LayerCost([x])


def _depthwise(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
               ) -> LayerCost:
    """MobileNet / ShuffleNet ports' depthwise convolution (ConvolutionDepthwise,
    DepthwiseConvolution): a Convolution whose group is the input's channels.
    ConvolutionDepthwise (conv_dw_layer.cpp, ``Reshape``) gives as many channels as its
    input has, whatever ``num_output`` says (its weights are C x 1 x k_h x k_w)."""
    from pynetbuilder.kinds.convolution import _convolution
    from pynetbuilder.schema import caffe_pb2

    conv = caffe_pb2.LayerParameter()
    conv.CopyFrom(layer)  # type: ignore[arg-type]
    conv.type = "Convolution"
    conv.convolution_param.group = legacy(bottoms[0], 1)
    if layer.type == "ConvolutionDepthwise":
        conv.convolution_param.num_output = legacy(bottoms[0], 1)
    return _convolution(conv, bottoms, declared)


def _reorg(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
           ) -> LayerCost:
    """YOLOv2's Reorg (passthrough; the ports' reorg_layer.cpp ``LayerSetUp``):
    ``C * s^2 x H / s x W / s``, or with ``reverse`` ``C / s^2 x H * s x W * s``.  Its
    ``reorg_cpu`` reads the input as C / s^2 x sH x sW either way, so s^2 must divide
    C (and s the size), or it indexes past its arrays."""
    p = _view(layer).reorg_param
    stride = p.stride
    if len(bottoms[0]) != 4:
        raise refuse(layer, f"needs an N,C,H,W input, got {bottoms[0]}")
    n, c, h, w = bottoms[0]
    if stride < 1 or c % (stride * stride):
        raise refuse(layer, f"stride {stride}: its square must divide the channels {c}")
    if p.reverse:
        return LayerCost([(n, c // (stride * stride), h * stride, w * stride)])
    if h % stride or w % stride:
        raise refuse(layer, f"stride {stride} must divide the input size {h}x{w}")
    return LayerCost([(n, c * stride * stride, h // stride, w // stride)])


def _same(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
          ) -> LayerCost:
    return LayerCost([bottoms[0]])


def _dense_image_data(layer: LayerLike, bottoms: list[Shape],
                      declared: Sequence[Shape] | None) -> LayerCost:
    return LayerCost(declared_tops(layer, declared, "SegNet's image and label lists"))


def _image_seg_data(layer: LayerLike, bottoms: list[Shape],
                    declared: Sequence[Shape] | None) -> LayerCost:
    """DeepLab's ImageSegData (image_seg_data_layer.cpp, ``DataLayerSetUp``): the images,
    their label images (N x 1 x H x W) and each image's size (N x 1 x 1 x 2); the sizes
    come from the list it reads (see inspect)."""
    return LayerCost(declared_tops(layer, declared, "DeepLab's image and label list"))


def _no_tops(layer: LayerLike, bottoms: list[Shape], declared: Sequence[Shape] | None
             ) -> LayerCost:
    """A layer that only consumes (DeepLab's MatWrite writes its input to .mat files)."""
    if layer.top:
        raise refuse(layer, "has no outputs")
    return LayerCost([])


def _continuation_indicator(layer: LayerLike, bottoms: list[Shape],
                            declared: Sequence[Shape] | None) -> LayerCost:
    """The CRNN ports' ContinuationIndicator (CC4.0 continuation_indicator_layer.cpp,
    ``LayerSetUp`` / ``Reshape``): ``time_step x batch``, the batch being the input's
    first axis when the layer has one, else ``batch_size``; both must be positive."""
    p = _view(layer).continuation_indicator_param
    batch = bottoms[0][0] if bottoms else p.batch_size
    if batch < 1:
        raise refuse(layer, "the batch size should be greater than 0")
    if p.time_step < 1:
        raise refuse(layer, "the time step should be greater than 0")
    return LayerCost([(p.time_step, batch)])


KINDS = (
    kind("BN", _bn, category=Category.INPLACE, param="bn_param", origin="segnet/pspnet",
         short="BN", torch="emit_forks:bn"),
    kind("Interp", _interp, origin="pspnet", torch="emit_forks:interp"),
    kind("ShuffleChannel", _shuffle_channel, origin="shufflenet",
         torch="emit_forks:shuffle_channel"),
    kind("ROIPooling", _roi_pooling, origin="faster_rcnn", torch="emit_forks:roi_pooling"),
    kind("Axpy", _axpy, origin="senet", torch="emit_forks:axpy"),
    kind("ConvolutionDepthwise", _depthwise, param="convolution_param", origin="mobilenet",
         torch="emit_forks:depthwise"),
    kind("DepthwiseConvolution", _depthwise, param="convolution_param", origin="mobilenet",
         torch="emit_forks:depthwise"),
    kind("Reorg", _reorg, origin="yolo", torch="emit_forks:reorg"),
    kind("Region", _same, origin="yolo", torch="emit_forks:region"),  # an error: see there
    kind("DenseImageData", _dense_image_data, category=Category.DATA,
         source="dense_image_data_param", origin="segnet"),
    kind("ImageSegData", _image_seg_data, category=Category.DATA, source="image_data_param",
         reads="IMAGE_LIST", origin="deeplab"),
    kind("MatWrite", _no_tops, origin="deeplab"),
    kind("ContinuationIndicator", _continuation_indicator, origin="crnn",
         torch="emit_forks:continuation_indicator"),
)
