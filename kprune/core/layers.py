"""What each layer prunes, along which axis, and what it does to channels: the one registry.

Every module that asks "what does this layer prune?" asks here: the plan, the wrapper,
the report, the workflows, sensitivity, allocation and structural pruning. The weights a
built-in layer prunes come from tfmot's own registry (never guessed from attribute
names): ``SeparableConv*`` prunes its ``pointwise_kernel``, ``DepthwiseConv2D`` nothing,
``Embedding`` its ``embeddings``, ``MultiHeadAttention`` its four inner dense kernels,
recurrent layers their cells' ``kernel`` and ``recurrent_kernel``. A user's
``tfmot.sparsity.keras.PrunableLayer`` names its own through ``get_prunable_weights()``.

Beside that, :data:`SPECS` gives each layer type a *kind* (what plan rules select with
``by="kind"``) and a channel *role* (what structural pruning does across it). Supporting a
new layer type is one entry in :data:`SPECS` plus its tests.

TensorFlow is imported only when a layer is inspected.

Example:
    >>> from kprune import layers
    >>> [w.label for w in layers.prunable_weights(model.get_layer("sep"))]
    ['pointwise_kernel']
    >>> layers.kind(model.get_layer("sep")), layers.channel_role(model.get_layer("sep"))
    ('conv', 'producer')
    >>> layers.not_pruned_reason(model.get_layer("dw"))
    'tfmot does not prune depthwise kernels'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kprune.engines import engine_of, pruner

__all__ = [
    "SPECS",
    "ELEMENTWISE_OPS",
    "KINDS",
    "ROLES",
    "LayerSpec",
    "PrunableWeight",
    "spec",
    "kind",
    "channel_role",
    "channel_problem",
    "prunable_weights",
    "effective_weights",
    "is_prunable",
    "not_pruned_reason",
    "n_m_problem",
    "n_m_axis",
    "tied_note",
    "block_problem",
    "weight_layers",
    "shared_weights",
    "rescales_inputs",
    "N_M_AXIS",
    "KERAS3_PRUNED",
    "HUB_BLOCKS",
    "KERAS3_OPS",
    "model_layers",
    "unwrap",
    "engine",
    "input_shape",
    "output_shape",
]

#: What plan rules can select with ``by="kind"``.
KINDS = ("conv", "dense", "depthwise", "embedding", "attention", "recurrent", "custom", "other")
#: What a layer does to the channels (last axis) flowing through it:
#: ``producer`` makes new output units that can be removed (its consumers lose inputs);
#: ``channelwise`` keeps the same channel set in and out (batch norm, activations, pooling);
#: ``coupling`` ties all its inputs to one channel set (Add, Multiply, ...);
#: ``concatenating`` stacks its inputs' channels; ``flattening`` maps each channel to its
#: positions in a flat vector (Flatten); ``reshaping`` moves channels in ways kprune does
#: not follow (Reshape, Permute); ``mixing`` combines channels (softmax): no removal across
#: it; ``attention``: a producer of its output channels (the output projection) that reads
#: its query, key and value inputs through their projections, and whose heads are a
#: removable group of their own (MultiHeadAttention, see kprune.structural.heads);
#: ``block``: a transformer block (KerasHub's ``TransformerEncoder``/``TransformerDecoder``)
#: whose input and output are the residual stream and whose heads and feed-forward neurons
#: are removable groups of their own (see kprune.structural.hub_blocks);
#: ``opaque``: kprune does not know, and refuses to guess.
ROLES = ("producer", "channelwise", "coupling", "concatenating", "flattening", "reshaping",
         "mixing", "attention", "block", "opaque")
#: The axis that N:M groups run along, as tfmot groups them: the second-to-last of a
#: rank-2 or rank-4 weight (a Keras kernel's input channels).
N_M_AXIS = -2


@dataclass(frozen=True)
class LayerSpec:
    """One layer type's entry: its kind, its channel role, and why it is not pruned (if so)."""

    kind: str
    role: str
    note: str = ""  # "{pruner}" stands for who prunes the layer (see kprune.engines.pruner)
    n_m: bool = True  # may its prunable weights take N:M (where their rank allows)?
    # Structural pruning: the config key that counts a producer's output units, for
    # producers whose kernel is (..., inputs, outputs) with a bias of (outputs,).
    units: str | None = None
    # How a producer's weights hold its channels, when not as above: "separable" (a
    # depthwise kernel (..., inputs, multiplier), then a pointwise kernel
    # (..., inputs * multiplier, outputs) and a bias) or "transposed" (kernel
    # (..., outputs, inputs)) or "attention" (query/key/value kernels (inputs, heads, dim),
    # an output kernel (heads, dim, outputs): see kprune.structural.heads; ``units`` then
    # counts the heads) or "block" (a KerasHub transformer block: its attention's heads and
    # its feed-forward neurons, see kprune.structural.hub_blocks; ``units`` counts heads).
    layout: str = ""
    # A channelwise layer whose weights hold one value per channel on their last axis
    # (batch norm): they are sliced with the channels.
    per_channel: bool = False
    # A depthwise layer: kernel (..., channels, multiplier) and bias (channels,) follow the
    # channels (channelwise only with a multiplier of 1: see channel_problem).
    depthwise: bool = False
    # A coupling layer whose output is 0 wherever any input is 0 (Multiply): a
    # squeeze-and-excite gate's removed channel multiplies a zero channel.
    annihilates: bool = False
    # A coupling layer whose output is the sum of its inputs (Add): a residual block
    # ``Add([shortcut, branch])`` becomes the identity when its branch is dropped.
    sums: bool = False
    # Preprocessing that scales the model's inputs itself (Rescaling, Normalization): the
    # data is then fed as it is, not divided by 255.
    rescales: bool = False
    # A channelwise layer that normalises with running statistics (batch norm:
    # ``moving_mean`` and ``moving_variance`` per channel), which pruning the layers before
    # it makes stale.
    running_statistics: bool = False
    # A channelwise layer whose statistics run over the channels (LayerNormalization):
    # channels go through it and are sliced with it, but removing one changes the others,
    # so no channel through it is ever "dead" (removable without changing the outputs).
    channel_statistics: bool = False


_PRODUCER_CONV = LayerSpec("conv", "producer", units="filters")
_SEPARABLE = LayerSpec("conv", "producer", units="filters", layout="separable")
_CHANNELWISE = LayerSpec("other", "channelwise")
_COUPLING = LayerSpec("other", "coupling")
_RECURRENT = LayerSpec("recurrent", "opaque")

#: Layer class name (a ``tf_keras.layers`` class) -> its spec. One entry per type.
SPECS = {
    "Dense": LayerSpec("dense", "producer", units="units"),
    "Conv1D": _PRODUCER_CONV,
    "Conv2D": _PRODUCER_CONV,
    "Conv3D": _PRODUCER_CONV,
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    "Conv2DTranspose": LayerSpec(
        "conv", "producer", n_m=False, units="filters", layout="transposed",
        note="its kernel keeps output channels on the axis {pruner} groups N:M along"),
    "Conv3DTranspose": LayerSpec(
        "conv", "producer", n_m=False, units="filters", layout="transposed",
        note="its kernel keeps output channels on the axis {pruner} groups N:M along"),
    "DepthwiseConv2D": LayerSpec(
        "depthwise", "channelwise", note="{pruner} does not prune depthwise kernels",
        depthwise=True),
    "Embedding": LayerSpec(
        "embedding", "opaque", n_m=False,
        note="embedding rows are looked up, not multiplied: N:M gives no speed-up"),
    # Keras 3: the projections inside MultiHeadAttention and KerasHub blocks. N:M runs along
    # the kernel axis its equation contracts with the input (see n_m_axis).
    "EinsumDense": LayerSpec("dense", "opaque"),
    "MultiHeadAttention": LayerSpec("attention", "attention", units="num_heads",
                                    layout="attention"),
    "LSTM": _RECURRENT,
    "GRU": _RECURRENT,
    "SimpleRNN": _RECURRENT,
    "RNN": _RECURRENT,
    "BatchNormalization": LayerSpec("other", "channelwise", per_channel=True,
                                    running_statistics=True),
    "LayerNormalization": LayerSpec("other", "channelwise", per_channel=True,
                                    channel_statistics=True),
    "ReLU": _CHANNELWISE,
    "LeakyReLU": _CHANNELWISE,
    "ELU": _CHANNELWISE,
    "PReLU": _CHANNELWISE,
    "ThresholdedReLU": _CHANNELWISE,
    "Activation": _CHANNELWISE,  # softmax is mixing: see channel_role
    "Softmax": LayerSpec("other", "mixing"),
    "Dropout": _CHANNELWISE,
    "SpatialDropout1D": _CHANNELWISE,
    "SpatialDropout2D": _CHANNELWISE,
    "SpatialDropout3D": _CHANNELWISE,
    "GaussianNoise": _CHANNELWISE,
    "GaussianDropout": _CHANNELWISE,
    "AlphaDropout": _CHANNELWISE,
    "MaxPooling1D": _CHANNELWISE,
    "MaxPooling2D": _CHANNELWISE,
    "MaxPooling3D": _CHANNELWISE,
    "AveragePooling1D": _CHANNELWISE,
    "AveragePooling2D": _CHANNELWISE,
    "AveragePooling3D": _CHANNELWISE,
    "GlobalAveragePooling1D": _CHANNELWISE,
    "GlobalAveragePooling2D": _CHANNELWISE,
    "GlobalAveragePooling3D": _CHANNELWISE,
    "GlobalMaxPooling1D": _CHANNELWISE,
    "GlobalMaxPooling2D": _CHANNELWISE,
    "GlobalMaxPooling3D": _CHANNELWISE,
    "ZeroPadding1D": _CHANNELWISE,
    "ZeroPadding2D": _CHANNELWISE,
    "ZeroPadding3D": _CHANNELWISE,
    "Cropping1D": _CHANNELWISE,
    "Cropping2D": _CHANNELWISE,
    "Cropping3D": _CHANNELWISE,
    "UpSampling1D": _CHANNELWISE,
    "UpSampling2D": _CHANNELWISE,
    "UpSampling3D": _CHANNELWISE,
    "Add": LayerSpec("other", "coupling", sums=True),
    "Subtract": _COUPLING,
    "Multiply": LayerSpec("other", "coupling", annihilates=True),
    "Average": _COUPLING,
    "Maximum": _COUPLING,
    "Minimum": _COUPLING,
    "Concatenate": LayerSpec("other", "concatenating"),
    "Flatten": LayerSpec("other", "flattening"),
    "Rescaling": LayerSpec("other", "channelwise", rescales=True),
    "Normalization": LayerSpec("other", "channelwise", rescales=True),
    "Reshape": LayerSpec("other", "reshaping"),
    "Permute": LayerSpec("other", "reshaping"),
}
#: TensorFlow ops that a functional model records as ``TFOpLambda`` layers (``x + 3.0``,
#: ``x * (1 / 6)`` in MobileNetV3's hard-swish) and that act on each element alone: with
#: one tensor and otherwise Python numbers they are channelwise (see channel_role).
ELEMENTWISE_OPS = ("__operators__.add", "math.add", "math.subtract", "math.multiply",
                   "math.truediv", "nn.relu", "nn.relu6", "math.sigmoid", "math.tanh",
                   "nn.silu")
#: What a Keras 3 built-in layer prunes, by class name. tfmot's registry knows only tf_keras
#: classes; this is the same registry written out for Keras 3 (tests/test_keras3.py checks
#: that the two agree). Any other Keras 3 layer with weights is not prunable.
KERAS3_PRUNED = {
    **dict.fromkeys(("Dense", "Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose",
                     "Conv3DTranspose"), ("kernel",)),
    **dict.fromkeys(("SeparableConv1D", "SeparableConv2D"), ("pointwise_kernel",)),
    "Embedding": ("embeddings",),
    "EinsumDense": ("kernel",),
    "MultiHeadAttention": ("_query_dense.kernel", "_key_dense.kernel", "_value_dense.kernel",
                           "_output_dense.kernel"),
    **dict.fromkeys(("LSTM", "GRU", "SimpleRNN"), ("cell.kernel", "cell.recurrent_kernel")),
}
#: KerasHub's transformer blocks (Keras 3), by class name; recognised by their class's module
#: (``keras_hub.``), never imported. One entry per block class.
HUB_BLOCKS = {
    "TransformerEncoder": LayerSpec("other", "block", units="num_heads", layout="block"),
    "TransformerDecoder": LayerSpec("other", "block", units="num_heads", layout="block"),
}
#: ``keras.ops`` functions a Keras 3 functional graph may call between layers, by class name,
#: that structural pruning follows (``x[:, 0, :]``, KerasHub BERT's pooled token: a
#: ``GetItem`` that keeps the channel axis; see channel_problem).
KERAS3_OPS = {"GetItem": LayerSpec("other", "channelwise")}
_CUSTOM = LayerSpec("custom", "opaque")
_UNKNOWN = LayerSpec("other", "opaque")


@dataclass(frozen=True)
class PrunableWeight:
    """One weight that pruning acts on: its label within the layer and the variable."""

    label: str
    variable: object

    @property
    def shape(self):
        return tuple(int(d) for d in self.variable.shape)

    @property
    def size(self):
        return int(np.prod(self.shape)) if self.shape else 1


# Each public function below asks the engine of its argument once
# (kprune.engines.engine_of) and hands it to the private helpers it calls: what differs
# between tf_keras and Keras 3 is answered there, under the same names on both engines.


def unwrap(layer):
    """The layer a pruning wrapper (of either engine) wraps; any other layer itself.

    Example:
        >>> unwrap(pruned.get_layer("prune_low_magnitude_fc1")).name
        'fc1'
    """
    return engine_of(layer).unwrap(layer)


def engine(obj):
    """The engine of ``obj``'s Keras (:func:`kprune.engines.engine_of`):
    :mod:`kprune.engines.keras3.engine` for a Keras 3 object,
    :mod:`kprune.engines.tfkeras.engine` (tf_keras) otherwise.

    Both give ``keras`` (the Keras module itself), ``check_model``, ``iter_layers``,
    ``layer_name`` and ``clone_model(model, layer_fn)``, so that code written once serves
    either engine.

    Example:
        >>> engine(model).keras.Sequential       # tf_keras's or Keras 3's
    """
    return engine_of(obj)


def input_shape(layer):
    """``layer``'s input shape, as tf_keras's ``layer.input_shape`` gives it on either engine
    (a tuple; a list of tuples for several inputs). Keras 3 layers have no such attribute:
    the shape of their first call's input is read.

    Example:
        >>> input_shape(model.get_layer("fc1"))
        (None, 1568)
    """
    return engine_of(layer).input_shape(layer)


def output_shape(layer):
    """``layer``'s output shape on either engine (see :func:`input_shape`).

    Example:
        >>> output_shape(model.get_layer("fc1"))
        (None, 128)
    """
    return engine_of(layer).output_shape(layer)


def model_layers(model):
    """``(path, layer)`` of every leaf layer of ``model``, checked by the engine that owns it.

    A Keras 3 model is checked and walked by :mod:`kprune.engines.keras3`, a tf_keras one
    by :mod:`kprune.engines.tfkeras`; paths read alike on both (``outer/inner``, a pruning
    wrapper named by the layer it wraps).

    Example:
        >>> [path for path, _ in model_layers(model)]
        ['conv1', 'pool1', 'conv2', 'flatten', 'fc1', 'head']
    """
    return _model_layers(model, engine_of(model))


def _model_layers(model, owner):
    owner.check_model(model, graph=False)  # a subclassed Keras 3 model: its layers
    return list(owner.iter_layers(model))


def _builtin_class(layer, owner):
    """The built-in class of its Keras that ``layer`` is pruned as, or None (``owner``: its
    engine).

    tf_keras: the layer's own class, only if built in (tfmot's registry is exact). Keras 3:
    the nearest built-in ancestor that the registry knows, so that KerasHub's
    ``ReversibleEmbedding`` is an ``Embedding`` and its ``CachedMultiHeadAttention`` a
    ``MultiHeadAttention``; a custom layer made of sublayers (``keras.layers.Layer``
    directly) has none, and its sublayers are pruned instead (:func:`weight_layers`).
    """
    for cls in owner.builtin_classes(layer):
        if cls.__name__ in SPECS or cls.__name__ in KERAS3_PRUNED:
            return cls
    return None


def spec(layer):
    """The :class:`LayerSpec` of ``layer`` (a wrapper answers for the layer it wraps).

    Example:
        >>> spec(tf_keras.layers.Add()).role
        'coupling'
    """
    return _spec(layer, engine_of(layer))


def _spec(layer, owner):
    layer = owner.unwrap(layer)
    if owner.declares_prunable_weights(layer):
        return _CUSTOM
    builtin = _builtin_class(layer, owner)
    if builtin is None:  # Keras 3 only: their classes live in keras_hub and keras.src
        return _keras3_extra(layer)
    return SPECS.get(builtin.__name__, _UNKNOWN)


def _keras3_extra(layer):
    """The spec of a KerasHub block (:data:`HUB_BLOCKS`) or a followed ``keras.ops`` function
    (:data:`KERAS3_OPS`), else the unknown one."""
    for cls in type(layer).__mro__:
        if cls.__name__ in HUB_BLOCKS and cls.__module__.startswith("keras_hub."):
            return HUB_BLOCKS[cls.__name__]
    cls = type(layer)
    if cls.__name__ in KERAS3_OPS and cls.__module__.startswith("keras."):
        return KERAS3_OPS[cls.__name__]
    return _UNKNOWN


def kind(layer):
    """What plan rules select with ``by="kind"``: one of :data:`KINDS`."""
    return spec(layer).kind


def channel_role(layer):
    """What ``layer`` does to channels, one of :data:`ROLES` (softmax activations mix; a
    ``Reshape`` that keeps the last axis, e.g. ``(N, C) -> (N, 1, 1, C)``, is channelwise)."""
    return _channel_role(layer, engine_of(layer))


def _channel_role(layer, owner):
    layer = owner.unwrap(layer)
    role = _spec(layer, owner).role
    if role == "channelwise" and type(layer).__name__ == "Activation":
        name = getattr(layer.activation, "__name__", "")
        return "mixing" if name in ("softmax", "log_softmax") else role
    if type(layer).__name__ == "TFOpLambda" and _elementwise_op(layer, owner):
        return "channelwise"
    if type(layer).__name__ == "Reshape" and role == "reshaping" and layer.built:
        # (N, ..., C) -> (N, ..., C) keeps each channel's identity (row-major order)
        shape_in, shape_out = owner.input_shape(layer), owner.output_shape(layer)
        if (len(shape_in) > 1 and len(shape_out) > 1 and shape_in[-1] is not None
                and shape_in[-1] == shape_out[-1]):
            return "channelwise"
    return role


def _elementwise_op(layer, owner):
    """True for a TFOpLambda of :data:`ELEMENTWISE_OPS` on one tensor and Python numbers."""
    if getattr(layer, "symbol", None) not in ELEMENTWISE_OPS or not owner.layer_calls(layer):
        return False
    for node in owner.layer_calls(layer):
        _, args, kwargs = owner.node_call(node)
        args = [*args, *(v for k, v in (kwargs or {}).items() if k != "name")]
        tensors = [a for a in args if owner.is_graph_tensor(a)]
        numbers = [a for a in args
                   if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(tensors) != 1 or len(tensors) + len(numbers) != len(args):
            return False
    return True


def channel_problem(layer):
    """Why structural pruning cannot carry channels through ``layer`` ("" when it can).

    Checked here so that no other module names layer types: channels-first layers,
    grouped convolutions, depthwise multipliers other than 1, batch or layer norm over an
    axis other than the channels (or over more axes than the channels), reshapes
    that change the channel axis, and layers whose role is ``reshaping``, ``mixing`` or
    ``opaque``.

    Example:
        >>> channel_problem(tf_keras.layers.DepthwiseConv2D(3, depth_multiplier=2))
        'depth_multiplier=2 gives several output channels per input channel'
    """
    owner = engine_of(layer)
    layer = owner.unwrap(layer)
    role = _channel_role(layer, owner)
    entry = _spec(layer, owner)
    name = type(layer).__name__
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"data_format={layer.data_format!r}: only channels_last is supported"
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups}: grouped convolutions mix channel blocks"
    if entry.depthwise and getattr(layer, "depth_multiplier", 1) != 1:
        return (f"depth_multiplier={layer.depth_multiplier} gives several output channels "
                "per input channel")
    if entry.per_channel:
        axes = list(layer.axis) if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        rank = len(owner.input_shape(layer)) if layer.built else None
        if axes not in ([-1], [rank - 1] if rank else [-1]):
            shown = axes[0] if len(axes) == 1 else axes
            return f"it normalises axis {shown}, not the channel (last) axis"
    if role == "attention":
        config = layer.get_config()
        if config.get("use_gate"):
            return "use_gate=True: kprune does not slice the attention gate's heads yet"
        shape = config.get("output_shape")
        if isinstance(shape, (list, tuple)) and len(shape) != 1:
            return f"output_shape={tuple(shape)}: several output axes are not followed"
    if entry is KERAS3_OPS["GetItem"]:
        return owner.get_item_problem(layer)
    if role == "mixing":
        return "it normalises over all channels (softmax), so removing some changes the others"
    if role == "reshaping":
        return f"{name} moves channels to other positions, which kprune does not follow"
    if role == "opaque":
        return f"{name} is not a layer kprune knows what does to channels"
    if role == "concatenating":
        rank = len(owner.output_shape(layer))
        if layer.axis not in (-1, rank - 1):
            return f"it concatenates along axis {layer.axis}, not the channel (last) axis"
    return ""


def rescales_inputs(model):
    """True when ``model`` scales its own inputs (a ``Rescaling`` or ``Normalization`` layer).

    Example:
        >>> rescales_inputs(tf_keras.Sequential([tf_keras.layers.Rescaling(1 / 255)]))
        True
    """
    from kprune.engines.tfkeras import loader

    return any(spec(layer).rescales for _, layer in loader.iter_layers(model))


def _registry_labels(layer, owner):
    """The registry's attribute paths of the weights ``layer`` prunes (None: unsupported),
    as its engine ``owner`` reads them: tfmot's registry on tf_keras; on Keras 3,
    :data:`KERAS3_PRUNED` for the built-in class it is pruned as (``[]`` for the other
    built-in layers :data:`SPECS` knows)."""
    builtin = _builtin_class(layer, owner)
    table = None if builtin is None else list(KERAS3_PRUNED.get(builtin.__name__, ()))
    return owner.registry_labels(layer, table)


def _resolve(layer, label):
    """Follow ``a.b[0].c`` from ``layer`` to the variable it names."""
    obj = layer
    for part in label.split("."):
        name, _, index = part.partition("[")
        obj = getattr(obj, name)
        if index:
            obj = obj[int(index.rstrip("]"))]
    return obj


def prunable_weights(layer):
    """The weights pruning acts on in ``layer``, as tfmot decides: a tuple of :class:`PrunableWeight`.

    A pruning wrapper answers with the weights of the layer it wraps (the variables the
    masks multiply). Unbuilt layers and layers tfmot cannot prune give ``()``.

    Example:
        >>> [w.label for w in prunable_weights(mha)]
        ['_query_dense.kernel', '_key_dense.kernel', '_value_dense.kernel', '_output_dense.kernel']
    """
    return _prunable_weights(layer, engine_of(layer))


def _prunable_weights(layer, owner):
    layer = owner.unwrap(layer)
    if not layer.built:
        return ()
    if owner.declares_prunable_weights(layer):  # a tfmot PrunableLayer names its own
        return tuple(PrunableWeight(label, variable)
                     for label, variable in owner.declared_prunable_weights(layer))
    labels = _registry_labels(layer, owner)
    if not labels:
        return ()
    return tuple(PrunableWeight(label, _resolve(layer, label)) for label in labels)


def is_prunable(layer):
    """True when tfmot can prune ``layer`` and it has at least one weight to prune."""
    return bool(prunable_weights(layer))


def not_pruned_reason(layer):
    """Why ``layer`` has nothing to prune ("" when it has), in words for a plan table.

    Example:
        >>> not_pruned_reason(tf_keras.layers.BatchNormalization())   # built
        'not pruned: no kernel'
    """
    return _not_pruned_reason(layer, engine_of(layer))


def _not_pruned_reason(layer, owner):
    if _prunable_weights(layer, owner):
        return ""
    inner = owner.unwrap(layer)
    entry = _spec(inner, owner)
    if entry.note and entry.kind == "depthwise":
        return entry.note.format(pruner=pruner(inner))
    if not inner.weights:
        return "no weights"
    if _registry_labels(inner, owner) is None and entry is not _CUSTOM:
        return owner.unregistered_reason(inner, KERAS3_PRUNED)
    return "not pruned: no kernel"


def effective_weights(layer):
    """``(label, values)`` of each prunable weight as it acts in the forward pass, as numpy.

    For a pruning wrapper the values are ``weight * mask``; for a plain layer the weights.
    """
    owner = engine_of(layer)
    weights = _prunable_weights(layer, owner)
    values = [np.asarray(w.variable.numpy()) for w in weights]
    values = owner.masked_values(layer, weights, values)
    return tuple((w.label, v) for w, v in zip(weights, values))


def _einsum_input_axis(layer):
    """``(axis, problem)``: the kernel axis an ``EinsumDense``'s equation contracts with its
    input (negative, as :data:`N_M_AXIS`), or None and why there is no single one.

    Example:
        >>> _einsum_input_axis(keras.layers.EinsumDense("abc,cde->abde", (None, 4, 8)))
        (-3, '')
    """
    equation = layer.equation.replace("...", "")
    inputs, _, output = equation.partition("->")
    source, _, kernel = inputs.partition(",")
    contracted = [c for c in kernel if c in source and c not in output]
    if len(contracted) != 1:
        return None, (f"its equation {layer.equation!r} contracts {len(contracted)} kernel axes "
                      f"({', '.join(contracted) or 'none'}) with the input: N:M needs one")
    return kernel.index(contracted[0]) - len(kernel), ""


def n_m_axis(layer):
    """The axis of ``layer``'s prunable weights that N:M groups run along: the input channels
    of a kernel (:data:`N_M_AXIS`), or for an ``EinsumDense`` the kernel axis its equation
    contracts with the input.

    Example:
        >>> n_m_axis(keras.layers.Dense(4))
        -2
    """
    owner = engine_of(layer)
    inner = owner.unwrap(layer)
    if _spec(inner, owner) is SPECS["EinsumDense"]:
        axis, problem = _einsum_input_axis(inner)
        if problem:
            raise ValueError(f"{inner.name!r} cannot take N:M: {problem}")
        return axis
    return N_M_AXIS


def n_m_problem(layer, n, m):
    """Why ``n:m`` sparsity cannot apply to ``layer`` ("" when it can).

    tfmot groups N:M along axis -2 of rank-2 and rank-4 weights only (a Keras kernel's
    input channels), so a layer can take it when every prunable weight has that rank and
    a multiple of ``m`` (at least ``m``) along that axis. An ``EinsumDense`` (Keras 3)
    groups along the kernel axis its equation contracts with the input, whatever its rank.

    Example:
        >>> n_m_problem(first_conv, 2, 4)
        '1 input channel < group size 4'
    """
    owner = engine_of(layer)
    entry = _spec(layer, owner)
    weights = _prunable_weights(layer, owner)
    if not weights:
        return _not_pruned_reason(layer, owner) or "nothing to prune"
    inner = owner.unwrap(layer)
    if not entry.n_m:
        return f"{type(inner).__name__}: {entry.note.format(pruner=pruner(layer))}"
    einsum = entry is SPECS["EinsumDense"]
    axis, problem = _einsum_input_axis(inner) if einsum else (N_M_AXIS, "")
    if problem:
        return problem
    for weight in weights:
        rank = len(weight.shape)
        if rank not in (2, 4) and not einsum:
            return (f"{weight.label} has rank {rank}; {pruner(layer)} groups N:M only in rank-2 "
                    "and rank-4 weights")
        channels = weight.shape[axis]
        if channels < m:
            return f"{channels} input channel{'s' if channels != 1 else ''} < group size {m}"
        if channels % m:
            return f"{channels} input channels is not a multiple of {m}"
    return ""


def block_problem(layer, block):
    """Why ``block`` (a ``(rows, columns)`` block of zeros) cannot apply to ``layer`` ("" when
    it can).

    tfmot prunes blocks only in 2-dimensional weights (a Dense kernel ``[inputs, outputs]``,
    an Embedding's table); a conv kernel (rank 4) or attention's rank-3 kernels cannot
    take them.

    Example:
        >>> block_problem(conv, (16, 1))
        'kernel has rank 4; tfmot prunes blocks only in 2-dimensional weights'
    """
    owner = engine_of(layer)
    weights = _prunable_weights(layer, owner)
    if not weights:
        return _not_pruned_reason(layer, owner) or "nothing to prune"
    for weight in weights:
        if len(weight.shape) != 2:
            return (f"{weight.label} has rank {len(weight.shape)}; {pruner(layer)} prunes blocks "
                    "only in 2-dimensional weights")
    return ""


def tied_note(layer):
    """What a plan row says of an embedding whose table is also the output projection
    (KerasHub's ``ReversibleEmbedding(tie_weights=True)``): pruning it prunes both.

    Example:
        >>> tied_note(gpt2_backbone.get_layer("token_embedding"))
        'tied: also the output projection (reverse=True)'
    """
    owner = engine_of(layer)
    inner = owner.unwrap(layer)
    if _spec(inner, owner).kind == "embedding" and getattr(inner, "tie_weights", False):
        return "tied: also the output projection (reverse=True)"
    return ""


def weight_layers(model):
    """``(path, layer)`` of every layer that may hold weights to prune: the leaf layers of
    :func:`model_layers` and, on Keras 3, the layers inside custom layers (a KerasHub
    ``TransformerDecoder``'s ``feedforward_intermediate_dense``), depth first, at their
    path ``outer/custom/inner``. Built-in layers (``MultiHeadAttention`` included) are not
    entered: the registry says what they prune. Inside a pruning wrapper, each layer it
    masks comes as its masked view (``layer.layer``, ``layer.masks``).

    Example:
        >>> [path for path, _ in weight_layers(gpt2_classifier)][4:6]
        ['gpt2_backbone/transformer_layer_0', 'gpt2_backbone/transformer_layer_0/self_attention']
    """
    owner = engine_of(model)
    found = _model_layers(model, owner)
    return owner.with_nested_layers(found, lambda layer: _builtin_class(layer, owner) is None)


def shared_weights(found):
    """``{path: reason}`` for the layers of ``found`` (``(path, layer)`` pairs) whose prunable
    variable another layer before them prunes too (tied weights): one variable cannot take
    two masks.

    Example:
        >>> shared_weights(weight_layers(model))
        {'decoder/out': 'kernel is shared with encoder/in: a shared variable cannot take two masks'}
    """
    owners, shared = {}, {}
    for path, layer in found:
        for weight in prunable_weights(layer):
            first = owners.setdefault(id(weight.variable), path)
            if first != path and path not in shared:
                shared[path] = (f"{weight.label} is shared with {first}: a shared variable "
                                "cannot take two masks")
    return shared
