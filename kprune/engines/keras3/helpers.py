"""The Keras 3 engine's helpers: the one module that imports Keras 3 (``import keras``).

It is imported only when kprune is handed a Keras 3 object, so ``import kprune`` does
not import keras. Whatever kprune imports (tfmot sets ``TF_USE_LEGACY_KERAS=1``, which
changes ``tf.keras``), ``import keras`` keeps giving Keras 3: the engine names it here.
Everything else in the engine uses only ``keras`` and ``keras.ops``, so it runs on any
Keras backend (tested: TensorFlow and JAX).

Example:
    >>> from kprune.engines.keras3 import helpers
    >>> model = helpers.keras.Sequential([helpers.keras.Input((4,)),
    ...                                   helpers.keras.layers.Dense(2, name="fc")])
    >>> helpers.check_model(model)
    >>> [path for path, _ in helpers.iter_layers(model)]
    ['fc']
"""

import keras
import numpy as np
from keras import ops
from keras.src.models.functional import Functional

from kprune.engines.layer_paths import graph_layers, sublayer
from kprune.engines.question import is_keras3

__all__ = ["keras", "ops", "backend", "check_model", "iter_layers", "layer_name",
           "is_subclassed", "is_wrapper", "unwrap", "with_nested_layers", "sublayer", "clone_model", "copy_model", "sync_state",
           "weight_gradients", "example_gradients"]


def backend():
    """The Keras backend in use: ``"tensorflow"``, ``"jax"``, ``"torch"`` or ``"numpy"``."""
    return keras.backend.backend()


def _describe(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_model(model, *, argument="model", graph=True):
    """Raise a clear error unless ``model`` is a built Keras 3 Sequential or functional model
    (or, with ``graph=False``, a subclassed one: for what needs its layers, not its graph).

    Example:
        >>> check_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)]))
    """
    if not is_keras3(model):
        engine = ("a tf_keras (Keras 2) object, which kprune prunes with tfmot: pass it to "
                  "the same kprune functions, they select the engine from the model"
                  if type(model).__module__.startswith("tf_keras") else "not a Keras 3 object")
        raise TypeError(
            f"Argument `{argument}` must be a Keras 3 model (built with `import keras`); "
            f"it is {engine}. Received: {argument} of type {_describe(model)}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `{argument}` must be a Keras 3 Sequential or functional model. "
            f"Received: {argument} of type {_describe(model)}"
        )
    if graph and is_subclassed(model):
        raise TypeError(
            f"Argument `{argument}` is a subclassed Keras 3 model ({_describe(model)}); "
            "this needs its layer graph, which subclassed models hide (pruning masks, "
            "reports and export take it as it is). Rebuild it with the Sequential or "
            f"functional API. Received: {argument}={model.name!r}"
        )
    if not model.built:
        call = ("call it on a batch" if is_subclassed(model)
                else "give it a `keras.Input` or call `model.build(input_shape)`")
        raise ValueError(
            f"Argument `{argument}` is not built: {call} first. "
            f"Received: {argument}={model.name!r}"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            check_model(layer, argument=f"{argument}/{layer.name}", graph=graph)


def is_subclassed(model):
    """True for a subclassed Keras 3 model (layers as attributes, a ``call`` method): one
    whose layer graph kprune cannot read, only its layers."""
    return isinstance(model, keras.Model) and not isinstance(model, (keras.Sequential,
                                                                      Functional))


def is_wrapper(layer):
    """True for a Keras 3 pruning wrapper (``kprune.engines.keras3.wrap.PruneLowMagnitude``)."""
    return getattr(type(layer), "kprune_pruning_wrapper", False)


def unwrap(layer):
    """The layer a pruning wrapper wraps; any other layer itself."""
    return layer.layer if is_wrapper(layer) else layer


def layer_name(layer):
    """A layer's own name; for a pruning wrapper, the name of the layer it wraps."""
    return unwrap(layer).name


def iter_layers(model, prefix=""):
    """Yield ``(path, layer)`` for every non-model layer, nested models included.

    Paths are those of the tf_keras engine's (:func:`kprune.engines.layer_paths.graph_layers`:
    ``"outer/inner"``; a wrapper has the path of the layer it wraps), so plans read the same
    on both engines.
    """
    return graph_layers(model, keras, layer_name, prefix)


def _nested(layer, prefix, relative, descend, views):
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        path = f"{relative}/{sub.name}" if relative else sub.name
        yield f"{prefix}/{path}", views.get(path, sub)
        if descend(sub):
            yield from _nested(sub, prefix, path, descend, views)


def with_nested_layers(found, descend):
    """``found`` (``(path, leaf)`` pairs, as :func:`iter_layers` gives them) with, after each
    leaf that ``descend(layer)`` enters, the layers it holds, depth first, at
    ``leaf/inner/...``. A pruning wrapper's masked layers come as its views
    (``wrapper.views()``), so their masks go with them.

    Example:
        >>> [p for p, _ in with_nested_layers(iter_layers(model), lambda l: l.name == "block")]
        ['block', 'block/fc1', 'block/fc2', 'head']
    """
    for path, leaf in found:
        yield path, leaf
        inner = unwrap(leaf)
        if descend(inner):
            views = leaf.views() if is_wrapper(leaf) else {}
            yield from _nested(inner, path, "", descend, views)


def clone_model(model, layer_fn):
    """Clone ``model`` (nested models too) with ``layer_fn(path, layer) -> layer`` on every
    leaf layer; layers returned unchanged are shared with ``model``.

    A subclassed model is cloned from its config (its class registered with
    ``keras.saving.register_keras_serializable``), and each layer it holds as an attribute
    (or in a list attribute) is then replaced by what ``layer_fn`` returns.
    """
    if is_subclassed(model):
        return _clone_subclassed(model, layer_fn)
    paths = {id(layer): path for path, layer in iter_layers(model)}

    def clone(layer):
        path = paths.get(id(layer))
        if path is None:  # not a leaf kprune names (an input layer): a fresh copy
            return layer.__class__.from_config(layer.get_config())
        return layer_fn(path, layer)

    return keras.models.clone_model(model, clone_function=clone, recursive=True)


def _clone_subclassed(model, layer_fn):
    twin = _rebuilt(model)
    # the same layers in the same order (unnamed ones may be named anew: "flatten_1")
    for (path, layer), (fresh_path, fresh) in zip(iter_layers(model), list(iter_layers(twin))):
        holder_path, _, _ = fresh_path.rpartition("/")
        new = layer_fn(path, layer)
        if not new.built:  # a wrapper around a built layer: nothing calls it symbolically
            new.build(None)
        _replace(sublayer(twin, holder_path), fresh, new)
    return twin


def _rebuilt(model):
    """A subclassed model's class built anew from its config (new layers, new weights)."""
    try:
        return keras.models.clone_model(model)
    except Exception as err:  # whatever the model's own get_config/__init__ raise
        said = " ".join(str(err).split("Example:")[0].split())  # Keras's, on one line
        raise TypeError(
            f"Argument `model` is a subclassed Keras 3 model ({_describe(model)}) that cannot be "
            f"rebuilt from its config ({type(err).__name__}: {said}). kprune prunes a copy, never "
            "your model: give the class a get_config() that returns its constructor's "
            "arguments (and register it with keras.saving.register_keras_serializable to save "
            f"it). Received: model={model.name!r}"
        ) from err


def _replace(holder, old, new):
    """Put ``new`` where ``holder`` (a subclassed model or custom layer) holds ``old``: its
    attribute, and its place in every list the holder keeps it in (its own ``_layers``
    among them, so that the order of its layers is kept)."""
    if new is old:
        return
    for name, value in list(vars(holder).items()):
        if value is old:
            object.__setattr__(holder, name, new)  # past the tracker, locked once built
        elif isinstance(value, list) and any(item is old for item in value):
            value[next(i for i, item in enumerate(value) if item is old)] = new


def copy_model(model):
    """An independent copy of a Keras 3 model: new layer objects, same weights.

    Example:
        >>> copy_model(model).layers[0] is model.layers[0]
        False
    """
    check_model(model, graph=False)
    twin = _rebuilt(model) if is_subclassed(model) else keras.models.clone_model(model,
                                                                                   recursive=True)
    twin.set_weights(model.get_weights())
    return twin


def sync_state(model):
    """Make ``model``'s variables hold their current values (JAX keeps them in the
    trainer's state during ``fit``; other backends always do).

    After it, assignments to the model's variables reach the next training step.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def weight_gradients(model, loss_fn, x, y):
    """``{id(variable): d loss / d variable}`` (numpy) for every weight of ``model``, the
    loss ``loss_fn(y, model(x, training=False))`` taken on one batch.

    Gradients need the backend: TensorFlow and JAX are supported; another backend gets a
    clear error.

    Example:
        >>> grads = weight_gradients(model, keras.losses.MeanSquaredError(), x, y)
        >>> grads[id(model.get_layer("fc").kernel)].shape
        (4, 2)
    """
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)
    name = backend()
    if name == "tensorflow":
        from kprune.engines.tfkeras.loader import tf

        values = [v.value for v in variables]
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = loss_fn(y, model(x, training=False))
        found = tape.gradient(loss, values)
    elif name == "jax":
        import jax

        n_trainable = len(model.trainable_variables)
        values = [v.value for v in variables]
        floats = [i for i, v in enumerate(values) if jax.numpy.issubdtype(v.dtype,
                                                                          jax.numpy.floating)]

        def loss_of(chosen):  # of the floating variables (not e.g. a Dropout's seed)
            every = list(values)
            for i, value in zip(floats, chosen):
                every[i] = value
            outputs, _ = model.stateless_call(every[:n_trainable], every[n_trainable:], x,
                                              training=False)
            return loss_fn(y, outputs)

        found = [None] * len(values)
        for i, grad in zip(floats, jax.grad(loss_of)([values[i] for i in floats])):
            found[i] = grad
    else:
        raise ValueError(
            f"Gradients of a Keras 3 model are taken on the TensorFlow or JAX backend only. "
            f"Received: a model on the {name!r} backend"
        )
    return {id(v): np.zeros(v.shape, "float32") if g is None else np.asarray(g)
            for v, g in zip(variables, found)}


def example_gradients(model, loss_fn, batches, variables):
    """For each ``(x, y)`` of ``batches``: ``{id(variable): d loss / d variable of each
    example}`` (numpy, ``(len(y), *variable.shape)``) for ``variables`` only, the loss of
    example ``i`` being ``loss_fn(y[i:i+1], model(x[i:i+1], training=False))``.

    A batch at a time: in one traced graph on TensorFlow, ``jax.vmap`` of ``jax.grad`` on
    JAX (see :mod:`kprune.engines.per_example`); another backend gets a clear error.

    Example:
        >>> fc = model.get_layer("fc")
        >>> for grads in example_gradients(model, loss, [(x, y)], [fc.kernel]):
        ...     grads[id(fc.kernel)].shape
        (8, 4, 2)
    """
    from kprune.engines import per_example

    variables = list(variables)
    name = backend()
    if name == "tensorflow":
        functions = per_example.tensorflow_functions(lambda x: model(x, training=False),
                                                     loss_fn, [v.value for v in variables])
    elif name == "jax":
        functions = _jax_functions(model, loss_fn, variables)
    else:
        raise ValueError(
            f"Gradients of a Keras 3 model are taken on the TensorFlow or JAX backend only. "
            f"Received: a model on the {name!r} backend"
        )
    return per_example.per_batch(batches, *functions, variables)


def _jax_functions(model, loss_fn, variables):
    """``(batched, single)`` for :func:`kprune.engines.per_example.per_batch` on JAX:
    ``jax.grad`` of one example's loss through ``model.stateless_call`` with respect to
    ``variables``, under ``jax.vmap`` over a batch (compiled once per batch size), or alone."""
    import jax

    every = list(model.trainable_variables) + list(model.non_trainable_variables)
    n_trainable = len(model.trainable_variables)
    position = {id(v): i for i, v in enumerate(every)}
    chosen = [position[id(v)] for v in variables]
    values = [v.value for v in every]

    def loss_of(asked, current, x, y):  # x and y with a batch axis
        current = list(current)
        for i, value in zip(chosen, asked):
            current[i] = value
        outputs, _ = model.stateless_call(current[:n_trainable], current[n_trainable:], x,
                                          training=False)
        return loss_fn(y, outputs)

    def one(asked, current, x, y):  # an example without its batch axis
        return loss_of(asked, current, *jax.tree.map(lambda t: t[None], (x, y)))

    asked = [values[i] for i in chosen]
    batched = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, None, 0, 0)))
    single = jax.jit(jax.grad(loss_of))
    return ((lambda x, y: batched(asked, values, x, y)),
            (lambda x, y: single(asked, values, x, y)))
