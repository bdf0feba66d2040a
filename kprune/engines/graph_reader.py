"""A functional model's layer graph, read once from its live nodes (tf_keras or Keras 3).

Each call of a layer (or of a ``keras.ops`` function) in the model, in graph order: its
arguments, the tensors it reads and makes, and who reads each tensor. The channel groups
(:mod:`kprune.structural.graph`), the residual blocks (:mod:`kprune.structural.blocks`),
the inlining of nested models (:mod:`kprune.structural.nesting`) and the readers of a
layer's output (:func:`kprune.engines.capture.readers`) all read a model here;
:meth:`LayerGraph.replay` calls the graph again on new inputs (to rebuild a model).

A tensor is named by its key ``(layer name, call, output)``: ``call`` counts the layer's
calls in this model (0 unless it is shared), ``output`` which of the call's outputs it is.

Example:
    >>> from kprune.engines.graph_reader import read
    >>> graph = read(model)
    >>> [(call.layer.name, call.inputs) for call in graph.calls][:2]
    [('x', ()), ('conv1', (('x', 0, 0),))]
    >>> graph.readers[("conv1", 0, 0)]
    [('bn1', 0)]
"""

from __future__ import annotations

from dataclasses import dataclass

from kprune.engines import engine_of

__all__ = ["Call", "LayerGraph", "read", "fresh_layer"]


@dataclass(frozen=True)
class Call:
    """One call of ``layer`` (its ``index``-th in the model): its arguments as the model's
    graph holds them, and the keys of the tensors it reads (argument order) and makes."""

    layer: object
    index: int
    args: tuple
    kwargs: dict
    inputs: tuple
    outputs: tuple

    @property
    def key(self):
        """``(layer name, call)``."""
        return self.layer.name, self.index


def read(model):
    """The :class:`LayerGraph` of functional (or Sequential) ``model``.

    Example:
        >>> read(model).times["shared_dense"]
        2
    """
    engine = engine_of(model)
    nodes = engine.graph_nodes(model)
    if nodes is None:
        raise ValueError(
            f"Model {model.name!r} has no layer graph (a Sequential built without an Input, "
            "or a subclassed model): build it with an Input, functionally.")
    return LayerGraph(model, engine, nodes)


class LayerGraph:
    """The calls of a model in graph order (``calls``), the number of calls of each layer
    (``times``), the calls reading each tensor (``readers``), the keys of the model's
    inputs and outputs, and the tensor of each key (``tensors``)."""

    def __init__(self, model, engine, nodes):
        self.model, self.engine = model, engine
        self.tensors, self._keys, self.times = {}, {}, {}
        calls = []
        for node in nodes:  # a tensor's maker comes before its readers
            layer, args, kwargs = engine.node_call(node)
            index = self.times.get(layer.name, 0)
            self.times[layer.name] = index + 1
            outputs = engine.node_outputs(node)
            keys = tuple((layer.name, index, i) for i in range(len(outputs)))
            inputs = tuple(self._keys[id(t)] for t in engine.node_inputs(node))
            self.tensors.update(zip(keys, outputs))
            self._keys.update((id(tensor), key) for key, tensor in zip(keys, outputs))
            calls.append(Call(layer, index, args, kwargs or {}, inputs, keys))
        self.calls = self._in_order(calls)
        self.readers = {}
        for call in self.calls:
            for key in dict.fromkeys(call.inputs):
                self.readers.setdefault(key, []).append(call.key)
        self.inputs = [self.key(t) for t in model.inputs]
        self.outputs = [self.key(t) for t in model.outputs]

    def _in_order(self, calls):
        """``calls`` in graph order: the model's layers in its own order (its non-layer
        operations after them), each once all it reads is made."""
        layer_class = self.engine.keras.layers.Layer
        operations = [*self.model.layers, *(op for op in self.engine.graph_operations(self.model)
                                            if not isinstance(op, layer_class))]
        rank = {id(op): i for i, op in enumerate(operations)}  # a Sequential's Input: -1
        pending = sorted(calls, key=lambda c: (rank.get(id(c.layer), -1), c.index))
        seen, ordered = set(), []
        while pending:
            rest = []
            for call in pending:
                if all(key in seen for key in call.inputs):
                    seen.update(call.outputs)
                    ordered.append(call)
                else:
                    rest.append(call)
            if len(rest) == len(pending):
                raise ValueError(f"Cannot order the layers of model {self.model.name!r}.")
            pending = rest
        return ordered

    def key(self, value):
        """The key of ``value`` when it is a tensor of this graph, else None."""
        return self._keys.get(id(value))

    def call_of(self, layer):
        """The first call of ``layer`` in the model."""
        return next(call for call in self.calls if call.layer is layer)

    def made_by(self, layer):
        """The keys of the tensors that ``layer``'s calls make, in call order."""
        return [key for call in self.calls if call.layer is layer for key in call.outputs]

    def readers_of(self, layer):
        """The calls (``(layer name, call)``) that read a tensor ``layer`` makes, in graph
        order, each once; a ``keras.ops`` call is among them.

        Example:
            >>> read(model).readers_of(model.get_layer("conv1"))
            [('bn1', 0)]
        """
        return list(dict.fromkeys(reader for key in self.made_by(layer)
                                  for reader in self.readers.get(key, [])))

    def replay(self, inputs, call_layer, dropped=(), replace=None):
        """Call the graph again on ``inputs`` (new tensors, one per model input), in graph
        order; return the new outputs (a list, one per model output).

        ``call_layer(call, args, kwargs)`` makes each call's outputs from its arguments (the
        old tensors replaced by the new ones); the layers named in ``dropped`` are not
        called, and ``replace`` maps the key of a tensor they made to the key of the one
        read instead.

        Example:
            >>> outputs = graph.replay(fresh, lambda call, a, k: clone(call.layer)(*a, **k))
        """
        replace = replace or {}
        found = dict(zip(self.inputs, inputs))
        input_layer = self.engine.keras.layers.InputLayer

        def mapped(value):
            key = self.key(value)
            while key in replace:
                key = replace[key]
            return value if key is None else found[key]

        for call in self.calls:
            if isinstance(call.layer, input_layer) or call.layer.name in dropped:
                continue
            args, kwargs = self.engine.nest.map_structure(mapped, (call.args, call.kwargs))
            made = call_layer(call, args, kwargs)
            found.update(zip(call.outputs, self.engine.nest.flatten(made)))
        return [mapped(tensor) for tensor in self.model.outputs]


def fresh_layer(layer, clones):
    """A copy of ``layer`` made from its config (weights not copied), one per layer name:
    ``clones`` (``{name: (layer, copy)}``) keeps them. Two layers of one name are refused,
    since the model rebuilt from the copies could not hold both.

    Example:
        >>> outputs = graph.replay(inputs, lambda call, a, k: fresh_layer(call.layer, {})(*a, **k))
    """
    source, copy = clones.get(layer.name, (layer, None))
    if source is not layer:
        raise ValueError(
            f"Cannot rebuild the model: two layers are named {layer.name!r}, and one model "
            "needs distinct names. Rename one (e.g. build the nested model with a name "
            "prefix) and try again.")
    if copy is None:
        copy = type(layer).from_config(layer.get_config())
        clones[layer.name] = (layer, copy)
    return copy
