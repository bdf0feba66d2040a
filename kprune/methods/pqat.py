"""Pruning-preserving quantization-aware training (PQAT): int8 ranges learnt on a pruned
model while its zeros stay zero, when post-training int8 loses accuracy (tf_keras, tfmot).

``kprune.export.pqat_int8`` is this function too.

Example:
    >>> from kprune.methods.pqat import pqat_int8
    >>> qat = pqat_int8(kprune.strip(pruned), x_train, y_train, epochs=1)
    >>> export.to_tflite(qat, "pqat-int8.tflite", quantize="int8", sparse=True)
"""

import numpy as np

from kprune.engines import engine_of
from kprune.engines.classifier import compile_classifier
from kprune.engines.tfkeras import loader
from kprune.engines.verify import check_stripped
from kprune.engines.wrap import copy_model

__all__ = ["pqat_int8"]


def pqat_int8(model, x, y, *, epochs=1, batch_size=128, learning_rate=1e-4,
              validation_data=None, verbose=0):
    """Pruning-preserving quantization-aware fine-tuning of a stripped pruned model.

    Wraps ``model`` with tfmot's ``quantize_annotate_model`` and ``quantize_apply``
    under ``Default8BitPrunePreserveQuantizeScheme`` (zeros stay zero while the
    weights learn their int8 ranges), compiles it (Adam at ``learning_rate``, sparse
    categorical cross-entropy on logits unless the last layer is a softmax) and
    fine-tunes it on ``(x, y)``. Use it when post-training int8 loses accuracy.
    ``model`` itself is not modified.

    Returns the QAT model; export it with ``export.to_tflite(qat, path, quantize="int8")``
    (``representative_data`` is optional for a QAT model: the ranges are learnt).

    Example:
        >>> qat = pqat_int8(kprune.strip(pruned), x_train, y_train, epochs=1)
        >>> export.to_tflite(qat, "pqat-int8.tflite", quantize="int8", sparse=True)
    """
    if not engine_of(model).uses_tfmot:
        raise TypeError(
            "pqat_int8 needs tfmot's quantization-aware training, which supports tf_keras "
            "models only (tfmot has no Keras 3 support and Keras 3 has no pruning-preserving "
            "QAT). For a Keras 3 model use post-training int8, which keeps the zeros: "
            "to_tflite(final, path, quantize='int8', representative_data=x, sparse=True). "
            f"Received: a Keras 3 model {model.name!r}"
        )
    check_stripped(model)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"Argument `{name}` must be a positive integer. Received: {name}={value!r}"
            )
    x = np.asarray(x)
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(
            f"Arguments `x` and `y` must have the same length. Received: len(x)={len(x)}, "
            f"len(y)={len(y)}"
        )
    tfmot = loader.tfmot
    twin = copy_model(model)  # quantize_apply reuses layer objects; keep the user's intact
    annotated = tfmot.quantization.keras.quantize_annotate_model(twin)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    last = model.layers[-1] if model.layers else None
    softmax = getattr(getattr(last, "activation", None), "__name__", None) == "softmax"
    compile_classifier(qat, learning_rate=learning_rate, from_logits=not softmax)
    qat.fit(
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=validation_data,
        verbose=verbose,
    )
    return qat
