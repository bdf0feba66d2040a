"""How a model is trained and scored: the one training loop every method shares.

:class:`Trainer` runs ``model.fit`` on arrays (or your own fit callable) and scores a
model on validation data; :func:`compile_classifier` compiles a classifier the way
kprune's workflows, recipes and PQAT do and :func:`accuracy` is ``argmax == label`` (both
from :mod:`kprune.engines.classifier`, here too); :func:`split_validation` holds a validation split out of the training data, so that
choices made on validation accuracy (``accuracy_floor``, a sensitivity scan) never
look at the test split that is reported.

Example:
    >>> from kprune.methods.trainer import Trainer, compile_classifier
    >>> trainer = Trainer(x, y, validation_data=(x_val, y_val), batch_size=128)
    >>> trainer.fit(compile_classifier(model), epochs=1)
"""

import math

import numpy as np

from kprune.core.checks import check_int
from kprune.engines import seeding
from kprune.engines.callbacks import is_schedule_guard
from kprune.engines.classifier import accuracy, compile_classifier, ends_in_softmax
from kprune.engines.tfkeras import loader

__all__ = ["Trainer", "accuracy", "compile_classifier", "ends_in_softmax", "split_validation",
           "validation_indices"]


class Trainer:
    """How a workflow trains and evaluates a model: the one training loop they all share.

    Either give arrays (``x``, ``y``, optional ``validation_data``) and kprune calls
    ``model.fit``, or give your own ``fit(model, epochs, callbacks) -> History`` (your
    ``tf.data`` pipeline, class weights, ...) with ``steps_per_epoch``, the number of
    batches your fit runs per epoch, which the pruning schedules need.

    Args:
        x, y: training inputs and integer (or one-hot) labels.
        validation_data: ``(x_val, y_val)`` for the validation accuracy in the history
            (and for ``accuracy_floor``). Accuracy is ``argmax(predict(x)) == y``.
        batch_size: batch size of the built-in fit and of evaluation.
        compile: how each new model is compiled before training: None = Adam(1e-3),
            sparse categorical cross-entropy and accuracy
            (:func:`compile_classifier`); a dict of ``model.compile``
            keyword arguments (an optimizer object in it is copied from its config
            for every model); a callable ``compile(model)``; or False when your
            ``fit`` compiles.
        fit: your ``fit(model, epochs, callbacks) -> History``; pass ``callbacks`` on to
            ``model.fit`` (they hold tfmot's ``UpdatePruningStep``).
        evaluate: your ``evaluate(model) -> accuracy``, instead of ``validation_data``.
        steps_per_epoch: batches per epoch of your ``fit`` (required with ``fit``).
        callbacks: extra Keras callbacks for every fit (CSVLogger, TensorBoard, ...).
        verbose: the built-in fit's verbosity.
        seed: make the built-in fit deterministic: every generator seeded with it,
            TensorFlow's op determinism on during the fit, each epoch's shuffle a
            function of ``(seed, epoch)`` alone (:func:`kprune.engines.seeding.epoch_order`)
            and so the draws of Dropout and noise layers
            (:class:`kprune.engines.seeding.EpochSeeds`): the same seed gives the same
            weights and masks, and a fit resumed at an epoch sees the batches and draws
            of one never interrupted. None: Keras's own
            shuffle, unseeded.

    Example:
        >>> trainer = Trainer(x, y, validation_data=(xv, yv), batch_size=128,
        ...                   compile=dict(optimizer="adam", metrics=["accuracy"],
        ...                                loss=loss))
        >>> def my_fit(model, epochs, callbacks):
        ...     return model.fit(dataset, epochs=epochs, callbacks=callbacks, verbose=0)
        >>> trainer = Trainer(fit=my_fit, steps_per_epoch=len(dataset),
        ...                   validation_data=(xv, yv))
    """

    def __init__(self, x=None, y=None, *, validation_data=None, batch_size=32,
                 compile=None, fit=None, evaluate=None, steps_per_epoch=None,
                 callbacks=(), verbose=0, seed=None):
        if fit is not None:
            if x is not None or y is not None:
                raise ValueError(
                    "Give either training arrays (`x`, `y`) or a `fit` callable, not both. "
                    f"Received: x of type {type(x).__name__}, fit={fit!r}"
                )
            if not callable(fit):
                raise TypeError(
                    "Argument `fit` must be a callable fit(model, epochs, callbacks). "
                    f"Received: fit={fit!r}"
                )
            if steps_per_epoch is None:
                raise ValueError(
                    "Argument `steps_per_epoch` is required with a `fit` callable: the "
                    "pruning schedules are counted in training steps. Received: "
                    "steps_per_epoch=None"
                )
        else:
            if x is None or y is None:
                raise ValueError(
                    "Give training arrays `x` and `y`, or a `fit` callable. "
                    f"Received: x={'None' if x is None else type(x).__name__}, "
                    f"y={'None' if y is None else type(y).__name__}"
                )
            if len(x) != len(y):
                raise ValueError(
                    "Arguments `x` and `y` must hold the same number of examples. "
                    f"Received: len(x)={len(x)}, len(y)={len(y)}"
                )
            if compile is False:
                raise ValueError(
                    "Argument `compile=False` only makes sense with your own `fit`; the "
                    "built-in fit needs a compiled model. Received: compile=False"
                )
        check_int(batch_size, "batch_size")
        if seed is not None:
            check_int(seed, "seed", minimum=0)
            if fit is not None:
                raise ValueError(
                    "Argument `seed` makes the built-in fit deterministic; with your own "
                    "`fit`, seed your data pipeline yourself (and use "
                    f"kprune.engines.seeding.deterministic). Received: seed={seed!r}, fit={fit!r}"
                )
        if steps_per_epoch is not None:
            check_int(steps_per_epoch, "steps_per_epoch")
        if validation_data is not None:
            try:
                x_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError(
                    "Argument `validation_data` must be a pair (x_val, y_val). "
                    f"Received: validation_data of type {type(validation_data).__name__}"
                ) from None
            if len(x_val) != len(y_val):
                raise ValueError(
                    "Argument `validation_data` must hold as many labels as inputs. "
                    f"Received: len(x_val)={len(x_val)}, len(y_val)={len(y_val)}"
                )
        if evaluate is not None and not callable(evaluate):
            raise TypeError(
                f"Argument `evaluate` must be a callable evaluate(model) -> accuracy. "
                f"Received: evaluate={evaluate!r}"
            )
        if not (compile is None or compile is False or callable(compile)
                or isinstance(compile, dict)):
            raise TypeError(
                "Argument `compile` must be None, a dict of model.compile arguments, a "
                f"callable compile(model) or False. Received: compile={compile!r}"
            )
        self.x, self.y = x, y
        self.validation_data = validation_data
        self.batch_size = batch_size
        self._compile = compile
        self._fit = fit
        self._evaluate = evaluate
        self._steps_per_epoch = steps_per_epoch
        self.extra_callbacks = list(callbacks)
        self.verbose = verbose
        self.seed = seed

    @property
    def steps_per_epoch(self):
        """Training steps (batches) per epoch, as the pruning schedules count them."""
        if self._steps_per_epoch is not None:
            return self._steps_per_epoch
        return math.ceil(len(self.x) / self.batch_size)

    @property
    def can_evaluate(self):
        return self._evaluate is not None or self.validation_data is not None

    def compile(self, model):
        """Compile ``model`` as this trainer says; return it."""
        spec = self._compile
        if spec is False:
            return model
        if spec is None:
            return compile_classifier(model)
        if callable(spec):
            spec(model)
            return model
        kwargs = dict(spec)
        optimizer = kwargs.get("optimizer")
        if optimizer is not None and not isinstance(optimizer, str):
            kwargs["optimizer"] = type(optimizer).from_config(optimizer.get_config())
        model.compile(**kwargs)
        return model

    def fit(self, model, epochs, callbacks=(), *, initial_epoch=0, initial_step=0):
        """Compile and train ``model`` for ``epochs``; return one logs dict per epoch.

        ``initial_epoch`` (built-in fit only) resumes a fit: epochs ``initial_epoch`` to
        ``epochs - 1`` run, as in Keras. ``initial_step`` (seeded trainer only) starts
        inside epoch ``initial_epoch``, after that many of its batches: the rest of that
        epoch runs as a fit of its own (without the schedule guard), then the others.
        """
        check_int(epochs, "epochs")
        check_int(initial_epoch, "initial_epoch", minimum=0)
        check_int(initial_step, "initial_step", minimum=0)
        if initial_epoch and self._fit is not None:
            raise ValueError(
                "Argument `initial_epoch` (resuming a fit) needs the built-in fit on "
                f"arrays; your own `fit` cannot be resumed. Received: initial_epoch={initial_epoch}"
            )
        if initial_step and self.seed is None:
            raise ValueError(
                "Argument `initial_step` (resuming inside an epoch) needs a seeded trainer "
                "(Trainer(seed=...)), whose batches are known in advance. Received: "
                f"initial_step={initial_step}"
            )
        self.compile(model)
        callbacks = list(callbacks) + self.extra_callbacks
        if self._fit is not None:
            history = self._fit(model, epochs, callbacks)
        elif self.seed is not None:
            with seeding.deterministic(self.seed, model):
                history = None
                if initial_step:  # the rest of the interrupted epoch
                    partial = [c for c in callbacks if not is_schedule_guard(c)]
                    history = model.fit(
                        self._epochs_dataset(initial_epoch, initial_epoch + 1,
                                             skip=initial_step),
                        epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                        steps_per_epoch=self.steps_per_epoch - initial_step,
                        callbacks=[seeding.epoch_seeds(model, self.seed), *partial],
                        verbose=self.verbose, shuffle=False,  # the dataset is in seeded order
                    )
                    initial_epoch += 1
                if initial_epoch < epochs:
                    history = model.fit(
                        self._epochs_dataset(initial_epoch, epochs), epochs=epochs,
                        initial_epoch=initial_epoch, steps_per_epoch=self.steps_per_epoch,
                        callbacks=[seeding.epoch_seeds(model, self.seed), *callbacks],
                        verbose=self.verbose, shuffle=False,
                    )
        else:
            history = model.fit(
                self.x, self.y, batch_size=self.batch_size, epochs=epochs,
                initial_epoch=initial_epoch, callbacks=callbacks, verbose=self.verbose,
            )
        logs = getattr(history, "history", None) or {}
        count = max((len(v) for v in logs.values()), default=0)
        return [{k: v[i] for k, v in logs.items() if i < len(v)} for i in range(count)]

    def _epochs_dataset(self, first, last, *, skip=0):
        """Batches of epochs ``first`` to ``last - 1``, each in its seeded order (the
        first ``skip`` batches of epoch ``first`` left out).

        Under ``tf.distribute`` each batch is split among the replicas (and, with several
        workers, each worker reads its part of every batch: tf.data's default sharding
        after rebatching), so every strategy trains on the same batches.
        """
        tf = loader.tf
        x, y = tf.constant(np.asarray(self.x)), tf.constant(np.asarray(self.y))
        batches = None
        for epoch in range(first, last):
            order = seeding.epoch_order(len(self.x), seed=self.seed, epoch=epoch)
            part = tf.data.Dataset.from_tensor_slices(order).batch(self.batch_size)
            part = part.skip(skip) if epoch == first else part
            batches = part if batches is None else batches.concatenate(part)
        return batches.map(lambda index: (tf.gather(x, index), tf.gather(y, index)))

    def evaluate(self, model):
        """Validation accuracy of ``model`` (a float), or None without validation data."""
        if self._evaluate is not None:
            return float(self._evaluate(model))
        if self.validation_data is None:
            return None
        x_val, y_val = self.validation_data
        return accuracy(model, x_val, y_val, batch_size=max(self.batch_size, 256))


def split_validation(x, y, validation, *, seed=0):
    """Hold a validation split out of training data: ``((x_train, y_train), (x_val, y_val))``.

    The examples are shuffled with ``numpy.random.default_rng(seed).permutation``; the
    first ``n`` of the permutation are the validation split, the rest the training split
    (both in the permutation's order). The same ``x``, ``validation`` and ``seed`` always
    give the same split. It is not stratified: on a few hundred examples a class may be
    a little over- or under-represented.

    Args:
        x, y: training inputs and labels (arrays of the same length).
        validation: a fraction in (0, 1) of the examples (rounded, at least one), or a
            positive integer count below ``len(x)``.
        seed: a non-negative integer seed for the permutation.

    Example:
        >>> (x_train, y_train), (x_val, y_val) = split_validation(x, y, 0.1, seed=0)
        >>> len(x_val), len(x_train)      # for 60,000 MNIST training images
        (6000, 54000)
        >>> trainer = Trainer(x_train, y_train, validation_data=(x_val, y_val))
    """
    if len(x) != len(y):
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of examples. "
            f"Received: len(x)={len(x)}, len(y)={len(y)}"
        )
    train, val = validation_indices(len(x), validation, seed=seed)
    x, y = np.asarray(x), np.asarray(y)
    return (x[train], y[train]), (x[val], y[val])


def validation_indices(n_examples, validation, *, seed=0):
    """The indices :func:`split_validation` uses: ``(train_indices, validation_indices)``.

    Example:
        >>> train, val = validation_indices(10, 0.2, seed=0)
        >>> len(train), len(val), set(train) & set(val)
        (8, 2, set())
    """
    check_int(seed, "seed", minimum=0)
    n = _validation_size(validation, n_examples)
    order = np.random.default_rng(seed).permutation(n_examples)
    return order[n:], order[:n]


def _validation_size(validation, n_examples):
    """How many of ``n_examples`` a ``validation`` fraction or count holds out (checked)."""
    if isinstance(validation, (bool, np.bool_)) or not isinstance(
        validation, (int, float, np.integer, np.floating)
    ):
        raise TypeError(
            "Argument `validation` must be a fraction in (0, 1) or a positive integer "
            f"count. Received: validation={validation!r} of type {type(validation).__name__}"
        )
    if isinstance(validation, (float, np.floating)):
        if not 0 < validation < 1:
            raise ValueError(
                "Argument `validation` must be a fraction in (0, 1) when it is a float "
                f"(or a positive integer count). Received: validation={validation!r}"
            )
        n = max(1, round(float(validation) * n_examples))
    else:
        if validation < 1:
            raise ValueError(
                "Argument `validation` must be a positive integer count (or a fraction in "
                f"(0, 1)). Received: validation={validation!r}"
            )
        n = int(validation)
    if n >= n_examples:
        raise ValueError(
            f"Argument `validation` must leave training examples: it holds out {n} of "
            f"{n_examples}, so none would be left to train on. Received: "
            f"validation={validation!r} for {n_examples} examples"
        )
    return n
