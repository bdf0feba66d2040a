"""The channel dependency graph of a model: which channels must be removed together.

A filter of a convolution cannot be removed alone when a residual ``Add`` sums it with
another convolution's filter: both go, with the batch norms after them and the matching
input channels of every layer that reads the sum. This module follows the layer graph
(never the names) and joins, with union-find, every tensor's channels to the channels they
must stay aligned with:

- a *producer* (``Dense``, ``Conv``) starts a new channel set: its output units ("out");
  the producers that read it lose the matching inputs ("in");
- a *channelwise* layer (batch norm, activations, pooling, ``DepthwiseConv2D``) keeps the
  set; batch norm and depthwise weights are sliced with it ("channelwise");
- a *coupling* layer (``Add``, ``Multiply``, ...) joins its inputs' sets into one; an input
  with one channel is broadcast (squeeze-and-excite gates of shape ``(N, 1, 1, C)`` or
  ``(N, C)`` have C channels and are joined to the feature map they scale, so the gate's
  Dense loses outputs and the squeeze's first Dense inputs);
- ``Concatenate`` stacks its inputs' sets, each at its offset (a concatenation added to
  one producer's output splits that producer's set into matching pieces);
- ``Flatten`` maps channel ``c`` at position ``p`` to input ``p * C + c`` of the next Dense;
- a ``MultiHeadAttention`` reads its query, key and value tensors ("in", each its own:
  cross-attention couples them apart), makes its output channels ("out") and adds a group
  of its heads ("heads", id ``"<layer>/heads"``; one head is never removed), see
  :mod:`kprune.structural.heads`;
- a KerasHub ``TransformerEncoder``/``TransformerDecoder`` passes the residual stream
  through (left whole: kprune does not slice ``hidden_dim`` inside it) and adds two groups:
  its heads ("heads", ``"<layer>/heads"``) and its feed-forward neurons ("neurons",
  ``"<layer>/neurons"``), see :mod:`kprune.structural.hub_blocks`;
- a Keras 3 ``x[key]`` (``GetItem``) that keeps the channel axis whole is channelwise;
- anything else (``Reshape`` of the channel axis, ``Lambda``, softmax) refuses its channels,
  and so do the model's inputs and outputs (never removable).

Example:
    >>> from kprune import structural
    >>> print(structural.groups(model))        # one row per coupled channel set
    >>> structural.groups(model)["conv1"].members
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kprune.core import layers
from kprune.engines import engine_of
from kprune.engines.graph_reader import read
from kprune.structural import heads, hub_blocks
from kprune.structural.nesting import follows_nesting

__all__ = ["Member", "Group", "Groups", "groups"]


@dataclass(frozen=True)
class Member:
    """One layer's part in a group.

    ``role``: "out" (a producer whose output units are the group's channels), "in" (a
    producer whose inputs are), "channelwise" (batch norm or depthwise weights sliced with
    them), "heads" (an attention layer or KerasHub block whose heads are the group's units),
    "neurons" (a KerasHub block whose feed-forward neurons are). The group's channel ``c`` is index ``offset + c`` of that layer's channel axis
    (``axis``, of its kernel), or ``p * channels + offset + c`` for each of ``positions``
    flattened positions.
    """

    layer: str
    role: str
    axis: int
    offset: int = 0
    positions: int = 1
    channels: int = 0

    def __str__(self):
        where = f"@{self.offset}" if self.offset else ""
        flat = f" x{self.positions} flat" if self.positions > 1 else ""
        return f"{self.layer}:{self.role}{where}{flat}"


@dataclass
class Group:
    """A set of channels removed together: ``size`` channels, the layers they run through."""

    id: str
    size: int
    members: list = field(default_factory=list)
    removable: bool = True
    reason: str = ""
    node: int = -1  # the union-find root (internal)

    def layers(self, role=None):
        """The names of the member layers (with ``role`` only, if given)."""
        return [m.layer for m in self.members if role in (None, m.role)]


class Groups:
    """The groups of a model, in graph order; ``groups[id]`` finds one, ``print`` shows all.

    A group's id is the name of its first producer (``"input:x"`` for a model input;
    ``"conv[0:16]"`` for a piece of a producer's channels split by a concatenation).

    Example:
        >>> gs = groups(model)
        >>> gs["conv1"].size, gs["conv1"].removable, gs.of_producer("proj").id
        (64, True, 'conv1')
    """

    def __init__(self, model, graph, items):
        self.model = model
        self.graph = graph
        self._items = items
        self._by_id = {g.id: g for g in items}

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)

    def __getitem__(self, key):
        if isinstance(key, int):
            return self._items[key]
        if key not in self._by_id:
            from kprune.core.checks import did_you_mean

            raise KeyError(f"No group {key!r} in model {self.model.name!r}."
                           f"{did_you_mean(key, self.ids)} Groups: {self.ids}")
        return self._by_id[key]

    def __contains__(self, key):
        return key in self._by_id

    @property
    def ids(self):
        return list(self._by_id)

    def of_producer(self, name):
        """The group whose "out" members include producer ``name`` (None if none)."""
        for group in self._items:
            if name in group.layers("out"):
                return group
        return None

    def __str__(self):
        from kprune.core.table import table

        rows = [(g.id, str(g.size), "yes" if g.removable else "no",
                 ", ".join(map(str, g.members)) or "-", g.reason) for g in self._items]
        return table(("group", "channels", "removable", "members", "why not"), rows)

    __repr__ = __str__


@follows_nesting
def groups(model):
    """The coupled channel groups of a Sequential or functional ``model`` (tf_keras or
    Keras 3: the same groups for the same architecture).

    Example:
        >>> gs = groups(resnet)
        >>> gs.of_producer("conv2_block1_0_conv").layers("out")
        ['conv2_block1_0_conv', 'conv2_block1_3_conv', 'conv2_block2_3_conv', ...]
    """
    return _Graph(model).groups()


# -- internals ---------------------------------------------------------------------


def _check_operations(engine, model):
    """Refuse the ``keras.ops`` functions of ``model``'s graph that are not layers (Keras 3)
    and that kprune does not follow (:data:`kprune.core.layers.KERAS3_OPS`)."""
    layer_class = engine.keras.layers.Layer
    for operation in engine.graph_operations(model):
        if not isinstance(operation, layer_class) and type(
                operation).__name__ not in layers.KERAS3_OPS:
            raise ValueError(
                f"Cannot follow the channels of model {model.name!r}: it calls operation "
                f"{operation.name!r} ({type(operation).__name__}, a `keras.ops` function), "
                "not a layer. Structural pruning follows layers only: use the matching "
                "layer (e.g. `keras.layers.Add`, `keras.layers.Activation`) instead."
            )


@dataclass(frozen=True)
class _Channels:
    """A tensor's channel axis: segments ``(node, size)`` one after the other, and how
    many flattened positions repeat them (1 unless a Flatten came before)."""

    segments: tuple
    positions: int = 1

    @property
    def size(self):
        return sum(size for _, size in self.segments)

    def offsets(self):
        offset = 0
        for node, size in self.segments:
            yield node, size, offset
            offset += size


def _shifted(member, start):
    """``member`` for the piece of its channels that starts ``start`` channels in."""
    return Member(member.layer, member.role, member.axis, member.offset + start,
                  member.positions, member.channels)


class _Graph:
    """Union-find over channel sets, built by walking the model's layers in graph order."""

    def __init__(self, model):
        self.engine = engine_of(model)
        self.engine.check_model(model)
        self.model = model
        self.keras = self.engine.keras
        self.parent, self.size, self.label = [], [], []
        self.fixed, self.refused = {}, {}  # node -> reasons (not removable / refused)
        self.members = []  # (node, Member)
        self.readers = []  # (node, offset, tensor key): tensors read by "in" members
        self.desc = {}  # tensor key -> _Channels
        self.steps = []  # (layer, input keys, output keys) in graph order
        self.treated = {}  # layer name -> the role it was followed as, or "refused"
        self.retired = set()  # nodes split into pieces (see _split)
        self.sums = []  # (node, name of an Add that joins it to other channels)
        self.attention = {}  # attention layer -> ({part: input tensor key}, heads node)
        self.blocks = {}  # KerasHub block -> (heads node, neurons node)
        self._walk()
        self._group_list = None

    # union-find
    def new(self, label, size):
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.label.append(label)
        return len(self.parent) - 1

    def find(self, node):
        while self.parent[node] != node:
            self.parent[node] = self.parent[self.parent[node]]
            node = self.parent[node]
        return node

    def union(self, a, b):
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[max(a, b)] = min(a, b)  # the earlier node stays the root

    def block(self, desc, reason, *, refuse=True):
        book = self.refused if refuse else self.fixed
        for node, _, _ in desc.offsets():
            book.setdefault(node, []).append(reason)

    # the layer graph
    def _walk(self):
        keras, model = self.keras, self.model
        _check_operations(self.engine, model)
        self.reader = read(model)
        for name, times in self.reader.times.items():
            if times != 1:
                raise ValueError(
                    f"Cannot follow the channels of model {model.name!r}: layer {name!r} is "
                    f"called {times} times in it (a shared layer); structural pruning needs "
                    "each layer used once.")
        for call in self.reader.calls:
            layer, inputs, outputs = call.layer, list(call.inputs), list(call.outputs)
            if isinstance(layer, keras.layers.InputLayer):  # a Sequential's is unnamed
                name = "input" if isinstance(model, keras.Sequential) else layer.name
                shape = layers.output_shape(layer)
                shape = shape[0] if isinstance(shape, list) else shape
                node = self.new(f"input:{name}", 1 if shape[-1] is None else shape[-1])
                self.desc[outputs[0]] = _Channels(((node, self.size[node]),))
                self.block(self.desc[outputs[0]], f"model input {name!r}", refuse=False)
                self.steps.append((layer, inputs, outputs))
                continue
            if isinstance(layer, keras.Model):
                raise ValueError(
                    f"Structural pruning follows the channels of one model's layers; layer "
                    f"{layer.name!r} is a nested {type(layer).__name__} model. Rebuild the "
                    "model with its layers inline (no model called as a layer)."
                )
            if layers.unwrap(layer) is not layer:
                raise ValueError(
                    f"Structural pruning needs plain layers; layer {layer.name!r} is a "
                    "pruning wrapper. Strip pruning wrappers first (kprune.verify.strip)."
                )
            self.steps.append((layer, inputs, outputs))
            self._layer(layer, [self.desc[key] for key in inputs], outputs, inputs)
        for key in self.reader.outputs:
            self.block(self.desc[key], f"model output {key[0]!r}", refuse=False)

    def _fresh(self, layer, outputs, reason=None):
        shapes = layers.output_shape(layer)
        shapes = shapes if isinstance(shapes, list) else [shapes]
        for key, shape in zip(outputs, shapes):
            channels = shape[-1] if len(shape) > 1 and shape[-1] is not None else 1
            node = self.new(f"output:{layer.name}", channels)
            self.desc[key] = _Channels(((node, channels),))
            if reason:
                self.block(self.desc[key], reason)

    def _refuse(self, layer, ins, outputs, why):
        reason = f"layer {layer.name!r} ({type(layer).__name__}): {why}"
        self.treated[layer.name] = "refused"
        for desc in ins:
            self.block(desc, reason)
        self._fresh(layer, outputs, reason)

    def _layer(self, layer, ins, outputs, inputs):
        role = layers.channel_role(layer)
        entry = layers.spec(layer)
        problem = layers.channel_problem(layer)
        self.treated[layer.name] = role
        if role == "mixing":  # the same channels, but none can go: refuse them
            self.desc[outputs[0]] = ins[0]
            self.block(ins[0], f"layer {layer.name!r} ({type(layer).__name__}): {problem}")
            return
        if problem:
            return self._refuse(layer, ins, outputs, problem)
        if len(outputs) != 1:
            return self._refuse(layer, ins, outputs, "it has several outputs")
        out = outputs[0]
        if role == "producer":
            if entry.units is None or len(ins) != 1:
                return self._refuse(layer, ins, outputs,
                                    "kprune does not slice this layer's weights yet")
            desc = ins[0]
            if desc.positions > 1 and entry.layout:
                return self._refuse(layer, ins, outputs, "it follows a Flatten")
            axis_in, axis_out = (-1, -2) if entry.layout == "transposed" else (-2, -1)
            for node, _, offset in desc.offsets():
                member = Member(layer.name, "in", axis_in, offset, desc.positions, desc.size)
                self.members.append((node, member))
                self.readers.append((node, offset, inputs[0]))
            node = self.new(f"output:{layer.name}", getattr(layer, entry.units))
            self.members.append(
                (node, Member(layer.name, "out", axis_out, 0, 1, self.size[node])))
            self.desc[out] = _Channels(((node, self.size[node]),))
        elif role == "channelwise":
            desc = ins[0]
            if len(ins) != 1:
                return self._refuse(layer, ins, outputs, "it has several inputs")
            weights = getattr(layer, "weights", ())  # a keras.ops function has none
            if weights and not (entry.per_channel or entry.depthwise):
                return self._refuse(layer, ins, outputs,
                                    "its weights are not sliced by kprune")
            if desc.positions > 1 and (weights or type(layer).__name__ == "Reshape"):
                return self._refuse(layer, ins, outputs, "it follows a Flatten")
            if entry.per_channel or entry.depthwise:
                axis = -2 if entry.depthwise else -1
                for node, _, offset in desc.offsets():
                    self.members.append(
                        (node, Member(layer.name, "channelwise", axis, offset, 1, desc.size)))
            self.desc[out] = desc
        elif role == "coupling":
            shape = layers.output_shape(layer)
            joined = [d for d in ins if not (d.size == 1 and shape[-1] != 1)]  # broadcast
            if (len({d.size for d in joined}) != 1
                    or len({d.positions for d in joined}) != 1):
                return self._refuse(layer, ins, outputs,
                                    "its inputs' channels are not aligned one to one")
            keys = [key for key, d in zip(inputs, ins) if any(d is j for j in joined)]
            self._align(keys)  # e.g. a Concatenate's output added to one conv's
            joined = [self.desc[key] for key in keys]
            first = joined[0]
            for desc in joined[1:]:
                for (a, _), (b, _) in zip(first.segments, desc.segments):
                    self.union(a, b)
            if entry.sums:
                self.sums.append((first.segments[0][0], layer.name))
            self.desc[out] = first
        elif role == "attention":
            return self._attention(layer, ins, out, inputs)
        elif role == "block":
            return self._block(layer, ins, out)
        elif role == "concatenating":
            if any(d.positions > 1 for d in ins):
                return self._refuse(layer, ins, outputs, "it follows a Flatten")
            self.desc[out] = _Channels(tuple(s for d in ins for s in d.segments))
        elif role == "flattening":
            desc = ins[0]
            if desc.positions > 1:
                return self._refuse(layer, ins, outputs, "it follows another Flatten")
            positions = int(np.prod(layers.input_shape(layer)[1:-1], dtype=np.int64))
            self.desc[out] = _Channels(desc.segments, positions)
        else:  # pragma: no cover - every role is handled above
            return self._refuse(layer, ins, outputs, f"role {role!r}")

    def _attention(self, layer, ins, out, inputs):
        """A MultiHeadAttention: its query/key/value projections read their inputs ("in"),
        its output projection makes its output channels ("out"), and its heads are a
        group of their own ("heads"; see :mod:`kprune.structural.heads`)."""
        call = self.reader.call_of(layer)
        parts, rest = heads.inputs_of(call.args, call.kwargs)
        keys = {part: self.reader.key(tensor) for part, tensor in parts.items()}
        for key in {self.reader.key(tensor) for tensor in rest}:
            self.block(self.desc[key], f"layer {layer.name!r} ({type(layer).__name__}): "
                       "it reads this tensor as a mask")
        for part in ("query", "key", "value"):
            desc = self.desc[keys[part]]
            if desc.positions > 1:
                return self._refuse(layer, ins, [out], "it follows a Flatten")
            for node_id, _, offset in desc.offsets():
                member = Member(layer.name, "in", 0, offset, 1, desc.size)
                if (node_id, member) not in self.members:  # self-attention: query = key
                    self.members.append((node_id, member))
                self.readers.append((node_id, offset, keys[part]))
        count = heads.num_heads(layer)
        head_node = self.new(f"{layer.name}/heads", count)
        self.members.append((head_node, Member(layer.name, "heads", 1, 0, 1, count)))
        if count == 1:
            self.block(_Channels(((head_node, 1),)), f"layer {layer.name!r} has one head, "
                       "which is never removed (an attention layer keeps at least one)",
                       refuse=False)
        self.attention[layer.name] = (keys, head_node)
        channels = layers.output_shape(layer)[-1]
        node_out = self.new(f"output:{layer.name}", channels)
        self.members.append((node_out, Member(layer.name, "out", -1, 0, 1, channels)))
        self.desc[out] = _Channels(((node_out, channels),))

    def _block(self, layer, ins, out):
        """A KerasHub transformer block: the residual stream (its first input) goes through
        it, whole; its heads and its feed-forward neurons are groups of their own ("heads",
        "neurons"; see :mod:`kprune.structural.hub_blocks`). Its other inputs (masks, an
        encoder sequence) are left whole."""
        call = self.reader.call_of(layer)
        stream_key = call.inputs[0]
        stream = self.desc[stream_key]
        what = f"layer {layer.name!r} ({type(layer).__name__})"
        if stream.positions > 1:
            return self._refuse(layer, ins, [out], "it follows a Flatten")
        for key in dict.fromkeys(call.inputs[1:]):
            if key != stream_key:
                self.block(self.desc[key], f"{what}: it reads this tensor as a mask or "
                           "encoder sequence")
        self.block(stream, f"{what}: kprune does not slice hidden_dim inside a KerasHub "
                   "block (its heads and neurons are groups of their own)")
        for node_id, _, offset in stream.offsets():  # it reads and writes the stream
            for role, axis in (("in", 0), ("out", -1)):
                self.members.append((node_id, Member(layer.name, role, axis, offset, 1,
                                                     stream.size)))
        self.sums.append((stream.segments[0][0], layer.name))  # x + attention, x + ffn
        count = heads.num_heads(layer)
        head_node = self.new(f"{layer.name}/heads", count)
        self.members.append((head_node, Member(layer.name, "heads", 1, 0, 1, count)))
        fixed = hub_blocks.cross_attention_problem(layer)
        if count == 1:
            fixed = (f"layer {layer.name!r} has one head, which is never removed (an "
                     "attention layer keeps at least one)")
        if fixed:
            self.block(_Channels(((head_node, count),)), fixed, refuse=False)
        neurons = hub_blocks.num_neurons(layer)
        neuron_node = self.new(f"{layer.name}/neurons", neurons)
        self.members.append((neuron_node, Member(layer.name, "neurons", -1, 0, 1, neurons)))
        self.blocks[layer.name] = (head_node, neuron_node)
        self.desc[out] = stream

    def _align(self, keys):
        """Split channel sets until the tensors ``keys`` have their segments at the same
        offsets (a concatenation of two sets added to a single set splits the latter)."""
        while True:
            descs = [self.desc[key] for key in keys]
            cuts = sorted({offset for d in descs for _, _, offset in d.offsets()} - {0})
            found = [(node, [c - offset for c in cuts if offset < c < offset + size])
                     for d in descs for node, size, offset in d.offsets()]
            found = [(node, inside) for node, inside in found if inside]
            if not found:
                return
            self._split(self.find(found[0][0]), found[0][1])

    def _split(self, root, cuts):
        """Split every node of ``root``'s set at relative offsets ``cuts`` into pieces."""
        bounds = [0, *cuts, self.size[root]]
        pieces = list(zip(bounds[:-1], bounds[1:]))
        nodes = [n for n in range(len(self.parent))
                 if n not in self.retired and self.find(n) == root]
        parts = {}
        for node in nodes:
            parts[node] = [(self.new(f"{self.label[node]}[{a}:{b}]", b - a), b - a, a)
                           for a, b in pieces]
            for piece, _, _ in parts[node]:
                for book in (self.fixed, self.refused):
                    if node in book:
                        book[piece] = list(book[node])
            self.retired.add(node)
        for node in nodes[1:]:
            for (a, _, _), (b, _, _) in zip(parts[nodes[0]], parts[node]):
                self.union(a, b)
        self.members = [
            (piece, _shifted(member, start)) if node in parts else (node, member)
            for node, member in self.members
            for piece, _, start in (parts.get(node) or [(node, 0, 0)])]
        self.readers = [
            (piece, offset + start, key) if node in parts else (node, offset, key)
            for node, offset, key in self.readers
            for piece, _, start in (parts.get(node) or [(node, 0, 0)])]
        for key, desc in self.desc.items():
            if any(node in parts for node, _ in desc.segments):
                segments = tuple(
                    (piece, size) for node, old in desc.segments
                    for piece, size, _ in (parts.get(node) or [(node, old, 0)]))
                self.desc[key] = _Channels(segments, desc.positions)

    # groups
    def groups(self):
        if self._group_list is not None:
            return self._group_list
        by_root = {}
        for node in range(len(self.parent)):
            if node not in self.retired:
                by_root.setdefault(self.find(node), []).append(node)
        members = {}
        for node, member in self.members:
            members.setdefault(self.find(node), []).append(member)
        items = []
        used = set()
        for root, nodes in by_root.items():
            outs = [m for m in members.get(root, []) if m.role in ("out", "heads", "neurons")]
            gid = outs[0].layer if outs else self.label[root]
            if outs and outs[0].role in ("heads", "neurons"):
                gid += "/" + outs[0].role
            if outs and (outs[0].offset or outs[0].channels != self.size[root]):
                gid += f"[{outs[0].offset}:{outs[0].offset + self.size[root]}]"  # a piece
            while gid in used:
                gid += "'"
            used.add(gid)
            fixed = [r for n in nodes for r in self.fixed.get(n, [])]
            refused = [r for n in nodes for r in self.refused.get(n, [])]
            reasons = list(dict.fromkeys(fixed + refused))
            if not outs and not reasons:
                reasons = ["no layer makes these channels"]
            if len(reasons) > 2:
                reasons = [*reasons[:2], f"and {len(reasons) - 2} more"]
            items.append(Group(gid, self.size[root], members.get(root, []),
                               removable=not reasons, reason="; ".join(reasons), node=root))
        self._group_list = Groups(self.model, self, items)
        return self._group_list

    def describe(self, group):
        """``(layers making the group's channels, what it is)``: e.g. ``(['embed', 'mha_1',
        ...], 'residual stream through add_1, add_2')`` for a group summed by ``Add``."""
        nodes = [n for n in range(len(self.parent))
                 if n not in self.retired and self.find(n) == group.node]
        makers = [self.label[n].split(":", 1)[1].split("[")[0] for n in nodes
                  if self.label[n].startswith("output:")]
        adds = [name for node, name in self.sums if self.find(node) == group.node]
        what = f"residual stream through {', '.join(adds)}" if adds else ""
        return list(dict.fromkeys(makers)), what

    def is_refused_only(self, group):
        """True when ``group`` has producers and only refusing layers stop its removal."""
        nodes = [n for n in range(len(self.parent))
                 if n not in self.retired and self.find(n) == group.node]
        return (bool(group.layers("out")) and not any(n in self.fixed for n in nodes)
                and any(n in self.refused for n in nodes))
