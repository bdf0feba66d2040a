"""Residual blocks: find ``Add([shortcut, branch])`` blocks and drop whole branches.

A block whose shortcut is the identity (the branch starts from the very tensor that also
feeds the ``Add``) becomes the identity when its branch is dropped: the ``Add``'s output
is replaced by the shortcut, and the branch's layers disappear. Blocks whose shortcut is a
projection (a convolution), whose ``Add`` has more than two inputs, or whose branch also
reads other tensors are listed with the reason they cannot be dropped. The layer graph is
read from ``model.get_config()`` (never from names); the input model is never modified.

Example:
    >>> from kprune import structural
    >>> [b.name for b in structural.residual_blocks(resnet) if b.droppable][:2]
    ['conv2_block2_add', 'conv2_block3_add']
    >>> smaller = structural.drop_blocks(resnet, 2, criterion="sensitivity",
    ...                                  data=(x_val, y_val))
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from kprune.core import layers
from kprune.core.calibration import calibration_batches
from kprune.core.checks import check_choice, did_you_mean
from kprune.engines.capture import to_numpy
from kprune.structural.nesting import follows_nesting

__all__ = ["Block", "residual_blocks", "block_scores", "drop_blocks"]

CRITERIA = ("sensitivity", "l1", "influence")


@dataclass(frozen=True)
class Block:
    """One residual ``Add``: its name, its branch's layers, its shortcut, droppable or why not.

    ``branch`` lists the layers that go when the block is dropped (graph order);
    ``shortcut`` names the layer whose output the block then passes on.
    """

    name: str
    branch: tuple = ()
    shortcut: str = ""
    droppable: bool = False
    reason: str = ""

    def __str__(self):
        state = "droppable" if self.droppable else f"not droppable: {self.reason}"
        return f"{self.name} ({len(self.branch)} branch layers, {state})"


@follows_nesting
def residual_blocks(model):
    """Every ``Add`` layer of functional ``model``, as a list of :class:`Block`.

    Example:
        >>> blocks = residual_blocks(tf_keras.applications.ResNet50(weights=None))
        >>> blocks[0].droppable, blocks[0].reason
        (False, 'shortcut is a projection (conv2_block1_0_conv)')
    """
    return _Graph(model).blocks()


@follows_nesting
def block_scores(model, *, criterion="sensitivity", data=None, batch_size=256):
    """``{block name: importance}`` for each droppable block (higher: more important).

    ``"sensitivity"``: the drop of validation accuracy (``data=(x_val, y_val)``) when that
    block alone is dropped. ``"l1"``: the mean ``|w|`` of the kernels in the block's branch
    (no data needed). ``"influence"``: how much the block changes what flows through it,
    ``1 - cos(shortcut, Add output)`` averaged over every position of the calibration
    inputs ``data`` (no labels; ShortGPT's block influence).

    Example:
        >>> block_scores(resnet, criterion="l1")
        {'conv2_block2_add': 0.031, ...}
    """
    check_choice(criterion, CRITERIA, "criterion")
    graph = _Graph(model)
    droppable = [b for b in graph.blocks() if b.droppable]
    if criterion == "l1":
        scores = {}
        for block in droppable:
            values = [np.abs(values).ravel() for name in block.branch
                      for _, values in layers.effective_weights(
                          model.get_layer(graph.own[name]))]
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
def drop_blocks(model, blocks, *, criterion="sensitivity", data=None, batch_size=256):
    """A new model with the branches of ``blocks`` dropped (each block becomes the identity).

    ``blocks``: a list of ``Add`` layer names, or a count: the ``count`` least important
    droppable blocks by ``criterion`` (see :func:`block_scores`; ``"sensitivity"`` needs
    ``data=(x_val, y_val)``, ``"influence"`` calibration inputs ``data=x``). The new model is not compiled; ``model`` is left as it is.

    Example:
        >>> smaller = drop_blocks(resnet, ["conv2_block3_add", "conv3_block4_add"])
        >>> smaller = drop_blocks(resnet, 3, criterion="l1")
    """
    check_choice(criterion, CRITERIA, "criterion")
    graph = _Graph(model)
    found = graph.blocks()
    by_name = {b.name: b for b in found}
    droppable = [b for b in found if b.droppable]
    if isinstance(blocks, int) and not isinstance(blocks, bool):
        if blocks < 1 or blocks > len(droppable):
            raise ValueError(
                f"Argument `blocks` must be a count between 1 and the number of droppable "
                f"blocks ({len(droppable)}: {[b.name for b in droppable]}). "
                f"Received: blocks={blocks!r}")
        if criterion == "sensitivity":
            _check_data(data, criterion)
        elif criterion == "influence":
            calibration_batches(model, data, batch_size=batch_size)  # checked first
        scores = block_scores(model, criterion=criterion, data=data, batch_size=batch_size)
        order = sorted(droppable, key=lambda b: scores[b.name])  # stable: graph order on ties
        chosen = order[:blocks]
    else:
        names = [blocks] if isinstance(blocks, str) else blocks
        if not isinstance(names, (list, tuple)) or not names or not all(
                isinstance(n, str) for n in names):
            raise ValueError(
                "Argument `blocks` must be a non-empty list of Add layer names or a "
                f"positive count. Received: blocks={blocks!r}")
        chosen = []
        for name in dict.fromkeys(names):
            name = graph.shown.get(name, name)  # a pruning wrapper's name: the wrapped layer's
            if name not in by_name:
                what = ("is not an Add layer" if name in graph.own
                        else "is not a layer of the model")
                raise ValueError(
                    f"Argument `blocks` names {name!r}, which {what}; the residual blocks "
                    f"are {list(by_name)}.{did_you_mean(name, by_name)} "
                    f"Received: blocks={blocks!r}")
            block = by_name[name]
            if not block.droppable:
                raise ValueError(
                    f"Block {name!r} cannot be dropped: {block.reason}. "
                    f"Received: blocks={blocks!r}")
            chosen.append(block)
    return graph.rebuild(chosen)


# -- internals ---------------------------------------------------------------------


def _influence(model, graph, droppable, data, batch_size):
    """``{block: 1 - mean cos(shortcut, Add output)}`` over the calibration positions."""
    if data is None:
        raise ValueError("criterion='influence' compares each block's input and output on "
                         "calibration inputs: pass data=x (model inputs, no labels). "
                         "Received: data=None")
    batches = calibration_batches(model, data, batch_size=batch_size)
    if not droppable:
        return {}
    tensors = []
    for block in droppable:
        tensors += [model.get_layer(graph.own[block.shortcut]).output,
                    model.get_layer(graph.own[block.name]).output]
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


def _refs(obj, names):
    """Every tensor reference ``[layer, node, tensor(, kwargs)]`` inside a serialized node."""
    if isinstance(obj, (list, tuple)):
        if (len(obj) in (3, 4) and isinstance(obj[0], str) and obj[0] in names
                and all(isinstance(i, int) and not isinstance(i, bool) for i in obj[1:3])):
            yield obj
            if len(obj) == 4:
                yield from _refs(obj[3], names)
            return
        for item in obj:
            yield from _refs(item, names)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _refs(value, names)


def _key(ref):
    return (ref[0], int(ref[1]), int(ref[2]))


class _Graph:
    """The tensors of a functional model's config: who makes each, who reads each."""

    def __init__(self, model):
        self.engine = layers.engine(model)  # tf_keras or Keras 3: the model's own
        self.engine.check_model(model)  # nested models: inlined by the public functions
        self.model = model
        self.sequential = isinstance(model, self.engine.keras.Sequential)
        if self.sequential:
            self.entries = {layer.name: None for layer in model.layers}
        else:
            self.config = model.get_config()
            self.entries = {e["name"]: e for e in self.config["layers"]}
        # names as kprune shows them (a pruning wrapper: the wrapped layer's), both ways
        self.shown = {n: self.engine.layer_name(model.get_layer(n)) for n in self.entries}
        self.own = {shown: n for n, shown in self.shown.items()}
        if self.sequential:
            return
        names = set(self.entries)
        self.inputs = {}  # (layer, node) -> [tensor key]
        self.readers = {}  # tensor key -> [(layer, node)]
        for name, entry in self.entries.items():
            for index, node in enumerate(entry["inbound_nodes"]):
                keys = list(dict.fromkeys(_key(r) for r in _refs(node, names)))
                self.inputs[(name, index)] = keys
                for key in keys:
                    self.readers.setdefault(key, []).append((name, index))
        self.outputs = {_key(r) for r in _refs(self.config["output_layers"], names)}
        self.order = {name: i for i, name in enumerate(self.entries)}

    def blocks(self):
        if self.sequential:
            return []
        found = []
        for name, entry in self.entries.items():
            if not layers.spec(self.model.get_layer(name)).sums:
                continue
            block = self._block(name, entry)
            found.append(Block(self.shown[name], tuple(self.shown[n] for n in block.branch),
                               self.shown.get(block.shortcut, ""), block.droppable,
                               block.reason))
        return found

    def _block(self, name, entry):
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1:
            return Block(name, reason=f"the Add layer is called {len(nodes)} times (shared)")
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

    def _producer(self, key):
        return key[:2]

    def _branch(self, start, shortcut, add):
        """The layers between ``shortcut`` and ``start`` (walking back from ``start``)."""
        seen, stack = set(), [start]
        while stack:
            key = stack.pop()
            if key == shortcut:
                continue
            node = self._producer(key)
            if node in seen:
                continue
            if not self.inputs.get(node):
                return [], "the branch's input is not the shortcut"
            seen.add(node)
            stack.extend(self.inputs[node])
        branch = sorted({n for n, _ in seen}, key=self.order.get)
        for layer in branch:
            calls = len(self.entries[layer]["inbound_nodes"])
            if calls != 1:
                return [], f"branch layer {self.shown[layer]!r} is called {calls} times (shared)"
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
        layer = self.model.get_layer(key[0])
        if len(layer._inbound_nodes) != 1:  # node indices of the config may differ
            return None
        try:
            shape = layers.output_shape(layer)
        except (AttributeError, RuntimeError, ValueError):
            return None
        if isinstance(shape, list):
            shape = shape[key[2]]
        return tuple(shape)

    def _ancestors(self, key):
        seen, stack = set(), [key]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            stack.extend(self.inputs.get(self._producer(key), []))
        return seen

    def _why_not(self, inputs):
        """Name a projection shortcut: the side with fewer layers from the fork tensor."""
        common = self._ancestors(inputs[0]) & self._ancestors(inputs[1])
        if not common:
            return ""
        depth = {}

        def level(key):
            if key not in depth:
                parents = self.inputs.get(self._producer(key), [])
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
                node = self._producer(key)
                if node not in seen:
                    seen.add(node)
                    stack.extend(self.inputs.get(node, []))
            sides.append(sorted({n for n, _ in seen}, key=self.order.get))
        shortcut = min(sides, key=len)
        if not shortcut:
            return ""
        producers = [n for n in shortcut
                     if layers.channel_role(self.model.get_layer(n)) == "producer"]
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
        config = copy.deepcopy(self.config)
        entries = {e["name"]: e for e in config["layers"]}
        replace, removed = {}, set()
        for block in chosen:
            name = self.own[block.name]
            add = self.inputs[(name, 0)]
            shortcut = next(k for k in add if k[0] == self.own[block.shortcut])
            replace[(name, 0, 0)] = shortcut
            removed.update(self.own[n] for n in block.branch)
            removed.add(name)

        def resolve(key):
            while key in replace:
                key = replace[key]
            return key

        names = set(entries)

        def rewrite(obj):
            if isinstance(obj, (list, tuple)):
                if next(iter(_refs([obj], names)), None) is obj:
                    return [*resolve(_key(obj)), *map(rewrite, obj[3:])]
                return [rewrite(item) for item in obj]
            if isinstance(obj, dict):
                return {k: rewrite(v) for k, v in obj.items()}
            return obj

        config["layers"] = [e for e in config["layers"] if e["name"] not in removed]
        for entry in config["layers"]:
            entry["inbound_nodes"] = rewrite(entry["inbound_nodes"])
        config["output_layers"] = rewrite(config["output_layers"])
        custom = {e["class_name"]: type(self.model.get_layer(e["name"]))
                  for e in config["layers"]}
        new = self.engine.keras.Model.from_config(config, custom_objects=custom)
        for layer in new.layers:
            layer.set_weights(self.model.get_layer(layer.name).get_weights())
        return new
