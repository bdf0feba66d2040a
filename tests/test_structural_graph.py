"""kprune.structural on functional graphs: channel groups, dead channels, select and prune."""

import numpy as np
import pytest

from kprune import structural
from kprune.core import layers as layer_specs
from kprune.engines.tfkeras import loader

keras = loader.keras
L = keras.layers


def _x(shape, n=3):
    return np.random.default_rng(0).random((n, *shape)).astype("float32")


def _randomise_batch_norms(model):
    """Give every batch norm non-trivial statistics (all four weights away from defaults)."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.random(w.shape).astype("float32") + 0.5
                               for w in layer.get_weights()])
    return model


def _residual_projection():
    i = keras.Input((8, 8, 3), name="x")
    a = L.Conv2D(6, 3, padding="same", name="a1")(i)
    a = L.BatchNormalization(name="a1_bn")(a)
    a = L.ReLU(name="a1_relu")(a)
    a = L.Conv2D(8, 3, padding="same", name="a2")(a)
    a = L.BatchNormalization(name="a2_bn")(a)
    p = L.Conv2D(8, 1, name="proj")(i)
    p = L.BatchNormalization(name="proj_bn")(p)
    s = L.Add(name="add")([a, p])
    s = L.Activation("relu", name="add_relu")(s)
    s = L.Conv2D(5, 3, name="c3")(s)
    o = L.Dense(4, name="head")(L.GlobalAveragePooling2D(name="gap")(s))
    return _randomise_batch_norms(keras.Model(i, o, name="residual_projection"))


def _residual_identity():
    i = keras.Input((8, 8, 3), name="x")
    stem = L.ReLU(name="stem_relu")(L.BatchNormalization(name="stem_bn")(
        L.Conv2D(8, 3, padding="same", name="stem")(i)))
    a = L.ReLU(name="b1_relu")(L.Conv2D(6, 3, padding="same", name="b1")(stem))
    a = L.BatchNormalization(name="b2_bn")(L.Conv2D(8, 3, padding="same", name="b2")(a))
    s = L.ReLU(name="out_relu")(L.Add(name="add")([stem, a]))
    a = L.ReLU(name="c1_relu")(L.Conv2D(6, 3, padding="same", name="c1")(s))
    a = L.Conv2D(8, 3, padding="same", name="c2")(a)
    s = L.Add(name="add2")([s, a])
    o = L.Dense(4, name="head")(L.GlobalMaxPooling2D(name="gmp")(s))
    return _randomise_batch_norms(keras.Model(i, o, name="residual_identity"))


def _concatenated():
    i = keras.Input((8, 8, 3), name="x")
    a = L.Conv2D(5, 3, padding="same", activation="relu", name="left")(i)
    b = L.Conv2D(7, 1, activation="relu", name="right")(i)
    c = L.Concatenate(name="cat")([a, b])
    c = L.BatchNormalization(name="cat_bn")(c)
    c = L.Conv2D(6, 3, name="mix")(c)
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(c))
    return _randomise_batch_norms(keras.Model(i, o, name="concatenated"))


def _depthwise():
    i = keras.Input((8, 8, 3), name="x")
    x = L.ReLU(6.0, name="r1")(L.BatchNormalization(name="bn1")(L.Conv2D(8, 1, name="expand")(i)))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU(6.0, name="r2")(L.BatchNormalization(name="bn2")(x))
    x = L.Conv2D(6, 1, name="project")(x)
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    return _randomise_batch_norms(keras.Model(i, o, name="depthwise"))


def _flattened():
    i = keras.Input((6, 6, 2), name="x")
    x = L.Conv2D(5, 3, name="conv")(i)
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(x))
    x = L.MaxPooling2D(2, name="pool")(x)
    x = L.Dense(7, activation="relu", name="fc")(L.Flatten(name="flat")(x))
    o = L.Dense(3, name="head")(L.Dropout(0.3, name="drop")(x))
    return _randomise_batch_norms(keras.Model(i, o, name="flattened"))


def _squeeze_excite():
    i = keras.Input((8, 8, 3), name="x")
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(L.Conv2D(8, 3, name="conv")(i)))
    g = L.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)  # (N, 1, 1, 8)
    g = L.Dense(3, activation="relu", name="se_reduce")(g)
    g = L.Dense(8, activation="sigmoid", name="se_expand")(g)
    x = L.Multiply(name="excite")([x, g])
    x = L.Conv2D(6, 3, name="after")(x)
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    return _randomise_batch_norms(keras.Model(i, o, name="squeeze_excite"))


def _separable_transposed():
    i = keras.Input((8, 8, 3), name="x")
    x = L.SeparableConv2D(6, 3, depth_multiplier=2, padding="same", name="sep")(i)
    x = L.ReLU(name="relu")(L.BatchNormalization(name="bn")(x))
    x = L.Conv2DTranspose(5, 3, strides=2, activation="relu", name="up")(x)
    x = L.SeparableConv2D(4, 3, depth_multiplier=3, name="sep2")(x)
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    return _randomise_batch_norms(keras.Model(i, o, name="separable_transposed"))


def _concatenated_then_added():
    i = keras.Input((6, 6, 3), name="x")
    c = L.Concatenate(name="cat")([L.Conv2D(3, 1, name="a")(i), L.Conv2D(5, 1, name="b")(i)])
    d = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, padding="same", name="d")(i))
    s = L.ReLU(name="relu")(L.Add(name="add")([c, d]))
    o = L.Dense(2, name="head")(L.GlobalAveragePooling2D(name="gap")(L.Conv2D(4, 1, name="e")(s)))
    return _randomise_batch_norms(keras.Model(i, o, name="concatenated_then_added"))


def test_a_concatenation_added_to_one_conv_splits_its_channels_in_two_groups():
    model = _concatenated_then_added()
    groups = structural.groups(model)
    assert {m.layer: m.offset for m in groups["b"].members} == {
        "b": 0, "d": 3, "bn": 3, "e": 3}
    assert groups["a"].layers("out") == ["a", "d"] and groups["a"].size == 3
    with pytest.raises(ValueError, match=r"'d', whose output channels are split over groups"):
        structural.remove_units(model, {"d": [0]})
    smaller = structural.remove_units(model, {"a": [1], "b": [0, 4]})
    assert smaller.get_layer("d").filters == 3
    np.testing.assert_array_equal(smaller.get_layer("d").get_weights()[0],
                                  model.get_layer("d").get_weights()[0][..., [1, 3, 7]])


def test_pruning_wrappers_are_refused():
    from kprune import plan, wrap

    wrapped = wrap.apply(_residual_projection(), plan.PruningPlan.default(),
                         steps_per_epoch=10, epochs=2)
    with pytest.raises(ValueError, match="Strip pruning wrappers first"):
        structural.groups(wrapped)


def _hard_swish():
    i = keras.Input((8, 8, 3), name="x")
    x = L.BatchNormalization(name="bn")(L.Conv2D(8, 3, name="conv")(i))
    gate = L.ReLU(6.0, name="relu6")(x + 3.0) * (1.0 / 6.0)  # two TFOpLambda layers
    x = L.Multiply(name="hard_swish")([x, gate])
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap")(L.Conv2D(4, 3, name="c2")(x)))
    return _randomise_batch_norms(keras.Model(i, o, name="hard_swish"))


MODELS = {  # model builder, group to zero channels of, channels zeroed
    "residual_projection": (_residual_projection, "a2", [1, 4, 6]),
    "residual_identity": (_residual_identity, "stem", [0, 3]),
    "concatenated": (_concatenated, "right", [2, 6]),
    "depthwise": (_depthwise, "expand", [1, 2, 7]),
    "flattened": (_flattened, "conv", [0, 3]),
    "squeeze_excite": (_squeeze_excite, "conv", [2, 5]),
    "separable": (_separable_transposed, "sep", [1, 4]),
    "transposed": (_separable_transposed, "up", [0, 2]),
    "concatenated_then_added": (_concatenated_then_added, "b", [0, 4]),
    "hard_swish": (_hard_swish, "conv", [3, 7]),
}


def _zero_group(model, group, channels):
    """Kill ``channels`` of ``group`` in place: producer columns, biases, batch norm
    gamma/beta/mean and depthwise filters all zero, so each maps to exactly 0."""
    leaves = {path.split("/")[-1]: layer for path, layer in loader.iter_layers(model)}
    for member in group.members:
        layer = leaves[member.layer]  # nested models: the layer inside them
        weights = layer.get_weights()
        index = np.asarray(channels) + member.offset
        layout = layer_specs.spec(layer).layout
        if member.role == "out" and layout == "transposed":
            weights[0][..., index, :] = 0.0
            weights[1][index] = 0.0
        elif member.role == "out":
            for w in weights[1:] if layout == "separable" else weights:  # pointwise, bias
                w[..., index] = 0.0
        elif member.role == "channelwise" and layer_specs.spec(layer).depthwise:
            weights[0][..., index, :] = 0.0
            for bias in weights[1:]:
                bias[index] = 0.0
        elif member.role == "channelwise":
            for w in weights[:3]:  # gamma, beta, moving mean (variance stays positive)
                w[index] = 0.0
        layer.set_weights(weights)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _assert_unchanged(model, before):
    for old, now in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, now)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_removing_dead_channels_of_a_group_leaves_the_outputs_unchanged(name):
    build, group_id, channels = MODELS[name]
    model = build()
    group = structural.groups(model)[group_id]
    assert group.removable
    _zero_group(model, group, channels)
    before = _weights(model)
    keep = structural.nonzero_units(model)
    assert list(keep) == [group_id]
    assert keep[group_id].tolist() == [c for c in range(group.size) if c not in channels]
    smaller = structural.remove_units(model, keep)
    assert smaller.count_params() < model.count_params()
    x = _x(model.input_shape[1:])
    np.testing.assert_allclose(smaller(x).numpy(), model(x).numpy(), atol=1e-5)
    _assert_unchanged(model, before)
    for producer in group.layers("out"):
        units = model.get_layer(producer).get_weights()[-1].shape[0]  # its bias
        assert smaller.get_layer(producer).get_weights()[-1].shape == (units - len(channels),)


def test_a_batch_norm_that_shifts_zero_keeps_the_channel_alive():
    model = _residual_projection()
    group = structural.groups(model)["a2"]
    _zero_group(model, group, [1])
    bn = model.get_layer("proj_bn")
    weights = bn.get_weights()
    weights[1][1] = 0.25  # beta: proj_bn maps 0 to 0.25 on channel 1
    bn.set_weights(weights)
    assert structural.nonzero_units(model) == {}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prune_half_builds_a_smaller_model_with_the_same_output_shape(name):
    model = MODELS[name][0]()
    before = _weights(model)
    for scope in ("global", "layer"):
        smaller = structural.prune(model, 0.5, scope=scope)
        x = _x(model.input_shape[1:])
        assert smaller(x).shape == model(x).shape
        assert smaller.count_params() < model.count_params()
        assert [layer.name for layer in smaller.layers] == [layer.name for layer in model.layers]
    _assert_unchanged(model, before)
    assert structural.prune(model, 0.0).count_params() == model.count_params()


def test_a_residual_stage_forms_one_group_and_the_head_is_never_removed():
    groups = structural.groups(_residual_identity())
    stage = groups["stem"]
    assert stage.layers("out") == ["stem", "b2", "c2"]
    assert stage.layers("channelwise") == ["stem_bn", "b2_bn"]
    assert sorted(stage.layers("in")) == ["b1", "c1", "head"]
    assert groups["b1"].layers() == ["b1", "b2"] and groups["b1"].removable
    head = groups["head"]
    assert not head.removable and "model output 'head'" in head.reason
    assert not groups["input:x"].removable and "model input 'x'" in groups["input:x"].reason
    text = str(groups)
    assert "stem:out, stem_bn:channelwise" in text and "model output 'head'" in text
    with pytest.raises(ValueError, match=r"Cannot remove channels of group 'head'.*model output"):
        structural.remove_units(_residual_identity(), {"head": [0, 1]})


def test_projection_and_branch_share_one_group():
    groups = structural.groups(_residual_projection())
    assert groups["a2"].layers("out") == ["a2", "proj"]
    assert groups["a2"].layers("channelwise") == ["a2_bn", "proj_bn"]
    assert groups.of_producer("proj") is groups["a2"]
    with pytest.raises(KeyError, match="No group 'a3'.*Did you mean"):
        groups["a3"]


def test_concatenated_inputs_keep_their_offsets():
    model = _concatenated()
    groups = structural.groups(model)
    right = {m.layer: m for m in groups["right"].members}
    assert right["cat_bn"].offset == 5 and right["mix"].offset == 5 and right["mix"].role == "in"
    assert {m.layer: m.offset for m in groups["left"].members} == {
        "left": 0, "cat_bn": 0, "mix": 0}
    smaller = structural.remove_units(model, {"right": [0, 3], "left": [4]})
    assert smaller.get_layer("mix").get_weights()[0].shape[2] == 3
    np.testing.assert_array_equal(smaller.get_layer("mix").get_weights()[0],
                                  model.get_layer("mix").get_weights()[0][:, :, [4, 5, 8]])
    np.testing.assert_array_equal(smaller.get_layer("cat_bn").get_weights()[0],
                                  model.get_layer("cat_bn").get_weights()[0][[4, 5, 8]])


def test_flatten_maps_each_channel_to_its_spatial_block():
    model = _flattened()
    member = [m for m in structural.groups(model)["conv"].members if m.layer == "fc"][0]
    assert (member.role, member.positions, member.channels) == ("in", 4, 5)
    smaller = structural.remove_units(model, {"conv": [1, 4]})
    rows = [p * 5 + c for p in range(4) for c in (1, 4)]
    np.testing.assert_array_equal(smaller.get_layer("fc").get_weights()[0],
                                  model.get_layer("fc").get_weights()[0][rows])


def test_squeeze_excite_couples_the_gate_and_the_first_dense_inputs():
    groups = structural.groups(_squeeze_excite())
    conv = groups["conv"]
    assert conv.layers("out") == ["conv", "se_expand"]
    assert sorted(conv.layers("in")) == ["after", "se_reduce"]
    assert groups["se_reduce"].layers() == ["se_reduce", "se_expand"]


def test_select_scores_round_to_cap_and_exclude():
    model = _residual_projection()
    scores = structural.group_scores(model)
    kernel_norms = [np.abs(model.get_layer(n).get_weights()[0]).reshape(-1, 8).sum(0)
                    for n in ("a2", "proj")]
    np.testing.assert_allclose(scores["a2"], kernel_norms[0] + kernel_norms[1], rtol=1e-6)
    gamma = sum(np.abs(model.get_layer(n).get_weights()[0]) for n in ("a2_bn", "proj_bn"))
    np.testing.assert_allclose(structural.group_scores(model, "bn")["a2"], gamma, rtol=1e-6)
    keep = structural.select(model, 0.5, scope="layer")
    assert {k: len(v) for k, v in keep.items()} == {"a1": 3, "a2": 4, "c3": 3}
    top = np.sort(np.argsort(-scores["a2"], kind="stable")[:4])
    np.testing.assert_array_equal(keep["a2"], top)
    assert {k: len(v) for k, v in structural.select(model, 0.5, scope="layer",
                                                    round_to=4).items()} == {
        "a1": 4, "a2": 4, "c3": 4}
    capped = structural.select(model, 0.99, scope="layer", max_fraction_per_group=0.5)
    assert {k: len(v) for k, v in capped.items()} == {"a1": 3, "a2": 4, "c3": 3}
    assert all(len(v) >= 1 for v in structural.select(model, 0.99, scope="global").values())
    assert list(structural.select(model, 0.5, exclude=("proj",))) == ["a1", "c3"]
    global_keep = structural.select(model, 0.5)  # 19 channels, 9 go
    assert sum(len(v) for v in global_keep.values()) == 19 - 9


def test_select_units_on_a_graph_scores_and_cuts_whole_groups():
    model = _residual_projection()
    keep = structural.select_units(model, {"proj": 0.5, "a1": 0.5})
    np.testing.assert_array_equal(keep["proj"], structural.select(model, 0.5, scope="layer")["a2"])
    smaller = structural.remove_units(model, keep)
    assert [smaller.get_layer(n).filters for n in ("a1", "a2", "proj")] == [3, 4, 4]
    with pytest.raises(ValueError, match=r"Cannot remove units of 'head': model output"):
        structural.select_units(model, {"head": 0.5})
    with pytest.raises(ValueError, match=r"names 'prj'.*Did you mean 'proj'"):
        structural.select_units(model, {"prj": 0.5})


def test_bad_input_is_refused_with_the_layer_named_and_the_model_unchanged():
    model = _residual_projection()
    before = _weights(model)
    for fraction in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"Argument `fraction` must be a fraction in \[0, 1\)"):
            structural.prune(model, fraction)
    with pytest.raises(ValueError, match=r"layer 'prj', which is not in the model\. Did you mean 'proj'"):
        structural.prune(model, 0.5, exclude=("prj",))
    with pytest.raises(ValueError, match=r"neither a group id nor a layer.*Did you mean 'c3' or 'a2'"):
        structural.remove_units(model, {"a3": [0]})
    with pytest.raises(ValueError, match=r"distinct indices in \[0, 8\)"):
        structural.remove_units(model, {"proj": [0, 8]})
    with pytest.raises(ValueError, match="two different index lists"):
        structural.remove_units(model, {"proj": [0, 1], "a2": [0]})
    with pytest.raises(ValueError, match="criterion"):
        structural.select(model, 0.5, criterion="l3")
    with pytest.raises(ValueError, match="round_to"):
        structural.select(model, 0.5, round_to=0)
    _assert_unchanged(model, before)


def _with(layer):
    i = keras.Input((6, 6, 2), name="x")
    x = L.Conv2D(4, 3, name="conv")(i)
    x = layer(x)
    o = L.Dense(3, name="head")(L.Flatten(name="flat")(x))
    return keras.Model(i, o)


@pytest.mark.parametrize("layer, match", [
    (L.Reshape((-1, 2), name="reshape"),
     r"group 'conv'.*layer 'reshape' \(Reshape\): Reshape moves channels"),
    (L.Lambda(lambda t: t * 2.0, name="double"),
     r"group 'conv'.*layer 'double' \(Lambda\): Lambda is not a layer kprune knows"),
    (L.Activation("softmax", name="sm"), r"layer 'sm' \(Activation\): it normalises over all"),
    (lambda t: loader.tf.reduce_mean(t, axis=-1, keepdims=True) + t,
     r"\(TFOpLambda\): TFOpLambda is not a layer kprune knows"),
    (L.DepthwiseConv2D(1, depth_multiplier=2, name="dw2"), "'dw2'.*depth_multiplier=2"),
    (L.LayerNormalization(axis=[1, 2, 3], name="ln"),
     r"'ln' \(LayerNormalization\): it normalises axis \[1, 2, 3\], not the channel"),
    (L.BatchNormalization(axis=1, name="bn_rows"), "'bn_rows'.*normalises axis 1"),
])
def test_layers_it_cannot_follow_are_refused_with_the_reason(layer, match):
    model = _with(layer)
    before = _weights(model)
    with pytest.raises(ValueError, match=match):
        structural.prune(model, 0.5, strict=True)
    with pytest.warns(structural.LeftWhole, match=match.removeprefix("group 'conv'.*")):
        assert structural.prune(model, 0.5).count_params() == model.count_params()
    with pytest.raises(ValueError, match=match):
        structural.remove_units(model, {"conv": [0, 1]})
    assert not structural.groups(model)["conv"].removable
    assert structural.prune(model, 0.5, exclude=("conv",)).count_params() == model.count_params()
    _assert_unchanged(model, before)


def test_layer_norm_over_the_channels_is_followed_but_never_dead():
    model = _with(L.LayerNormalization(name="ln"))
    rng = np.random.default_rng(0)
    model.get_layer("ln").set_weights([rng.random(4).astype("float32") + 0.5,
                                       np.zeros(4, "float32")])
    assert structural.groups(model)["conv"].layers() == ["conv", "ln", "head"]  # via Flatten
    smaller = structural.remove_units(model, {"conv": [0, 3]})
    np.testing.assert_array_equal(smaller.get_layer("ln").get_weights()[0],
                                  model.get_layer("ln").get_weights()[0][[0, 3]])
    _zero_group(model, structural.groups(model)["conv"], [1])
    x = _x((6, 6, 2))
    without = structural.remove_units(model, {"conv": [0, 2, 3]})
    assert np.abs(without(x).numpy() - model(x).numpy()).max() > 1e-3  # the stats changed
    assert structural.nonzero_units(model) == {}  # so the zero channel is not dead


def test_a_reshape_that_keeps_the_channel_axis_is_followed():
    i = keras.Input((6, 6, 2), name="x")
    x = L.Conv2D(4, 3, name="conv")(i)
    g = L.Reshape((1, 1, 4), name="gate_shape")(L.GlobalAveragePooling2D(name="gap")(x))
    x = L.Multiply(name="mul")([x, g])
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap2")(x))
    model = keras.Model(i, o)
    smaller = structural.remove_units(model, {"conv": [0, 3]})
    assert smaller.get_layer("gate_shape").target_shape == (1, 1, 2)
    assert smaller(_x((6, 6, 2))).shape == (3, 3)


def _nested():
    """A functional model calling a Sequential block and a functional residual block."""
    block = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(6, 3, padding="same", name="b1"),
                              L.BatchNormalization(name="b1_bn"), L.ReLU(name="b1_relu")],
                             name="block")
    r_in = keras.Input((8, 8, 6))
    r = L.Conv2D(6, 3, padding="same", name="r1")(r_in)
    residual = keras.Model(r_in, L.Add(name="r_add")([r_in, r]), name="residual")
    i = keras.Input((8, 8, 3), name="x")
    x = L.Conv2D(5, 3, name="c3")(residual(block(i)))
    o = L.Dense(4, name="head")(L.GlobalAveragePooling2D(name="gap")(x))
    _randomise_batch_norms(block)
    return keras.Model(i, o, name="nested")


def test_nested_models_are_followed_through_and_come_back_flat():
    model = _nested()
    before = _weights(model)
    gs = structural.groups(model)
    assert sorted(gs["b1"].layers()) == ["b1", "b1_bn", "c3", "r1", "r1"]  # Add couples r1
    _zero_group(model, gs["b1"], [1, 4])
    keep = structural.nonzero_units(model)
    assert keep["b1"].tolist() == [0, 2, 3, 5]
    smaller = structural.remove_units(model, keep)
    assert not any(isinstance(layer, keras.Model) for layer in smaller.layers)
    assert smaller.get_layer("b1").filters == 4 and smaller.get_layer("r1").filters == 4
    x = _x((8, 8, 3))
    np.testing.assert_allclose(smaller(x).numpy(), model(x).numpy(), atol=1e-5)
    assert structural.prune(model, 0.5).count_params() < model.count_params()
    zeroed = _weights(model)
    structural.prune(model, 0.5, scope="layer")
    _assert_unchanged(model, zeroed)
    assert any((a != b).any() for a, b in zip(before, zeroed))  # the zeroing was real


@pytest.mark.slow
def test_a_backbone_called_as_a_layer_is_pruned_like_the_application_itself():
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35,
                                          include_top=False, weights=None)
    model = keras.Sequential([keras.Input((32, 32, 3)), base,
                              L.GlobalAveragePooling2D(name="pool"), L.Dense(10, name="cls")])
    smaller = structural.prune(model, 0.5)
    assert smaller.count_params() < 0.6 * model.count_params()
    assert smaller(_x((32, 32, 3), n=2)).shape == (2, 10)
    assert smaller.get_layer("cls").units == 10


def test_nested_layers_named_like_outer_ones_are_refused():
    inner = keras.Sequential([keras.Input((4,)), L.Dense(3, name="fc")], name="block")
    i = keras.Input((4,))
    clash = keras.Model(i, L.Dense(2, name="head")(L.Dense(3, name="fc")(inner(i))))
    with pytest.raises(ValueError, match="two layers are named 'fc'"):
        structural.groups(clash)


def test_shared_layers_are_refused():
    shared = L.Dense(4, name="shared")
    x = keras.Input((4,))
    twice = keras.Model(x, L.Dense(2, name="head")(shared(shared(x))))
    with pytest.raises(ValueError, match="layer 'shared' is called 2 times"):
        structural.prune(twice, 0.5)


def test_summary_covers_functional_models():
    model = _residual_projection()
    smaller = structural.prune(model, 0.5, scope="layer")
    text = structural.summary(model, smaller)
    assert "proj   Conv2D  8      4" in text and "head   Dense   4      4" in text


def test_sequential_models_take_the_graph_path_too():
    from kprune import models

    model = models.lenet_5()
    groups = structural.groups(model)
    assert [g.id for g in groups if g.removable] == ["conv1", "conv2", "fc1"]
    fc1 = [m for m in groups["conv2"].members if m.layer == "fc1"][0]
    assert (fc1.positions, fc1.channels) == (16, 50)
    smaller = structural.prune(model, 0.5, scope="layer", round_to=8)
    assert smaller.get_layer("conv2").filters == 32 and smaller.get_layer("fc1").units == 256
    assert smaller(_x((28, 28, 1))).shape == (3, 10)


def test_a_gate_of_shape_n_c_broadcasts_over_the_feature_map():
    i = keras.Input((6, 6, 2), name="x")
    x = L.Conv2D(4, 3, name="conv")(i)
    g = L.Dense(4, activation="sigmoid", name="gate")(L.GlobalAveragePooling2D(name="gap")(x))
    x = L.Multiply(name="mul")([x, g])  # (N, 4, 4, 4) * (N, 4): broadcast over positions
    o = L.Dense(3, name="head")(L.GlobalAveragePooling2D(name="gap2")(x))
    model = keras.Model(i, o)
    assert structural.groups(model)["conv"].layers("out") == ["conv", "gate"]
    smaller = structural.prune(model, 0.5, scope="layer")
    assert smaller.get_layer("gate").units == 2 and smaller(_x((6, 6, 2))).shape == (3, 3)


def _application(name, shape):
    return getattr(keras.applications, name)(weights=None, input_shape=shape, classes=10)


@pytest.mark.slow
@pytest.mark.parametrize("name, shape, at_most", [
    ("ResNet50", (64, 64, 3), 0.30),  # 0.25 of the parameters stay
    ("MobileNetV2", (96, 96, 3), 0.30),  # 0.26
    ("DenseNet121", (64, 64, 3), 0.30),  # 0.26
    ("EfficientNetB0", (64, 64, 3), 0.30),  # 0.27
    ("MobileNetV3Small", (64, 64, 3), 0.30),  # hard-swish as TFOpLambda ops: 0.27
    ("NASNetMobile", (224, 224, 3), 0.30),  # adds concatenations to single convs
])
def test_applications_prune_to_a_smaller_model(name, shape, at_most):
    model = _application(name, shape)
    smaller = structural.prune(model, 0.5)
    x = _x(shape, 2)
    assert smaller(x).shape == (2, 10)
    assert smaller.count_params() <= at_most * model.count_params()


@pytest.mark.slow
@pytest.mark.parametrize("name, shape, producer, out", [
    ("MobileNetV2", (96, 96, 3), "block_2_project", ["block_1_project", "block_2_project"]),
    ("ResNet50", (64, 64, 3), "conv2_block1_0_conv", ["conv2_block1_0_conv",
                                                      "conv2_block1_3_conv",
                                                      "conv2_block2_3_conv",
                                                      "conv2_block3_3_conv"]),
    ("EfficientNetB0", (64, 64, 3), "block2a_expand_conv",  # with its squeeze-and-excite
     ["block2a_expand_conv", "block2a_se_expand"]),
    ("DenseNet121", (64, 64, 3), "conv2_block1_2_conv", ["conv2_block1_2_conv"]),
])
def test_dead_channels_of_an_application_group_are_removed_without_changing_outputs(
        name, shape, producer, out):
    model = _application(name, shape)
    group = structural.groups(model).of_producer(producer)
    assert group.layers("out") == out
    _zero_group(model, group, [0, 5, 17])
    keep = structural.nonzero_units(model)
    assert list(keep) == [group.id] and len(keep[group.id]) == group.size - 3
    smaller = structural.remove_units(model, keep)
    x = _x(shape, 2)
    np.testing.assert_allclose(smaller(x).numpy(), model(x).numpy(), atol=1e-5)
    assert smaller.count_params() < model.count_params()


@pytest.mark.slow
def test_a_resnet50_stage_is_one_group_with_its_projection():
    groups = structural.groups(_application("ResNet50", (64, 64, 3)))
    stage = groups.of_producer("conv2_block1_0_conv")
    assert stage.layers("out") == ["conv2_block1_0_conv", "conv2_block1_3_conv",
                                   "conv2_block2_3_conv", "conv2_block3_3_conv"]
    assert "conv3_block1_0_conv" in stage.layers("in") and stage.size == 256
    assert not groups.of_producer("predictions").removable


def test_in_a_sequential_model_a_unit_shifted_by_batch_norm_is_not_dead():
    model = keras.Sequential([keras.Input((5, 5, 2)), L.Conv2D(4, 3, name="conv"),
                              L.BatchNormalization(name="bn"), L.ReLU(name="relu"),
                              L.Flatten(name="flat"), L.Dense(2, name="head")])
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 1], bias[1] = 0.0, 0.0
    model.get_layer("conv").set_weights([kernel, bias])
    gamma, beta, mean, variance = model.get_layer("bn").get_weights()
    beta[1] = 0.5  # bn maps the zero unit to 0.5: the head reads it
    model.get_layer("bn").set_weights([gamma, beta, mean, variance])
    assert structural.nonzero_units(model) == {}
    beta[1] = 0.0
    model.get_layer("bn").set_weights([gamma, beta, mean, variance])
    keep = structural.nonzero_units(model)
    assert keep["conv"].tolist() == [0, 2, 3]
    x = _x((5, 5, 2))
    np.testing.assert_allclose(structural.remove_units(model, keep)(x).numpy(),
                               model(x).numpy(), atol=1e-5)


def test_global_selection_spreads_ties_over_the_groups():
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(8, 3, name="a"),
                              L.BatchNormalization(name="a_bn"), L.Conv2D(4, 3, name="b"),
                              L.BatchNormalization(name="b_bn"), L.Flatten(name="flat"),
                              L.Dense(2, name="head")])
    keep = structural.select(model, 0.5, criterion="bn")  # every gamma is 1
    assert {k: len(v) for k, v in keep.items()} == {"a": 4, "b": 2}
