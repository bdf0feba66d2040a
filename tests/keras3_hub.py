"""KerasHub classifiers built from arguments (random weights, nothing downloaded) and the whole
pruning pipeline run on them, for tests on any Keras 3 backend.

``python -m tests.keras3_hub FOLDER gpt2 bert`` runs :func:`pipeline` for each model named, in
the backend that ``KERAS_BACKEND`` selects (one process, one import of TensorFlow and KerasHub),
and prints ``{model: facts}`` as JSON on the last line.
"""

import json
import sys
from pathlib import Path

SEQUENCE = 16
VOCABULARY = 200
CLASSES = 3


def classifier(kind):
    """A functional classifier around a small KerasHub backbone: token ids and padding mask
    in, the backbone, mean pooling, a softmax ``head``.

    Example:
        >>> classifier("gpt2").get_layer("gpt2_backbone").num_layers
        2
    """
    import keras
    import keras_hub

    sizes = dict(vocabulary_size=VOCABULARY, num_layers=2, num_heads=4, hidden_dim=32,
                 intermediate_dim=64, max_sequence_length=SEQUENCE)
    if kind == "gpt2":
        backbone = keras_hub.models.GPT2Backbone(**sizes)
    else:
        backbone = keras_hub.models.BertBackbone(**sizes)
    inputs = {name: keras.Input((SEQUENCE,), dtype="int32", name=name)
              for name in backbone.input if name != "segment_ids"}
    if kind == "bert":
        inputs["segment_ids"] = keras.Input((SEQUENCE,), dtype="int32", name="segment_ids")
    hidden = backbone(inputs)
    sequence = hidden["sequence_output"] if isinstance(hidden, dict) else hidden
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(sequence)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(pooled)
    return keras.Model(inputs, outputs, name=f"{kind}_classifier")


def data(model, count=64, seed=0):
    """Random token ids (a learnable rule: the class is the first token modulo 3) and
    full padding masks for ``model``'s inputs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCABULARY, (count, SEQUENCE)).astype("int32")
    x = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    if "segment_ids" in model.input:
        x["segment_ids"] = np.zeros_like(tokens)
    return x, tokens[:, 0] % CLASSES


def pipeline(kind, folder):
    """plan -> apply -> fit with ``kprune.callbacks()`` -> strip -> strict report -> save and
    load (mid-pruning and stripped) -> TFLite (TensorFlow backend): the facts, as a dict."""
    import keras
    import numpy as np

    import kprune
    from kprune.core import layers, masks

    folder = Path(folder)
    model = classifier(kind)
    original = [np.array(w) for w in model.get_weights()]
    x, y = data(model)
    plan = kprune.PruningPlan.default()
    resolved = plan.resolve(model, steps_per_epoch=4, epochs=2)
    pruned = kprune.apply(model, plan, steps_per_epoch=4, epochs=2)
    pruned.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    pruned.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=kprune.callbacks())
    kprune.save_model(pruned, folder / "mid.keras")  # mid-pruning: masks and step saved
    resumed = kprune.load_model(folder / "mid.keras")
    resumed.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    resumed.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=kprune.callbacks())
    final = kprune.strip(resumed)
    report = kprune.sparsity_report(final, strict=True)
    kprune.save_model(final, folder / "final.keras")
    loaded = kprune.load_model(folder / "final.keras")

    by_path = dict(layers.weight_layers(final))
    n_m_violations = {}
    for row in resolved.pruned:
        kernel = layers.prunable_weights(by_path[row.name])[0].variable.numpy()
        n_m_violations[row.name] = masks.n_m_violations(kernel, 2, 4, axis=layers.N_M_AXIS)
    facts = {
        "backend": keras.backend.backend(),
        "pruned": {row.name: row.method_label for row in resolved.pruned},
        "skipped": {row.name: row.reason for row in resolved if row.weights and not row.pruned},
        "report_ok": bool(report.ok),
        "achieved": {row.name: row.achieved for row in report.rows},
        "n_m_violations": n_m_violations,
        "model_untouched": bool(all(np.array_equal(a, b)
                                    for a, b in zip(original, model.get_weights()))),
        "loaded_difference": float(np.abs(np.asarray(loaded.predict(x, verbose=0))
                                          - np.asarray(final.predict(x, verbose=0))).max()),
        "mid_step": int(max(w.pruning_step.numpy() for _, w in
                            kprune.engines.keras3.wrap.wrapped_layers(resumed))),
    }
    if keras.backend.backend() == "tensorflow":
        path = kprune.export.to_tflite(final, folder / "final.tflite", sparse=True).path
        runner = kprune.measure.load_interpreter(path).get_signature_runner()
        got = runner(**{name: values[:8] for name, values in x.items()})
        (got,) = got.values()
        facts["tflite_difference"] = float(np.abs(
            got - np.asarray(final.predict({k: v[:8] for k, v in x.items()}, verbose=0))).max())
    return facts


if __name__ == "__main__":
    folder, kinds = Path(sys.argv[1]), sys.argv[2:]
    facts = {}
    for kind in kinds:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        facts[kind] = pipeline(kind, folder / kind)
    print(json.dumps(facts))
