"""Learned sparsity by Sparse Variational Dropout (Molchanov, Ashukha and Vetrov 2017).

Each pruned weight ``theta`` gets a learned noise level ``log_sigma2``; training with the
local reparameterisation trick and a KL penalty drives the noise-to-signal ratio
``log_alpha = log_sigma2 - log(theta ** 2)`` of useless weights up, and every weight whose
``log_alpha`` ends at or above ``threshold`` (3 in the paper: a dropout rate above 0.95) is
set to zero. Unlike magnitude pruning, nobody chooses the sparsity per layer: the KL term
decides how many weights each layer needs.

:func:`sparsify` does it on the ``Dense`` and ``Conv2D`` layers of any tf_keras
Sequential or functional model (other layers train as they are) and returns a plain
tf_keras model with exact zeros, which the rest of kprune takes like any pruned model
(:func:`kprune.methods.workflows.fixed_mask` to fine-tune with the zeros held,
:func:`kprune.sparsity_report`, export). Units left with no incoming weight output a
constant; :func:`fold_constant_units` moves that constant into the next layer's bias so
that their bias and outgoing weights are zero too (the outputs do not change).

Example:
    >>> from kprune.methods import variational
    >>> trainer = Trainer(x_train, y_train, validation_data=(x_val, y_val), batch_size=100)
    >>> result = variational.sparsify(dense_model, trainer, epochs=30, kl_ramp_epochs=5)
    >>> result.kept                   # {"fc1": 0.012, "fc2": 0.09, ...}
    >>> result.model                  # plain tf_keras model, zeros where log_alpha >= 3
"""

import math
from dataclasses import dataclass, field

import numpy as np

from kprune.core.checks import check_int, check_number
from kprune.core.table import table
from kprune.engines import engine_of
from kprune.engines.graph_reader import read
from kprune.engines.tfkeras import loader
from kprune.methods.checkpoints import resumable_fit, run_checkpoints
from kprune.methods.trainer import Trainer, ends_in_softmax

__all__ = ["sparsify", "check_model", "VariationalResult", "VariationalDense",
           "VariationalConv2D", "neg_kl", "fold_constant_units", "nonzero_params",
           "LOG_ALPHA_CLIP"]

keras = loader.keras
tf = loader.tf

LOG_ALPHA_CLIP = 10.0
_K1, _K2, _K3 = 0.63576, 1.87320, 1.48695
_PRUNED_TYPES = ("Dense", "Conv2D")


def neg_kl(log_alpha):
    """``-KL(q || log-uniform prior)`` per weight, Molchanov et al.'s approximation.

    Zero (its maximum) as ``log_alpha -> +inf`` (pure noise: the weight costs nothing),
    about ``-k1 = -0.636`` plus ``0.5 * log_alpha`` as ``log_alpha -> -inf``.

    Example:
        >>> float(neg_kl(tf.constant(10.0)))    # a dropped weight is almost free
        -4.5e-05
    """
    log_alpha = tf.convert_to_tensor(log_alpha)
    return (_K1 * tf.sigmoid(_K2 + _K3 * log_alpha)
            - 0.5 * tf.math.log1p(tf.exp(-log_alpha)) - _K1)


class _Variational:
    """What the variational Dense and Conv2D share: ``log_sigma2``, ``log_alpha``, the
    mask, the KL term and the stochastic/deterministic switch."""

    def __init__(self, *args, threshold=3.0, noise_speedup=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = float(threshold)
        self.noise_speedup = float(noise_speedup)

    def build(self, input_shape):
        super().build(input_shape)
        # stored divided by noise_speedup, so that the optimizer's steps move it faster
        self.scaled_log_sigma2 = self.add_weight(
            name="scaled_log_sigma2", shape=self.kernel.shape,
            initializer=keras.initializers.Constant(-10.0 / self.noise_speedup),
            trainable=True)
        # kl_weight / N_train, set by sparsify's ramp callback
        self.kl_scale = self.add_weight(name="kl_scale", shape=(),
                                        initializer="zeros", trainable=False)

    @property
    def log_sigma2(self):
        """The log-variance of each weight's noise."""
        return self.noise_speedup * self.scaled_log_sigma2

    def set_log_sigma2(self, value):
        """Set the noise's log-variance (an array shaped like the kernel)."""
        self.scaled_log_sigma2.assign(tf.cast(value, self.kernel.dtype)
                                      / self.noise_speedup)

    def log_alpha(self):
        """``clip(log_sigma2 - log(theta ** 2 + 1e-8), -10, 10)``, shaped like the kernel."""
        return tf.clip_by_value(self.log_sigma2 - tf.math.log(tf.square(self.kernel) + 1e-8),
                                -LOG_ALPHA_CLIP, LOG_ALPHA_CLIP)

    def keep_mask(self):
        """1 where ``log_alpha < threshold`` (the weight stays), 0 where it is dropped."""
        return tf.cast(self.log_alpha() < self.threshold, self.kernel.dtype)

    def call(self, inputs, training=None):
        self.add_loss(-self.kl_scale * tf.reduce_sum(neg_kl(self.log_alpha())))
        if training is None:
            training = keras.backend.learning_phase()
        outputs = tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: self._noisy(inputs),
            lambda: self._linear(inputs, self.kernel * self.keep_mask()))
        if self.use_bias:
            outputs = self._add_bias(outputs)
        return outputs if self.activation is None else self.activation(outputs)

    def _noisy(self, inputs):
        """Local reparameterisation: the pre-activation's mean plus its noise."""
        mean = self._linear(inputs, self.kernel)
        variance = self._linear(tf.square(inputs), tf.exp(self.log_sigma2))
        return mean + tf.sqrt(variance + 1e-8) * tf.random.normal(tf.shape(mean))

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "noise_speedup": self.noise_speedup}


class VariationalDense(_Variational, keras.layers.Dense):
    """A ``Dense`` layer trained by sparse variational dropout (see the module doc).

    Example:
        >>> layer = VariationalDense(10, activation="relu")
    """

    def _linear(self, inputs, kernel):
        return tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])

    def _add_bias(self, outputs):
        return tf.nn.bias_add(outputs, self.bias)


class VariationalConv2D(_Variational, keras.layers.Conv2D):
    """A ``Conv2D`` layer trained by sparse variational dropout (see the module doc).

    Example:
        >>> layer = VariationalConv2D(20, 5, activation="relu")
    """

    def _linear(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def _add_bias(self, outputs):
        return tf.nn.bias_add(outputs, self.bias, data_format=self._tf_data_format)


_VARIATIONAL = {"Dense": VariationalDense, "Conv2D": VariationalConv2D}


@dataclass(frozen=True)
class VariationalResult:
    """What :func:`sparsify` returns.

    Attributes:
        model: a plain tf_keras model (the input's architecture), zeros where
            ``log_alpha >= threshold``, constant units folded (:func:`fold_constant_units`).
        kept: ``{layer name: fraction of its kernel kept}`` of the sparsified layers.
        history: one dict per epoch: ``stage`` (``variational`` or ``finetune``),
            ``epoch`` (1, 2, ... over both stages), for the variational epochs
            ``kl_weight`` and ``kept`` (the fraction of the sparsified layers' kernel
            weights kept), and the fit's logs.
        params, nonzero: the model's parameters and non-zero parameters (kernels, biases
            and every other weight).
    """

    model: object
    kept: dict
    history: list = field(default_factory=list)
    params: int = 0
    nonzero: int = 0

    @property
    def compression(self):
        """``params / nonzero``: how many times fewer non-zero parameters."""
        return self.params / max(self.nonzero, 1)

    def __str__(self):
        rows = [(name, f"{fraction:.4f}", f"{1 / fraction:.1f}x" if fraction else "inf")
                for name, fraction in self.kept.items()]
        return (table(("layer", "kept", "fewer"), rows) + f"\n{self.nonzero:,} of "
                f"{self.params:,} parameters non-zero ({self.compression:.1f}x fewer)")


def sparsify(model, trainer, *, epochs, layers=None, threshold=3.0, kl_ramp_epochs=0,
             kl_weight=1.0, noise_speedup=1.0, finetune_epochs=0, distill=0.0,
             temperature=1.0, teacher=None, finetune_teacher=None,
             finetune_temperature=None, checkpoint_dir=None):
    """Train ``model`` by sparse variational dropout; return the zeroed plain model.

    Args:
        model: a trained (or fresh) tf_keras Sequential or functional model; never
            modified (a copy is trained). Starting from trained dense weights converges
            much faster than from scratch.
        trainer: a :class:`~kprune.methods.trainer.Trainer` (its compile, batches, seed
            and validation data are used) or a pair ``(x_train, y_train)``.
        epochs: epochs of variational training.
        layers: which layers learn their sparsity: None (every ``Dense`` and ``Conv2D``),
            a list of layer names, or a :class:`~kprune.core.plan.PruningPlan` (the
            ``Dense``/``Conv2D`` layers it prunes).
        threshold: weights with ``log_alpha >= threshold`` are dropped (3: dropout rate
            above 0.95, as in the paper); a number in (-10, 10).
        kl_ramp_epochs: the KL weight rises linearly to ``kl_weight`` over this many
            epochs (0: at full weight from the start).
        kl_weight: the KL term's final weight (1: the variational bound; more trades
            accuracy for sparsity, and reaches it in fewer epochs).
        noise_speedup: ``log_sigma2`` is stored divided by this, so the optimizer moves
            it this many times faster than the weights: from its start at -10 a dropped
            weight needs ``log_sigma2`` near ``log(theta ** 2) + 3``, thousands of Adam
            steps of 0.001 away (1: the paper's parameterisation; 10 made LeNet-300-100
            less sparse in 15 epochs, not more, when tried).
        finetune_epochs: then train the zeroed plain model this many epochs with its
            zeros held (:class:`kprune.methods.workflows.FixedMask` on the sparsified
            kernels; folded biases stay zero, as nothing reads their units).
        distill: a fraction in [0, 1): knowledge distillation (Hinton et al. 2015) from
            ``teacher`` into the sparse copy in both stages; the loss is ``(1 - distill)
            *`` the cross-entropy with the labels ``+ distill * temperature ** 2 *`` the
            cross-entropy from the teacher's probabilities to the model's, both softened
            by ``temperature`` (at 1: training towards ``(1 - distill) * labels + distill
            * teacher's probabilities``). Needs a trainer on arrays.
        temperature: the softening (a number >= 1); higher passes on more of how the
            teacher ranks the wrong classes, and weighs the teacher more against the KL
            term (a larger ``kl_weight`` gives the same sparsity).
        teacher: the Keras classifier distilled from (None: ``model``, the dense start);
            a dense model trained longer makes a better teacher at temperatures above 1.
        finetune_teacher, finetune_temperature: the fine-tune's own teacher and
            temperature (None: the variational stage's). The fine-tune does not change
            the sparsity, so a strong teacher at a high temperature can be distilled
            there without the KL term's weight having to grow to match it.
        checkpoint_dir: a folder for a checkpoint at every epoch of both stages (see
            :mod:`kprune.methods.checkpoints`); if it holds some from an interrupted run
            with the same arguments, the run goes on after the newest. Resumed epochs
            draw other noise than an uninterrupted run would: the result is as good,
            not bit for bit the same.

    Returns:
        :class:`VariationalResult`.

    Example:
        >>> result = sparsify(model, trainer, epochs=20, kl_ramp_epochs=5)
        >>> print(result)
    """
    check_model(model)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
            -LOG_ALPHA_CLIP < threshold < LOG_ALPHA_CLIP):
        raise ValueError(
            f"Argument `threshold` must be a number in ({-LOG_ALPHA_CLIP:g}, "
            f"{LOG_ALPHA_CLIP:g}) (log_alpha is clipped to that range; 3 drops weights "
            f"whose dropout rate is above 0.95). Received: threshold={threshold!r}")
    check_int(epochs, "epochs")
    check_int(kl_ramp_epochs, "kl_ramp_epochs", minimum=0)
    check_int(finetune_epochs, "finetune_epochs", minimum=0)
    check_number(kl_weight, "kl_weight")
    if isinstance(noise_speedup, bool) or not isinstance(noise_speedup, (int, float)) or not (
            0 < noise_speedup < math.inf):
        raise ValueError("Argument `noise_speedup` must be a positive number. "
                         f"Received: noise_speedup={noise_speedup!r}")
    if isinstance(trainer, tuple) and len(trainer) == 2:
        trainer = Trainer(*trainer, batch_size=100)
    if not isinstance(trainer, Trainer):
        raise TypeError("Argument `trainer` must be a kprune Trainer or a pair (x_train, "
                        f"y_train). Received: trainer={trainer!r}")
    if isinstance(distill, bool) or not isinstance(distill, (int, float)) or not (
            0 <= distill < 1):
        raise ValueError("Argument `distill` must be a fraction in [0, 1) (the dense "
                         f"model's share of the targets). Received: distill={distill!r}")
    _check_temperature(temperature, "temperature")
    _check_teacher(teacher, "teacher", "the dense `model`")
    if finetune_temperature is not None:
        _check_temperature(finetune_temperature, "finetune_temperature")
    _check_teacher(finetune_teacher, "finetune_teacher", "the variational stage's")
    if not distill and (finetune_teacher is not None or finetune_temperature is not None):
        raise ValueError("Arguments `finetune_teacher` and `finetune_temperature` distil in "
                         "the fine-tune, with the share `distill`: it must be above 0. "
                         f"Received: distill={distill!r}")
    given = finetuner = trainer
    if distill:
        teacher = model if teacher is None else teacher
        trainer = finetuner = _distilling(given, teacher, distill, temperature)
        if finetune_teacher is not None or finetune_temperature is not None:
            finetuner = _distilling(
                given, teacher if finetune_teacher is None else finetune_teacher, distill,
                temperature if finetune_temperature is None else finetune_temperature)
    names = _selected(model, layers)
    examples = len(trainer.x) if trainer.x is not None else (
        trainer.steps_per_epoch * trainer.batch_size)

    store = run_checkpoints(
        checkpoint_dir, dict(workflow="variational", names=names, epochs=epochs,
                             threshold=threshold, kl_ramp_epochs=kl_ramp_epochs,
                             kl_weight=kl_weight, noise_speedup=noise_speedup,
                             finetune_epochs=finetune_epochs, distill=distill,
                             temperature=temperature,
                             finetune_temperature=finetune_temperature), model=model)
    variational = _variational_copy(model, names, threshold=threshold,
                                    noise_speedup=noise_speedup)
    ramp = _KLRamp([variational.get_layer(n) for n in names], kl_weight=kl_weight,
                   ramp_epochs=kl_ramp_epochs, examples=examples)
    rows = _Rows("variational", extra=ramp.row)
    plain = keras.models.clone_model(model)
    done = None if store is None else store.find("variational-done")
    if done is not None:  # resumed after the variational stage
        plain.set_weights(done.arrays("model"))
        rows.restore(done.state)
    else:
        _resumable(trainer, variational, epochs, [ramp, rows], store, rows)
        _copy_zeroed(variational, plain, names)
        fold_constant_units(plain)
        if store is not None:
            store.save("variational-done", {"model": plain.get_weights()}, rows.state())
    history = rows.rows
    if finetune_epochs:
        from kprune.methods.workflows import FixedMask

        held = FixedMask({name: plain.get_layer(name).kernel.numpy() != 0 for name in names})
        tuned = _Rows("finetune", offset=epochs)
        _resumable(finetuner, plain, finetune_epochs, [held, tuned], store, tuned)
        history = history + tuned.rows
        fold_constant_units(plain)
        if distill:  # compiled as the caller's trainer says: a saved model cannot keep
            given.compile(plain)  # the distillation loss
    kept = {name: float(np.count_nonzero(plain.get_layer(name).kernel.numpy())
                        / np.prod(plain.get_layer(name).kernel.shape)) for name in names}
    params, nonzero = nonzero_params(plain)
    return VariationalResult(plain, kept, history, params, nonzero)


def _check_temperature(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            1 <= value < math.inf):
        raise ValueError(f"Argument `{argument}` must be a number >= 1 (1: the teacher's "
                         f"probabilities as they are). Received: {argument}={value!r}")


def _check_teacher(value, argument, none_means):
    if value is not None and not isinstance(value, keras.Model):
        raise TypeError(f"Argument `{argument}` must be a Keras classifier (or None: "
                        f"{none_means}). Received: {argument}={value!r}")


def _copy_zeroed(variational, plain, names):
    """Into ``plain``: the variational model's weights, zero where ``log_alpha`` is at or
    above the threshold."""
    for layer in plain.layers:
        source = variational.get_layer(layer.name)
        if layer.name in names:
            layer.kernel.assign(source.kernel * source.keep_mask())
            if layer.use_bias:
                layer.bias.assign(source.bias)
        elif layer.weights:  # the layers that trained as they are
            layer.set_weights(source.get_weights())


def _resumable(trainer, model, epochs, callbacks, store, rows):
    resumable_fit(trainer, model, epochs, callbacks, store=store, key=rows.stage,
                  state=rows.state, restore=rows.restore)


def nonzero_params(model):
    """``(parameters, non-zero parameters)`` of ``model``, every weight counted.

    Example:
        >>> nonzero_params(model)
        (266610, 4210)
    """
    arrays = model.get_weights()
    return (int(sum(a.size for a in arrays)), int(sum(np.count_nonzero(a) for a in arrays)))


def _distilling(trainer, teacher, share, temperature):
    """``trainer`` with the distillation loss of :func:`sparsify` (its optimizer and rate).

    At temperature 1 the targets are ``(1 - share) * labels + share * teacher's
    probabilities`` under Keras's cross-entropy; above it each example's target row holds
    the one-hot label, then the teacher's softened probabilities, for Hinton's loss.
    """
    if trainer.x is None:
        raise ValueError("Argument `distill` needs a trainer on arrays (x, y): its labels "
                         "are mixed with the dense model's predictions. Received: a "
                         "Trainer with its own `fit`")
    outputs = teacher.predict(trainer.x, batch_size=1024, verbose=0)
    classes = outputs.shape[-1]
    labels = np.asarray(trainer.y)
    if labels.ndim == 1 or labels.shape[-1] == 1:
        labels = np.eye(classes)[labels.reshape(-1).astype(int)]

    if temperature == 1:  # mixed targets, Keras's own cross-entropy
        probabilities = outputs if ends_in_softmax(teacher) else tf.nn.softmax(outputs).numpy()
        targets = (1 - share) * labels + share * probabilities

        def loss_and_metrics(model):
            return (keras.losses.CategoricalCrossentropy(from_logits=not ends_in_softmax(model)),
                    ["accuracy"])
    else:  # [labels, softened teacher] per row, Hinton's loss
        softened = tf.nn.softmax(_log_probabilities(teacher, outputs) / temperature).numpy()
        targets = np.concatenate([labels, softened], axis=-1)

        def loss_and_metrics(model):
            def distillation(targets, outputs):
                log_p = _log_probabilities(model, outputs)
                hard = -tf.reduce_sum(targets[:, :classes] * log_p, axis=-1)
                soft = -tf.reduce_sum(targets[:, classes:]
                                      * tf.nn.log_softmax(log_p / temperature), axis=-1)
                return (1 - share) * hard + share * temperature**2 * soft

            def accuracy(targets, outputs):  # against the labels
                return keras.metrics.categorical_accuracy(targets[:, :classes], outputs)

            return distillation, [accuracy]

    def compile(model):
        trainer.compile(model)  # the caller's optimizer and rate
        loss, metrics = loss_and_metrics(model)
        model.compile(optimizer=model.optimizer, loss=loss, metrics=metrics)

    return Trainer(trainer.x, targets.astype("float32"),
                   validation_data=trainer.validation_data, batch_size=trainer.batch_size,
                   compile=compile, callbacks=trainer.extra_callbacks,
                   verbose=trainer.verbose, seed=trainer.seed)


def _log_probabilities(model, outputs):
    """Log-probabilities from ``model``'s outputs (softmax probabilities or logits)."""
    if ends_in_softmax(model):
        return tf.math.log(tf.maximum(tf.convert_to_tensor(outputs), 1e-30))
    return tf.nn.log_softmax(outputs)


class _Rows(keras.callbacks.Callback):
    """The history of a stage: at each epoch end a row of ``stage``, ``epoch`` (counted
    on from ``offset``), ``extra(epoch)`` and Keras's logs; kept in checkpoints."""

    def __init__(self, stage, *, offset=0, extra=lambda epoch: {}):
        super().__init__()
        self.stage, self.offset, self.extra = stage, offset, extra
        self.rows = []

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"stage": self.stage, "epoch": self.offset + epoch + 1,
                          **self.extra(epoch),
                          **{key: float(value) for key, value in (logs or {}).items()}})

    def state(self):
        return {"rows": self.rows}

    def restore(self, state):
        self.rows[:] = state["rows"]


class _KLRamp(keras.callbacks.Callback):
    """Sets every variational layer's ``kl_scale`` to ``kl_weight(epoch) / examples`` at the
    start of each epoch."""

    def __init__(self, layers, *, kl_weight, ramp_epochs, examples):
        super().__init__()
        self.layers, self.kl_weight = layers, kl_weight
        self.ramp_epochs, self.examples = ramp_epochs, examples

    def weight(self, epoch):
        if not self.ramp_epochs:
            return self.kl_weight
        return self.kl_weight * min(1.0, (epoch + 1) / self.ramp_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        for layer in self.layers:
            layer.kl_scale.assign(self.weight(epoch) / self.examples)

    def row(self, epoch):
        """What a history row says of the variational layers after ``epoch``."""
        kept = sum(float(tf.reduce_sum(layer.keep_mask())) for layer in self.layers)
        total = sum(int(np.prod(layer.kernel.shape)) for layer in self.layers)
        return {"kl_weight": self.weight(epoch), "kept": kept / total}


def check_model(model):
    """Raise unless :func:`sparsify` can train ``model`` (a Sequential or functional
    tf_keras model), saying why."""
    if not engine_of(model).uses_tfmot:
        raise TypeError(
            "variational.sparsify trains tf_keras models; this is a Keras 3 model. Build "
            f"it with tf_keras (import tf_keras as keras). Received: model {model.name!r}")
    if not isinstance(model, keras.Model):
        raise TypeError(f"Argument `model` must be a tf_keras model. Received: {model!r}")
    if not (isinstance(model, keras.Sequential) or engine_of(model).graph_nodes(model) is not None):
        raise TypeError(
            "variational.sparsify needs a Sequential or functional tf_keras model (it "
            "rebuilds the graph with variational layers); a subclassed model cannot be "
            f"rebuilt. Received: {type(model).__name__} {model.name!r}")


def _selected(model, layers):
    """Names of the top-level Dense/Conv2D layers to sparsify."""
    from kprune.core.plan import PruningPlan

    candidates = [layer.name for layer in model.layers
                  if type(layer).__name__ in _PRUNED_TYPES]
    if layers is None:
        names = candidates
    elif isinstance(layers, PruningPlan):
        resolved = layers.resolve(model)
        pruned = {row.name for row in resolved.pruned()}
        names = [name for name in candidates if name in pruned]
    elif isinstance(layers, (list, tuple)) and all(isinstance(n, str) for n in layers):
        unknown = [n for n in layers if n not in candidates]
        if unknown:
            raise ValueError(
                f"Argument `layers` names {unknown}, which are not top-level Dense or "
                f"Conv2D layers of model {model.name!r}. Those are: {candidates}")
        names = list(layers)
    else:
        raise TypeError("Argument `layers` must be None, a list of layer names or a "
                        f"PruningPlan. Received: layers={layers!r}")
    if not names:
        raise ValueError(
            f"Model {model.name!r} has no layer for variational sparsification: it needs "
            f"top-level Dense or Conv2D layers (selected by `layers`). Received: layers="
            f"{layers!r}; the model's layers: {[layer.name for layer in model.layers]}")
    return names


def _variational_copy(model, names, **options):
    """A copy of ``model`` whose ``names`` layers are variational, with its weights."""
    chosen = set(names)

    def clone(layer):
        if layer.name in chosen:
            return _VARIATIONAL[type(layer).__name__].from_config(
                {**layer.get_config(), **options})
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        target = copy.get_layer(layer.name)
        if layer.name in chosen:
            target.kernel.assign(layer.kernel)
            if layer.use_bias:
                target.bias.assign(layer.bias)
        else:
            target.set_weights(layer.get_weights())
    return copy


# -- constant units ------------------------------------------------------------------

_PASS_THROUGH = ("Dropout", "Flatten", "MaxPooling2D", "AveragePooling2D", "InputLayer")


def fold_constant_units(model):
    """Zero the bias and outgoing weights of units that output a constant; in place.

    A unit (neuron or channel) of a ``Dense``/``Conv2D`` layer whose incoming weights are
    all zero outputs ``activation(bias)`` whatever the input. When its only consumer is
    the next ``Dense``/``Conv2D`` (through ``Dropout``, ``Flatten`` or pooling), that
    constant is added to the consumer's bias (only where it is the same at every
    position: not through a ``same``-padded convolution), and the unit's bias and
    outgoing weights become zero. A unit whose outgoing weights are all zero gets zero
    incoming weights and bias. Both repeat until nothing changes; the model's outputs
    do not change (up to float rounding).

    Returns the number of units folded or cut.

    Example:
        >>> fold_constant_units(model)
        37
    """
    changed = total = 0
    graph = read(model)
    while True:
        changed = 0
        for producer in model.layers:
            chain = _consumer_chain(model, graph, producer)
            if chain is not None:
                changed += _fold(producer, *chain)
        total += changed
        if not changed:
            return total


def _consumer_chain(model, graph, producer):
    """``(pass-through layers, consumer)`` after ``producer`` in ``graph`` (``model``'s,
    :func:`kprune.engines.graph_reader.read`), or None."""
    if type(producer).__name__ not in _PRUNED_TYPES or not producer.use_bias:
        return None
    members = {layer.name for layer in model.layers}
    passing, layer = [], producer
    while True:
        consumers = {name for name, _ in graph.readers_of(layer) if name in members}
        if len(consumers) != 1:
            return None
        layer = model.get_layer(consumers.pop())
        kind = type(layer).__name__
        if kind in _PRUNED_TYPES:
            return (passing, layer) if layer.use_bias else None
        if kind not in _PASS_THROUGH:
            return None
        passing.append(layer)


def _through(passing, x):
    for layer in passing:
        x = layer(x, training=False)
    return x


def _fold(producer, passing, consumer):
    kernel = producer.kernel.numpy()
    bias = producer.bias.numpy()
    units = kernel.shape[-1]
    incoming = kernel.reshape(-1, units)
    shape = (units,) + tuple(producer.output_shape[1:])
    indicator = np.zeros(shape, np.float32)
    indicator[np.arange(units), ..., np.arange(units)] = 1.0
    inputs = _through(passing, tf.constant(indicator)).numpy()  # where each unit arrives
    if type(consumer).__name__ == "Dense" and inputs.ndim != 2:
        return 0  # a Dense on a feature map: each position is its own row
    reached = inputs.reshape(units, -1, inputs.shape[-1]) != 0 if type(
        consumer).__name__ == "Conv2D" else inputs.reshape(units, -1) != 0
    consumer_kernel = consumer.kernel.numpy()
    rows = (consumer_kernel.reshape(-1, consumer_kernel.shape[-2], consumer_kernel.shape[-1])
            if type(consumer).__name__ == "Conv2D" else consumer_kernel)

    def outgoing(unit):  # the consumer's weights that read this unit
        if type(consumer).__name__ == "Conv2D":
            return rows[:, reached[unit].any(axis=0), :]
        return rows[reached[unit], :]

    changed = 0
    unused = [j for j in range(units) if not np.any(outgoing(j))
              and (np.any(incoming[:, j]) or bias[j] != 0)]
    for j in unused:  # nobody reads it: its incoming weights and bias go
        kernel[..., j] = 0
        bias[j] = 0
    changed += len(unused)
    constant = [j for j in range(units) if not np.any(kernel[..., j])
                and np.any(outgoing(j))]
    if constant and getattr(producer.activation, "__name__", "") != "softmax":
        values = producer.activation(tf.constant(bias[None, :])).numpy()[0]
        probe = np.zeros((len(constant),) + shape[1:], np.float32)
        # (advanced indices around the ellipsis come first: one value per probe)
        probe[np.arange(len(constant)), ..., constant] = values[constant].reshape(
            (-1,) + (1,) * (len(shape) - 2))
        effect = _linear(consumer, _through(passing, tf.constant(probe)))
        effect = effect.numpy().reshape(len(constant), -1, effect.shape[-1])
        uniform = np.all(np.abs(effect - effect[:, :1]) <= 1e-5 * (1 + np.abs(effect[:, :1])),
                         axis=(1, 2))
        folded = [j for j, ok in zip(constant, uniform) if ok]
        if folded:
            consumer.bias.assign(consumer.bias.numpy() + effect[uniform, 0].sum(axis=0))
            for j in folded:
                if type(consumer).__name__ == "Conv2D":
                    rows[:, reached[j].any(axis=0), :] = 0
                else:
                    rows[reached[j], :] = 0
                bias[j] = 0
            consumer.kernel.assign(rows.reshape(consumer_kernel.shape))
            changed += len(folded)
    producer.kernel.assign(kernel)
    producer.bias.assign(bias)
    return changed


def _linear(layer, inputs):
    """``layer``'s kernel applied to ``inputs``, without bias or activation."""
    if type(layer).__name__ == "Conv2D":
        return layer.convolution_op(inputs, layer.kernel)
    return tf.tensordot(inputs, layer.kernel, [[inputs.shape.rank - 1], [0]])
