"""The net graph: scoped defaults, names, phases, in-place layers."""

from __future__ import annotations

import pytest

from pynetbuilder import Net, NetError
from pynetbuilder.graph import Phase
from pynetbuilder.legos import ConvBNReLU, Input, ReLU


def small() -> Net:
    net = Net("g")
    Input("data", [(1, 3, 8, 8)])(net)
    return net


def test_scoped_defaults_and_the_user_wins():
    net = small()
    with net.defaults(Convolution={"weight_filler": {"type": "xavier"}, "group": 1}):
        with net.scope("outer"):
            net.layer("Convolution", "data", name="a", num_output=2, kernel_size=1)
            net.layer("Convolution", "data", name="b", num_output=2, kernel_size=1,
                      weight_filler={"type": "gaussian", "std": 0.1})
    net.layer("Convolution", "data", name="c", num_output=2, kernel_size=1)
    layers = {layer.name: layer.convolution_param for layer in net.to_proto("deploy").layer}
    assert layers["outer_a"].weight_filler.type == "xavier"
    assert layers["outer_b"].weight_filler.type == "gaussian"  # passed value wins
    assert not layers["c"].HasField("weight_filler")  # the scope ended
    # a lego's own default loses to the user's value too
    ConvBNReLU("d", 4, 3, weight_filler={"type": "constant", "value": 1.0})(net, "data")
    d = {layer.name: layer for layer in net.to_proto("deploy").layer}["d"]
    assert d.convolution_param.weight_filler.type == "constant"
    assert d.convolution_param.bias_term is False  # BN follows


def test_duplicate_names_and_unknown_blobs_are_refused():
    net = small()
    net.layer("ReLU", "data", name="r")
    with pytest.raises(NetError, match="two layers named 'r'"):
        net.layer("ReLU", "data", name="r")
    with pytest.raises(NetError, match="no earlier layer produces"):
        net.layer("ReLU", "missing", name="r2")


def test_phase_specific_layers_get_include_rules():
    net = Net("p")
    for phase, shape in ((Phase.TRAIN, 8), (Phase.TEST, 4)):
        net.layer("DummyData", [], name="data", tops=["data"], phases=frozenset({phase}),
                  shape=[{"dim": [shape, 3]}])
    net.layer("Input", [], name="data", tops=["data"], phases=frozenset({Phase.DEPLOY}),
              shape=[{"dim": [1, 3]}])
    ReLU("relu", inplace=False)(net, "data")
    tv = net.train_val_proto()
    assert [(layer.name, [r.phase for r in layer.include]) for layer in tv.layer] == [
        ("data", [0]), ("data", [1]), ("relu", [])]
    assert net.report("train").blob_shapes["relu"] == (8, 3)
    assert net.report("test").blob_shapes["relu"] == (4, 3)
    assert net.report("deploy").blob_shapes["relu"] == (1, 3)


def test_layers_follow_the_phases_of_their_inputs():
    net = small()  # Input defaults to the deploy net only
    net.layer("ReLU", "data", name="r")
    assert net.to_proto("train").layer == []
    assert [layer.name for layer in net.to_proto("deploy").layer] == ["data", "r"]


def test_report_while_building_equals_analysing_the_written_net():
    """``Net.report`` reuses the inference done during the build; it must give what
    analysing the emitted NetParameter from scratch gives, in every phase."""
    from pynetbuilder.models import resnet_imagenet
    from pynetbuilder.report import analyze

    net = resnet_imagenet("inception_trick_bottleneck", 128, (1, 2, 1, 1), fc_layers=True)
    for phase in ("train", "test", "deploy"):
        ours = net.report(phase)
        fresh = analyze(
            net.to_proto(phase),
            declared=net.declared_shapes(phase),
            blocks=net.blocks(phase),
            phase=phase,
        )
        assert ours.rows == fresh.rows
        assert ours.blob_shapes == fresh.blob_shapes
        assert ours.totals == fresh.totals


def test_layer_legos_take_phases_ntop_and_inplace_among_their_arguments():
    """Every single-layer lego passes ``phases``/``inplace``/``ntop`` to the graph,
    never into the layer's parameters."""
    from pynetbuilder.legos import BatchNorm, Conv, Dropout, Eltwise, Pool, Scale

    net = small()
    only_deploy = frozenset({Phase.DEPLOY})
    Conv("c", 4, 3, phases=only_deploy)(net, "data")
    Eltwise("e", phases=only_deploy)(net, "c", "c")
    BatchNorm("bn", inplace=False, phases=only_deploy)(net, "e")
    Scale("sc", inplace=False, phases=only_deploy)(net, "bn")
    ReLU("r", inplace=False, phases=only_deploy)(net, "sc")
    Dropout("d", 0.1, inplace=False, phases=only_deploy)(net, "r")
    Pool("p", "MAX", 2, stride=2, phases=only_deploy)(net, "d")
    for entry in net.entries[1:]:
        assert entry.phases == only_deploy, entry.name
        assert entry.tops == (entry.name,), entry.name  # none in place
    assert net.report().blob_shapes["p"] == (1, 4, 4, 4)


def test_read_only_parameters_are_read_as_values():
    """Read-only mappings (MappingProxyType, as the hybrid legos pass) are settings like
    any other: two proxies with different contents give different settings, even when
    the first one is no longer referenced by the caller."""
    from types import MappingProxyType

    net = small()
    net.add("ReLU", "data", "a", MappingProxyType({"negative_slope": 0.5}), inplace=False)
    for i in range(50):  # fresh proxies, each dropped by the caller at once
        net.add("ReLU", "data", f"b{i}", MappingProxyType({"negative_slope": 0.01 * i}),
                inplace=False)
    slopes = {layer.name: layer.relu_param.negative_slope
              for layer in net.to_proto("deploy").layer if layer.type == "ReLU"}
    assert slopes["a"] == 0.5
    assert slopes == {"a": 0.5, **{f"b{i}": pytest.approx(0.01 * i) for i in range(50)}}
    # BatchNorm's per-phase overrides (read-only mappings too) differ per phase
    from pynetbuilder.graph import ALL_PHASES
    from pynetbuilder.legos import ConvBN

    net = Net("bn")
    Input("data", [(1, 3, 8, 8)], phases=ALL_PHASES)(net)
    ConvBN("c1", 4, 3)(net, "data")
    ConvBN("c2", 4, 3)(net, "c1")
    for phase, global_stats in (("train", False), ("test", True), ("deploy", True)):
        stats = [layer.batch_norm_param.use_global_stats
                 for layer in net.to_proto(phase).layer if layer.type == "BatchNorm"]
        assert stats == [global_stats, global_stats], phase
