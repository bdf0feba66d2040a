"""The callbacks a Keras ``fit`` needs to prune, and a helper for custom training loops.

Example:
    >>> history = pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    >>> history.history["sparsity"]          # overall, per epoch
    >>> history.history["sparsity/fc1"]      # one layer
"""

from kprune.core.pruning_logs import ScheduleWarning, report_short, write_sparsity_logs
from kprune.engines import distribute, engine_of
from kprune.engines.tfkeras import loader

# The tf_keras engine's callbacks live in kprune.engines.tfkeras.callbacks (which imports
# tf_keras and tfmot); they are named here too, and loaded only when asked for.
_TF_KERAS = ("SparsityLogger", "ScheduleGuard", "wrapped_layers", "mask_sparsity", "final_step",
             "training_step")

__all__ = ["callbacks", "ScheduleWarning", "PruningStepper", "EngineCallback",
           "is_schedule_guard", "write_sparsity_logs", "report_short", *_TF_KERAS]


def __getattr__(name):
    if name in _TF_KERAS:
        from kprune.engines.tfkeras import callbacks as tf_keras_callbacks

        return getattr(tf_keras_callbacks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def callbacks(model=None, *, log_dir=None, log_sparsity=True, strict=False):
    """What ``model.fit`` needs to prune: the step counter (tfmot's ``UpdatePruningStep`` on
    tf_keras, kprune's own on Keras 3), sparsity logs and a check that the schedules were
    really completed.

    Args:
        model: the pruned model the callbacks are for, to choose its engine now and check
            it. Optional: without it, each callback chooses its engine from the model that
            ``fit`` hands it (Keras calls ``set_model`` on every callback), so the same
            line serves tf_keras and Keras 3 models.
        log_dir: also write TensorBoard summaries there (tfmot's pruning summaries on
            tf_keras, Keras's own ``TensorBoard`` callback, which shows the sparsity logs,
            on Keras 3).
        log_sparsity: add a sparsity logger (per-layer and overall sparsity in logs).
        strict: make the schedule guard raise, instead of warn, when a fit ends before a
            layer reached its final sparsity.

    Without ``UpdatePruningStep`` tfmot fails with an InvalidArgumentError at the first
    batch, and a Keras 3 pruning layer refuses to train.

    Example:
        >>> pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks(log_dir="logs"))
        >>> keras3_pruned.fit(x, y, epochs=2, callbacks=kprune.callbacks())
    """
    options = dict(log_dir=log_dir, log_sparsity=log_sparsity, strict=strict)
    if model is None:
        return [EngineCallback(role, **options) for role in _roles(**options)]
    return _engine_callbacks(model, engine_of(model), **options)


def is_schedule_guard(callback):
    """True for the schedule guard of either engine, or a :class:`EngineCallback` that
    becomes one (a fit that runs part of an epoch leaves it out).

    Example:
        >>> [is_schedule_guard(c) for c in kprune.callbacks()]
        [False, True, False]
    """
    if isinstance(callback, EngineCallback):
        return callback.role == "guard"
    return type(callback).__name__ == "ScheduleGuard" and type(callback).__module__ in (
        "kprune.engines.tfkeras.callbacks", "kprune.engines.keras3.callbacks")


def _roles(*, log_dir, log_sparsity, strict):
    return (["update", "guard"] + (["logger"] if log_sparsity else [])
            + (["summaries"] if log_dir is not None else []))


def _engine_callbacks(model, engine, *, log_dir, log_sparsity, strict):
    """The callbacks of ``model``'s engine (``engine``, its :func:`engine_of`), in the order
    of :func:`_roles`."""
    if engine.name == "keras3":
        from kprune.engines.keras3 import callbacks as keras3_callbacks

        return keras3_callbacks.callbacks(model, log_dir=log_dir, log_sparsity=log_sparsity,
                                          strict=strict)
    from kprune.engines.tfkeras import callbacks as tf_keras_callbacks

    return tf_keras_callbacks.callbacks(model, log_dir=log_dir, log_sparsity=log_sparsity,
                                        strict=strict)


_HOOKS = [f"on_{stage}_{when}" for stage in ("train", "test", "predict", "epoch")
          for when in ("begin", "end")] + [
    f"on_{kind}batch_{when}" for kind in ("", "train_", "test_", "predict_")
    for when in ("begin", "end")]


class EngineCallback:
    """One callback of ``kprune.callbacks()``, whose engine is chosen from the model that
    ``fit`` hands it: on ``set_model`` it becomes (and forwards every hook to) the tf_keras
    or the Keras 3 callback of its role, so one callbacks line serves both Kerases.

    ``role`` is ``"update"`` (the step counter), ``"guard"`` (the schedule check),
    ``"logger"`` (sparsity logs) or ``"summaries"`` (TensorBoard); ``chosen`` is the
    engine's callback once a model was set (None before).

    Example:
        >>> update, guard, logger = kprune.callbacks()
        >>> keras3_pruned.fit(x, y, callbacks=[update, guard, logger])
        >>> type(guard.chosen).__module__
        'kprune.engines.keras3.callbacks'
    """

    def __init__(self, role, *, log_dir=None, log_sparsity=True, strict=False):
        roles = _roles(log_dir=log_dir, log_sparsity=log_sparsity, strict=strict)
        if role not in roles:
            raise ValueError(f"Argument `role` must be one of {tuple(roles)} with these "
                             f"options. Received: role={role!r}")
        self.role = role
        self._options = dict(log_dir=log_dir, log_sparsity=log_sparsity, strict=strict)
        self.chosen = None
        self._engine_name = None  # the chosen callback's engine
        self.model = None
        self.params = {}

    # Keras 3 asks before set_model whether batch ends can be dispatched asynchronously:
    # they can, except for TensorBoard (its batch-end hook writes).
    @property
    def async_safe(self):
        return self.role != "summaries"

    def set_model(self, model):
        engine = engine_of(model)
        if self.chosen is None or engine.name != self._engine_name:
            options = self._options
            chosen = _engine_callbacks(model, engine, **options)[
                _roles(**options).index(self.role)]
            self._engine_name = engine.name
            if self.params:
                chosen.set_params(self.params)
            self.chosen = chosen
            for hook in _HOOKS:  # from now on, Keras calls the engine's hooks directly
                setattr(self, hook, getattr(chosen, hook))
        self.chosen.set_model(model)
        self.model = model

    def set_params(self, params):
        self.params = params
        if self.chosen is not None:
            self.chosen.set_params(params)

    # tf_keras asks these (after set_model) to skip the batch hooks nobody implements
    def _implements_train_batch_hooks(self):
        return self._chosen()._implements_train_batch_hooks()

    def _implements_test_batch_hooks(self):
        return self._chosen()._implements_test_batch_hooks()

    def _implements_predict_batch_hooks(self):
        return self._chosen()._implements_predict_batch_hooks()

    @property
    def _supports_tf_logs(self):
        return getattr(self.chosen, "_supports_tf_logs", False)

    def _chosen(self):
        if self.chosen is None:
            raise RuntimeError(
                "kprune.callbacks() without a model choose their engine when Keras hands "
                "them the model (`set_model`, which `fit` calls); this one was used before "
                f"any model was set. Pass them to `model.fit(..., callbacks=...)`, or give "
                f"the model: kprune.callbacks(pruned). Received: role={self.role!r}"
            )
        return self.chosen

    def __getattr__(self, name):  # the chosen callback's state (guard.steps, ...)
        if name.startswith("__") or name in ("chosen", "role", "_options", "_engine_name"):
            raise AttributeError(name)
        return getattr(self._chosen(), name)

    def __repr__(self):
        return f"EngineCallback(role={self.role!r}, chosen={type(self.chosen).__name__})"


def _forward(hook):
    def forward(self, *args, **kwargs):
        return getattr(self._chosen(), hook)(*args, **kwargs)

    forward.__name__ = hook
    return forward


for _hook in _HOOKS:
    setattr(EngineCallback, _hook, _forward(_hook))
del _hook


class PruningStepper:
    """Pruning in a custom training loop (no ``fit``), which tfmot leaves to you.

    Call the model with ``training=True`` in your step, and ``step()`` before it.
    ``begin()`` (or entering the ``with`` block) arms the pruning layers; ``end_epoch()``
    (or leaving the block) writes the masks into the kernels.

    On tf_keras, tfmot's wrappers count steps and update masks themselves (``step()``
    does nothing). On Keras 3 (any backend) ``step()`` advances the step and recomputes
    the masks at the schedule's firing steps, as ``fit`` with ``kprune.callbacks()``
    does; it returns True when it changed them (on JAX, a loop that holds the model's
    state itself, through ``stateless_call``, reads ``model.non_trainable_variables``
    again then).

    Example:
        >>> with kprune.PruningStepper(pruned) as stepper:
        ...     for epoch in range(2):
        ...         for x, y in dataset:
        ...             stepper.step()
        ...             train_step(x, y)          # uses pruned(x, training=True)
        ...         stepper.end_epoch()
    """

    def __init__(self, model):
        self._keras3 = engine_of(model).name == "keras3"
        if self._keras3:
            from kprune.engines.keras3 import callbacks as keras3_callbacks

            keras3_callbacks.callbacks(model)  # checks the model and its pruning layers
            self._update = keras3_callbacks.UpdatePruningStep()
        else:
            from kprune.engines.tfkeras.callbacks import wrapped_layers

            loader.check_model(model)
            if not wrapped_layers(model):
                raise ValueError(
                    "Argument `model` has no pruning wrappers; pass the model returned by "
                    f"kprune.apply. Received: model={model.name!r}"
                )
            self._update = loader.tfmot.sparsity.keras.UpdatePruningStep()
        self._update.set_model(model)

    def begin(self):
        with distribute.scope(self._update.model):
            self._update.on_train_begin()
        return self

    def step(self):
        """Before each training step: on Keras 3, count it and update the masks that
        fire (True when some did); on tf_keras, nothing (False)."""
        if not self._keras3:
            return False
        self._update.on_train_batch_begin(0)
        return any(wrapper.fires_at(self._update.step) for wrapper in self._update.wrappers)

    def end_epoch(self):
        with distribute.scope(self._update.model):  # a cross-replica write under tf.distribute
            self._update.on_epoch_end(0)

    def __enter__(self):
        return self.begin()

    def __exit__(self, *exc):
        self.end_epoch()
        if self._keras3:
            self._update.on_train_end()  # disarms the pruning layers
        return False
