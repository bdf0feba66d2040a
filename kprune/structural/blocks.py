"""Residual and transformer blocks: find them in the graph and drop them whole.

``unit="add"`` (the default): every ``Add([shortcut, branch])`` is a block. A block whose
shortcut is the identity (the branch starts from the very tensor that also feeds the
``Add``) becomes the identity when its branch is dropped: the ``Add``'s output is replaced
by the shortcut, and the branch's layers disappear. Blocks whose shortcut is a projection
(a convolution), whose ``Add`` has more than two inputs, or whose branch also reads other
tensors are listed with the reason they cannot be dropped.

``unit="transformer"``: a block is a whole transformer block, attention and feed-forward
together, so that dropping it gives the model built without that block:

- in a functional transformer, an attention residual sub-block (an ``Add`` whose branch
  holds a ``MultiHeadAttention``) followed by the feed-forward sub-block whose shortcut is
  its output. Pre-LN (``x + mha(ln(x))``, then ``x + ffn(ln(x))``): the two Adds and
  their branches go. Post-LN (``ln_a(x + mha(x))``, then ``ln_f(h + ffn(h))``): the
  ``LayerNormalization`` after each ``Add`` goes too, so the next block reads the
  previous block's ``ln_f`` output unchanged. The block is named after its feed-forward
  ``Add`` (either of its Adds' names is accepted by :func:`drop_blocks`);
- each call of a KerasHub ``TransformerEncoder`` or ``TransformerDecoder`` layer (known by
  its class name; kprune never imports KerasHub), named after the layer. A KerasHub
  backbone itself (``BertBackbone``, ``GPT2Backbone``: a model whose config has
  ``num_layers``) is rebuilt from its config with ``num_layers - k`` and the kept
  blocks' weights copied in order, so that it keeps its class and saves and loads as
  ``.keras``; a functional model that calls such layers (a classifier around an
  inlined backbone) is rewired to skip the dropped calls.

The layer graph is read from the model's calls (:mod:`kprune.engines.graph_reader`,
never from names); the input model is never modified.

Example:
    >>> from kprune import structural
    >>> [b.name for b in structural.residual_blocks(resnet) if b.droppable][:2]
    ['conv2_block2_add', 'conv2_block3_add']
    >>> smaller = structural.drop_blocks(resnet, 2, criterion="sensitivity",
    ...                                  data=(x_val, y_val))
    >>> shorter = structural.drop_blocks(vit, 1, unit="transformer",
    ...                                  criterion="influence", data=x_calibration)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from kprune.core import layers
from kprune.core.calibration import calibration_batches
from kprune.core.checks import check_choice, did_you_mean
from kprune.engines.capture import to_numpy
from kprune.engines.graph_reader import fresh_layer, read
from kprune.structural.nesting import follows_nesting

__all__ = ["Block", "residual_blocks", "block_scores", "drop_blocks"]

CRITERIA = ("sensitivity", "l1", "influence")
UNITS = ("add", "transformer")
#: A residual branch holding one of these (or a layer the registry calls attention, such as
#: KerasHub's CachedMultiHeadAttention) is an attention sub-block.
ATTENTION_LAYERS = ("MultiHeadAttention", "GroupedQueryAttention")
#: The norms that follow each ``Add`` of a post-LN transformer block.
NORM_LAYERS = ("LayerNormalization", "RMSNormalization")


@dataclass(frozen=True)
class Block:
    """One block: its name, the layers that go with it, its shortcut, droppable or why not.

    ``branch`` lists the other layers that go when the block is dropped (graph order);
    ``shortcut`` names the layer whose output the block then passes on. ``kind`` is
    ``"add"`` (one residual ``Add``) or ``"transformer"`` (a whole transformer block);
    ``adds`` names the residual Adds a functional transformer block holds.
    """

    name: str
    branch: tuple = ()
    shortcut: str = ""
    droppable: bool = False
    reason: str = ""
    kind: str = "add"
    adds: tuple = ()

    def __str__(self):
        state = "droppable" if self.droppable else f"not droppable: {self.reason}"
        if self.kind == "add":
            return f"{self.name} ({len(self.branch)} branch layers, {state})"
        if not self.adds:  # a KerasHub block: one layer
            return f"{self.name} (KerasHub transformer layer, {state})"
        return f"{self.name} (transformer block of {len(self.branch) + 1} layers, {state})"


@follows_nesting
def residual_blocks(model, *, unit="add"):
    """Every block of functional ``model``, as a list of :class:`Block` (graph order).

    ``unit="add"``: every ``Add`` layer; ``unit="transformer"``: every transformer block
    (see the module's docstring).

    Example:
        >>> blocks = residual_blocks(tf_keras.applications.ResNet50(weights=None))
        >>> blocks[0].droppable, blocks[0].reason
        (False, 'shortcut is a projection (conv2_block1_0_conv)')
        >>> [b.name for b in residual_blocks(bert_backbone, unit="transformer")]
        ['transformer_layer_0', 'transformer_layer_1', 'transformer_layer_2']
    """
    check_choice(unit, UNITS, "unit")
    return _graph(model).find(unit)


@follows_nesting
def block_scores(model, *, criterion="sensitivity", data=None, batch_size=256, unit="add"):
    """``{block name: importance}`` for each droppable block (higher: more important).

    ``"sensitivity"``: the drop of validation accuracy (``data=(x_val, y_val)``) when that
    block alone is dropped. ``"l1"``: the mean ``|w|`` of the kernels of the layers that
    go with the block (no data needed). ``"influence"``: how much the block changes what
    flows through it, ``1 - cos(block input, block output)`` averaged over every position
    of the calibration inputs ``data`` (no labels; ShortGPT's block influence).

    Example:
        >>> block_scores(resnet, criterion="l1")
        {'conv2_block2_add': 0.031, ...}
        >>> block_scores(vit, criterion="influence", data=x, unit="transformer")
        {'add_f1': 0.41, 'add_f2': 0.12, ...}
    """
    check_choice(criterion, CRITERIA, "criterion")
    check_choice(unit, UNITS, "unit")
    graph = _graph(model)
    droppable = [b for b in graph.find(unit) if b.droppable]
    if criterion == "l1":
        scores = {}
        for block in droppable:
            values = [np.abs(values).ravel() for layer in graph.layers_of(block)
                      for _, values in layers.effective_weights(layer)]
            scores[block.name] = float(np.mean(np.concatenate(values))) if values else 0.0
        return scores
    if criterion == "influence":
        return _influence(model, graph, droppable, data, batch_size)
    x_val, y_val = _check_data(data, criterion)
    from kprune.engines.classifier import accuracy

    base = accuracy(model, x_val, y_val, batch_size=batch_size)
    return {block.name: base - accuracy(graph.rebuild([block]), x_val, y_val,
                                        batch_size=batch_size)
            for block in droppable}


@follows_nesting
def drop_blocks(model, blocks, *, criterion="sensitivity", data=None, batch_size=256,
                unit="add"):
    """A new model without ``blocks`` (each dropped block becomes the identity).

    ``blocks``: a list of block names, or a count: the ``count`` least important
    droppable blocks by ``criterion`` (see :func:`block_scores`; ``"sensitivity"`` needs
    ``data=(x_val, y_val)``, ``"influence"`` calibration inputs ``data=x``). ``unit``:
    ``"add"`` (each residual ``Add``) or ``"transformer"`` (whole transformer blocks;
    see the module's docstring). The new model is not compiled; ``model`` is left as it is.

    Example:
        >>> smaller = drop_blocks(resnet, ["conv2_block3_add", "conv3_block4_add"])
        >>> smaller = drop_blocks(resnet, 3, criterion="l1")
        >>> shorter = drop_blocks(bert_backbone, 1, unit="transformer",
        ...                       criterion="influence", data=x)
        >>> shorter.num_layers
        2
    """
    check_choice(criterion, CRITERIA, "criterion")
    check_choice(unit, UNITS, "unit")
    graph = _graph(model)
    found = graph.find(unit)
    by_name = {b.name: b for b in found}
    for block in found:  # a transformer block answers to either of its Adds
        by_name.update({add: block for add in block.adds if add not in by_name})
    droppable = [b for b in found if b.droppable]
    # a transformer keeps at least one of its blocks
    most = len(droppable) if unit == "add" else min(len(droppable), len(found) - 1)
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        if blocks < 1 or blocks > most:
            what = ("the number of droppable blocks" if unit == "add" else
                    f"one less than the {len(found)} transformer blocks (one must stay)")
            hint = ""
            if unit == "add" and not droppable and graph.find("transformer"):
                hint = " This model's blocks are transformer blocks: pass unit='transformer'."
            raise ValueError(
                f"Argument `blocks` must be a count between 1 and {what} "
                f"({most}: {[b.name for b in droppable]}). "
                f"Received: blocks={blocks!r}.{hint}")
        if criterion == "sensitivity":
            _check_data(data, criterion)
        elif criterion == "influence":
            _check_calibration(model, data, batch_size)  # checked first
        scores = block_scores(model, criterion=criterion, data=data, batch_size=batch_size,
                              unit=unit)
        order = sorted(droppable, key=lambda b: scores[b.name])  # stable: graph order on ties
        chosen = order[:blocks]
    else:
        names = [blocks] if isinstance(blocks, str) else blocks
        if not isinstance(names, (list, tuple)) or not names or not all(
                isinstance(n, str) for n in names):
            raise ValueError(
                f"Argument `blocks` must be a non-empty list of {_WHAT[unit]} names or a "
                f"positive count. Received: blocks={blocks!r}")
        chosen = []
        for name in dict.fromkeys(names):
            name = graph.shown.get(name, name)  # a pruning wrapper's name: the wrapped layer's
            if name not in by_name:
                what = (f"is not {'an' if unit == 'add' else 'a'} {_WHAT[unit]}"
                        if name in graph.own else "is not a layer of the model")
                listed = [b.name for b in found]
                raise ValueError(
                    f"Argument `blocks` names {name!r}, which {what}; the "
                    f"{'residual' if unit == 'add' else 'transformer'} blocks are {listed}."
                    f"{did_you_mean(name, by_name)} Received: blocks={blocks!r}")
            block = by_name[name]
            if not block.droppable:
                raise ValueError(
                    f"Block {name!r} cannot be dropped: {block.reason}. "
                    f"Received: blocks={blocks!r}")
            if block not in chosen:
                chosen.append(block)
        if unit == "transformer" and len(chosen) == len(found):
            raise ValueError(
                f"Argument `blocks` names all {len(found)} transformer blocks; one must stay. "
                f"Received: blocks={blocks!r}")
    return graph.rebuild(chosen)


_WHAT = {"add": "Add layer", "transformer": "transformer block"}


# -- internals ---------------------------------------------------------------------


def _graph(model):
    """The reader of ``model``'s blocks: a KerasHub backbone's or a functional graph's."""
    if not isinstance(model, layers.engine(model).keras.Sequential):
        config = model.get_config()
        if "layers" not in config and "num_layers" in config:
            hub = [layer for layer in model.layers if _is_hub_block(layer)]
            if hub and len(hub) == config["num_layers"]:
                return _Backbone(model, config, hub)
            raise ValueError(
                f"Model {model.name!r} ({type(model).__name__}) is built from its config "
                f"(num_layers={config['num_layers']}) but holds {len(hub)} KerasHub transformer "
                "layers, so kprune cannot tell which to drop. Build it functionally, or call "
                "its blocks in a functional model. Received: model of class "
                f"{type(model).__name__}")
    return _Graph(model)


def _class_name(layer):
    """The class name of ``layer`` (of the layer a pruning wrapper wraps)."""
    return type(layers.unwrap(layer)).__name__


def _is_hub_block(layer):
    """Whether ``layer`` is a KerasHub ``TransformerEncoder``/``TransformerDecoder`` (the
    registry's :data:`kprune.core.layers.HUB_BLOCKS`, checked by class and module)."""
    return layers.spec(layer).role == "block"


def _is_attention(layer):
    """Whether ``layer`` attends (a ``MultiHeadAttention``, KerasHub's cached one included,
    or a ``GroupedQueryAttention``)."""
    return layers.spec(layer).role == "attention" or _class_name(layer) in ATTENTION_LAYERS


def _check_calibration(model, data, batch_size):
    if data is None:
        raise ValueError("criterion='influence' compares each block's input and output on "
                         "calibration inputs: pass data=x (model inputs, no labels). "
                         "Received: data=None")
    return calibration_batches(model, data, batch_size=batch_size)


def _influence(model, graph, droppable, data, batch_size):
    """``{block: 1 - mean cos(block input, block output)}`` over the calibration positions."""
    batches = _check_calibration(model, data, batch_size)
    if not droppable:
        return {}
    tensors = [tensor for block in droppable for tensor in graph.ends(block)]
    inputs = model.input
    if not isinstance(inputs, dict):
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = layers.engine(model).keras.Model(inputs, tensors)
    total, count = np.zeros(len(droppable)), np.zeros(len(droppable))
    for batch in batches:
        found = [to_numpy(t) for t in probe(batch, training=False)]
        for index in range(len(droppable)):
            before, after = (found[2 * index + side].reshape(-1, found[2 * index].shape[-1])
                             .astype(np.float64) for side in (0, 1))
            norms = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
            cosine = np.sum(before * after, axis=1) / np.maximum(norms, 1e-12)
            total[index] += np.sum(1.0 - cosine)
            count[index] += len(cosine)
    return {block.name: float(total[i] / count[i]) for i, block in enumerate(droppable)}


def _check_data(data, criterion):
    if (not isinstance(data, (list, tuple)) or len(data) != 2
            or any(part is None for part in data)):
        raise ValueError(
            f"Argument `data` must be (x_val, y_val) when choosing blocks by "
            f"criterion={criterion!r} (or use criterion='l1'). "
            f"Received: data={type(data).__name__ if data is not None else None}")
    return data


class _Graph:
    """The tensors of a functional model (:mod:`kprune.engines.graph_reader`): who makes
    each, who reads each."""

    def __init__(self, model):
        self.engine = layers.engine(model)  # tf_keras or Keras 3: the model's own
        self.engine.check_model(model)  # nested models: inlined by the public functions
        self.model = model
        self.sequential = isinstance(model, self.engine.keras.Sequential)
        self.reader = read(model)
        self.layer = {c.layer.name: c.layer for c in self.reader.calls}  # graph order
        # names as kprune shows them (a pruning wrapper: the wrapped layer's), both ways
        self.shown = {n: self.engine.layer_name(layer) for n, layer in self.layer.items()}
        self.own = {shown: n for n, shown in self.shown.items()}
        self.inputs = {c.key: list(dict.fromkeys(c.inputs)) for c in self.reader.calls}
        self.readers = self.reader.readers  # tensor key -> [(layer, call)]
        self.outputs = set(self.reader.outputs)
        self.times = self.reader.times
        self.order = {name: i for i, name in enumerate(self.layer)}

    def find(self, unit):
        """The blocks of ``unit`` (graph order); remembers how to drop each droppable one."""
        self.spans = {}  # shown block name -> (output key, input key, own names that go)
        if self.sequential:
            return []
        adds = {name: self._block(name) for name, layer in self.layer.items()
                if layers.spec(layer).sums}
        if unit == "add":
            return [self._add_block(block) for block in adds.values()]
        droppable = {name: block for name, block in adds.items() if block.droppable}
        found = []
        for name, layer in self.layer.items():
            if _is_hub_block(layer):
                found.append(self._layer_block(name))
            elif name in droppable and self._attends(droppable[name]):
                pair = self._pair(droppable[name], droppable)
                if pair is not None:
                    found.append(pair)
        return found

    def _add_block(self, block):
        """``block`` (own names) as shown, its span remembered when droppable."""
        shown = Block(self.shown[block.name], tuple(self.shown[n] for n in block.branch),
                      self.shown.get(block.shortcut, ""), block.droppable, block.reason)
        if block.droppable:
            self.spans[shown.name] = ((block.name, 0, 0), self._shortcut_key(block),
                                      [*block.branch, block.name])
        return shown

    def _shortcut_key(self, block):
        return next(k for k in self.inputs[(block.name, 0)] if k[0] == block.shortcut)

    def _attends(self, block):
        return any(_is_attention(self.layer[n]) for n in block.branch)

    def _single_reader(self, key, classes):
        """The one layer (called once) of ``classes`` that reads ``key``, else ``None``."""
        readers = self.readers.get(key, [])
        if len(readers) != 1 or key in self.outputs:
            return None
        name = readers[0][0]
        if _class_name(self.layer[name]) not in classes or self.times[name] != 1:
            return None
        return name

    def _pair(self, attention, adds):
        """The transformer block that starts with the ``attention`` sub-block, or ``None``.

        Its feed-forward sub-block is the ``Add`` whose shortcut is the attention
        ``Add``'s output, directly (pre-LN) or through norms (post-LN: then as many norms
        after the feed-forward ``Add`` go with the block).
        """
        key, middle = (attention.name, 0, 0), []
        while True:
            feed = next((adds[r] for r, _ in self.readers.get(key, []) if r in adds
                         and self._shortcut_key(adds[r]) == key
                         and not self._attends(adds[r])), None)
            if feed is not None:
                break
            norm = self._single_reader(key, NORM_LAYERS)
            if norm is None:
                return None
            middle.append(norm)
            key = (norm, 0, 0)
        key, tail = (feed.name, 0, 0), []
        for norm in middle:
            after = self._single_reader(key, (_class_name(self.layer[norm]),))
            if after is None:
                break
            tail.append(after)
            key = (after, 0, 0)
        gone = [*attention.branch, attention.name, *middle, *feed.branch, feed.name, *tail]
        gone = sorted(gone, key=self.order.get)
        block = Block(self.shown[feed.name],
                      tuple(self.shown[n] for n in gone if n != feed.name),
                      self.shown[attention.shortcut], kind="transformer",
                      adds=(self.shown[attention.name], self.shown[feed.name]))
        for reader, keys in self.inputs.items():
            leaked = [k for k in keys if k[0] in gone and k != key and reader[0] not in gone]
            if leaked:
                return dataclasses.replace(block, reason=(
                    f"the output of {self.shown[leaked[0][0]]!r} is also read outside the "
                    f"block (by {self.shown[reader[0]]!r})"))
        inside = [k for k in self.outputs if k[0] in gone and k != key]
        if inside:
            return dataclasses.replace(block, reason=f"{self.shown[inside[0][0]]!r} is a model output")
        self.spans[block.name] = (key, self._shortcut_key(attention), gone)
        return dataclasses.replace(block, droppable=True)

    def _layer_block(self, name):
        """One call of a KerasHub transformer layer: its first input is its shortcut."""
        calls = self.times[name]
        keys = self.inputs.get((name, 0), [])
        block = Block(self.shown[name], (), self.shown[keys[0][0]] if keys else "",
                      kind="transformer")
        if calls != 1:
            return dataclasses.replace(block, reason=f"the layer is called {calls} times (shared)")
        if not keys:
            return dataclasses.replace(block, reason="it has no inputs")
        shapes = [self._shape(k) for k in (keys[0], (name, 0, 0))]
        if None not in shapes and shapes[0] != shapes[1]:
            return dataclasses.replace(block, reason=f"its output shape {shapes[1]} differs from its "
                                          f"input's {shapes[0]}")
        self.spans[block.name] = ((name, 0, 0), keys[0], [name])
        return dataclasses.replace(block, droppable=True)

    def layers_of(self, block):
        """The layers that go with droppable ``block``."""
        return [self.layer[n] for n in self.spans[block.name][2]]

    def ends(self, block):
        """``(input tensor, output tensor)`` of droppable ``block``."""
        output, start, _ = self.spans[block.name]
        return self.reader.tensors[start], self.reader.tensors[output]

    def _block(self, name):
        if self.times[name] != 1:
            return Block(name, reason=f"the Add layer is called {self.times[name]} times "
                         "(shared)")
        inputs = self.inputs[(name, 0)]
        if len(inputs) > 2:
            return Block(name, reason=f"more than two inputs ({len(inputs)})")
        if len(inputs) < 2:
            return Block(name, reason="its inputs are the same tensor" if inputs
                         else "it has no inputs")
        problems = []
        for shortcut, start in (inputs, inputs[::-1]):
            branch, problem = self._branch(start, shortcut, name)
            if not problem:
                return Block(name, tuple(branch), shortcut[0], True)
            problems.append(problem)
        return Block(name, reason=self._why_not(inputs) or problems[0])

    def _branch(self, start, shortcut, add):
        """The layers between ``shortcut`` and ``start`` (walking back from ``start``)."""
        seen, stack = set(), [start]
        while stack:
            key = stack.pop()
            if key == shortcut:
                continue
            node = key[:2]
            if node in seen:
                continue
            if not self.inputs.get(node):
                return [], "the branch's input is not the shortcut"
            seen.add(node)
            stack.extend(self.inputs[node])
        branch = sorted({n for n, _ in seen}, key=self.order.get)
        for layer in branch:
            if self.times[layer] != 1:
                return [], (f"branch layer {self.shown[layer]!r} is called "
                            f"{self.times[layer]} times (shared)")
        for (reader, _), keys in ((n, self.inputs[n]) for n in self.inputs):
            if reader in branch or reader == add:
                continue
            for key in keys:
                if key[0] in branch:
                    return [], (f"the output of branch layer {self.shown[key[0]]!r} is "
                                f"also read outside the block (by {self.shown[reader]!r})")
        for key in self.outputs:
            if key[0] in branch:
                return [], f"branch layer {self.shown[key[0]]!r} is a model output"
        shapes = [self._shape(k) for k in (start, shortcut)]
        if None not in shapes and shapes[0] != shapes[1]:
            return [], (f"the branch's output shape {shapes[0]} differs from the "
                        f"shortcut's {shapes[1]}")
        return branch, ""

    def _shape(self, key):
        try:
            return tuple(self.reader.tensors[key].shape)
        except (TypeError, ValueError):  # a tensor of unknown rank
            return None

    def _ancestors(self, key):
        seen, stack = set(), [key]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            stack.extend(self.inputs.get(key[:2], []))
        return seen

    def _why_not(self, inputs):
        """Name a projection shortcut: the side with fewer layers from the fork tensor."""
        common = self._ancestors(inputs[0]) & self._ancestors(inputs[1])
        if not common:
            return ""
        depth = {}

        def level(key):
            if key not in depth:
                parents = self.inputs.get(key[:2], [])
                depth[key] = 1 + max((level(p) for p in parents), default=0)
            return depth[key]

        fork = max(common, key=level)
        below = self._descendants(fork)
        sides = []
        for key in inputs:
            seen, stack = set(), [key]
            while stack:
                key = stack.pop()
                if key == fork or key not in below:
                    continue
                node = key[:2]
                if node not in seen:
                    seen.add(node)
                    stack.extend(self.inputs.get(node, []))
            sides.append(sorted({n for n, _ in seen}, key=self.order.get))
        shortcut = min(sides, key=len)
        if not shortcut:
            return ""
        producers = [n for n in shortcut if layers.channel_role(self.layer[n]) == "producer"]
        if producers:
            return f"shortcut is a projection ({self.shown[producers[0]]})"
        return f"shortcut is not an identity ({', '.join(map(self.shown.get, shortcut))})"

    def _descendants(self, fork):
        """The tensors computed from ``fork`` (itself included)."""
        made = {}  # node -> the tensor keys it makes that are read or output
        for key in [*self.readers, *self.outputs]:
            made.setdefault(key[:2], set()).add(key)
        seen, stack = set(), [fork]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            for node in self.readers.get(key, []):
                stack.extend(made.get(node, ()))
        return seen

    def rebuild(self, chosen):
        """A new model with the branches of ``chosen`` blocks dropped, weights copied."""
        replace, removed = {}, set()
        for block in chosen:
            output, start, gone = self.spans[block.name]
            replace[output] = start
            removed.update(gone)
        clones = {}

        def call(step, args, kwargs):
            return fresh_layer(step.layer, clones)(*args, **kwargs)

        keras, nest = self.engine.keras, self.engine.nest
        inputs = self.engine.fresh_inputs(self.model)
        outputs = self.reader.replay(inputs, call, removed, replace)
        new = keras.Model(nest.pack_sequence_as(self.model.input, inputs),
                          nest.pack_sequence_as(self.model.output, outputs),
                          name=self.model.name)
        for layer in new.layers:
            layer.set_weights(self.model.get_layer(layer.name).get_weights())
        return new


class _Backbone:
    """A KerasHub backbone: its transformer layers are the blocks; it is rebuilt from its
    config with fewer ``num_layers``, the kept blocks' weights copied in order."""

    def __init__(self, model, config, hub):
        layers.engine(model).check_model(model)
        self.model, self.config, self.hub = model, config, hub
        self.shown = self.own = {layer.name: layer.name for layer in model.layers}
        self.reader = read(model)

    def find(self, unit):
        if unit == "add":  # its Adds are inside its layers
            return []
        return [Block(layer.name, (), self.reader.call_of(layer).inputs[0][0], True,
                      kind="transformer") for layer in self.hub]

    def layers_of(self, block):
        return [self.model.get_layer(block.name)]

    def ends(self, block):
        call = self.reader.call_of(self.model.get_layer(block.name))
        return self.reader.tensors[call.inputs[0]], self.reader.tensors[call.outputs[0]]
    def rebuild(self, chosen):
        gone = {block.name for block in chosen}
        kept = [layer for layer in self.hub if layer.name not in gone]
        new = type(self.model).from_config({**self.config, "num_layers": len(kept)})
        fresh = [layer for layer in new.layers if _is_hub_block(layer)]
        others = {layer.name: layer for layer in self.model.layers
                  if not _is_hub_block(layer)}
        rest = [layer for layer in new.layers if not _is_hub_block(layer)]
        if len(fresh) != len(kept) or sorted(others) != sorted(layer.name for layer in rest):
            raise ValueError(
                f"Cannot drop blocks of {type(self.model).__name__} {self.model.name!r}: "
                f"built from its config with num_layers={len(kept)}, it has other layers "
                "than the model less the dropped blocks.")
        for old, layer in [*zip(kept, fresh), *((others[n.name], n) for n in rest)]:
            layer.set_weights(old.get_weights())
        return new
