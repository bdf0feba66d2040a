"""The LeNet record recipes, quick: a small MNIST subset, one epoch per stage.

Each stage is checked on what it left behind: the dense control trained as long as the
pruned model, the variational stage's zeros counted on the saved weights (kernels and
biases), folded units, and the files of the run folder.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kprune.experiments.recipe import Recipe
from kprune.experiments.runner import run_recipe

EXAMPLES = Path(__file__).parents[1] / "examples"


def quick(name, mnist_dir):
    recipe = Recipe.load(EXAMPLES / name, overrides={"data.source": ("--data", str(mnist_dir))})
    return replace(recipe, subset=replace(recipe.subset, train=1500, test=300), validation=300,
                   baseline=replace(recipe.baseline, epochs=1),
                   workflow=replace(recipe.workflow, epochs=1, kl_ramp_epochs=0,
                                    finetune_epochs=1),
                   export=replace(recipe.export, variants=("float",), latency_repeats=1))


def units_without_inputs_have_no_bias(model):
    """Every Dense/Conv2D unit with no incoming weight, but the head's, has a zero bias."""
    layers = [layer for layer in model.layers if type(layer).__name__ in ("Dense", "Conv2D")]
    for layer in layers[:-1]:
        kernel, bias = layer.get_weights()
        silent = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
        if bias[silent].any():
            return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("name, changes", [
    ("lenet_300_100_record.yaml", {}),
    ("lenet_5_record.yaml", {}),
    # the options: distil the dense control it is compared with, at temperature 4, then
    # the baseline in the fine-tune, at temperature 2
    ("lenet_300_100_record.yaml", {"teacher": "control", "temperature": 4.0,
                                   "finetune_teacher": "baseline",
                                   "finetune_temperature": 2.0}),
])
def test_record_recipe_quick(name, changes, mnist_dir, tmp_path, monkeypatch):
    from kprune.engines.saving import load_model
    from kprune.methods import variational
    from kprune.methods.variational import nonzero_params

    recipe = quick(name, mnist_dir)
    recipe = replace(recipe, workflow=replace(recipe.workflow, **changes))
    assert recipe.workflow.name == "variational" and recipe.baseline.trained_as_long
    teachers = []  # the weights of the models each variational run distilled, per stage
    sparsify = variational.sparsify

    def recording_sparsify(*args, teacher=None, finetune_teacher=None, **kwargs):
        teachers.append([None if t is None else t.get_weights()
                         for t in (teacher, finetune_teacher)])
        return sparsify(*args, teacher=teacher, finetune_teacher=finetune_teacher, **kwargs)

    monkeypatch.setattr(variational, "sparsify", recording_sparsify)
    out = tmp_path / "run"
    result = run_recipe(recipe, out, log=lambda *_: None)

    for file in ("baseline.keras", "baseline-start.keras", "pruned.keras",
                 "dense-float.tflite", "pruned-float.tflite", "report.json"):
        assert (out / file).is_file(), file
    report = json.loads((out / "report.json").read_text())
    # baseline (1) -> variational (1) -> fine-tune with the zeros held (1); the dense
    # control trained on from the baseline for as many epochs
    assert [row["stage"] for row in result.history] == ["variational", "finetune"]
    for checkpoint in ("variational-epoch1", "variational-done", "finetune-epoch1"):
        assert list((out / "checkpoints").glob(f"*-{checkpoint}")), checkpoint  # resumable
    assert report["extra"]["epochs"] == {"baseline": 1, "pruned_after_baseline": 2,
                                         "dense_after_baseline": 2}

    pruned, dense = load_model(out / "pruned.keras"), load_model(out / "baseline.keras")
    params, nonzero = nonzero_params(pruned)
    assert params == nonzero_params(dense)[0] == dense.count_params()
    assert nonzero < 0.9 * params                       # the variational stage zeroed weights
    assert units_without_inputs_have_no_bias(pruned)    # constants folded forward
    pruned_row = next(v for v in report["variants"] if v["name"] == "pruned/float")
    assert pruned_row["nonzero_params"] == nonzero      # kernels and biases, from the weights
    start = load_model(out / "baseline-start.keras")
    assert not all(np.array_equal(a, b) for a, b in zip(start.get_weights(),
                                                        dense.get_weights()))
    # control = the pruned model learned from the very control it is compared with;
    # baseline = from the dense model it started from
    spec = recipe.workflow
    assert len(teachers) == 1 and spec.distill > 0
    models = {"control": dense.get_weights(), "baseline": start.get_weights(), None: None}
    for given, name in zip(teachers[0], (spec.teacher, spec.finetune_teacher)):
        if name is None:
            assert given is None
        else:
            assert all(np.array_equal(a, b) for a, b in zip(given, models[name])), name


@pytest.mark.parametrize("workflow, message", [
    ({"name": "gradual", "threshold": 2.0}, "`workflow.threshold` is used only by "
                                            "workflow.name: variational"),
    ({"name": "one-shot", "kl_weight": 3}, "`workflow.kl_weight` is used only by"),
    ({"name": "variational", "threshold": 12}, "`workflow.threshold` must be a log_alpha in"),
    ({"name": "variational", "kl_weight": 0}, "`workflow.kl_weight` must be a positive"),
    ({"name": "variational", "kl_ramp_epochs": -1}, "`workflow.kl_ramp_epochs` must be an "
                                                    "integer >= 0"),
    ({"name": "variational", "finetune_epochs": -2}, "`workflow.finetune_epochs` must be"),
    ({"name": "gradual", "distill": 0.5}, "`workflow.distill` is used only by"),
    ({"name": "variational", "distill": 1}, r"`workflow.distill` must be a fraction in \[0, "
                                            r"1\) \(the dense model's share"),
    ({"name": "gradual", "temperature": 2}, "`workflow.temperature` is used only by"),
    ({"name": "variational", "distill": 0.5, "temperature": 0.5},
     r"`workflow.temperature` must be a number >= 1 \(1: the teacher's probabilities"),
    ({"name": "variational", "distill": 0.5, "temperature": "2"},
     "`workflow.temperature` must be"),
    ({"name": "variational", "distill": 0.5, "teacher": "expert"},
     r"`workflow.teacher` must be one of \['baseline', 'control'\]"),
    ({"name": "variational", "temperature": 4}, "`workflow.temperature` is used only with "
                                                "workflow.distill above 0"),
    ({"name": "variational", "distill": 0.5, "teacher": "control", "trained_as_long": False},
     "`workflow.teacher` 'control' distils the dense control, which only "
     "baseline.trained_as_long: true trains"),
    ({"name": "variational", "distill": 0.5, "finetune_teacher": "expert"},
     r"`workflow.finetune_teacher` must be one of \['baseline', 'control'\]"),
    ({"name": "variational", "distill": 0.5, "finetune_temperature": 0.5},
     r"`workflow.finetune_temperature` must be a number >= 1"),
    ({"name": "variational", "finetune_teacher": "control"},
     "`workflow.finetune_teacher` is used only with workflow.distill above 0"),
    ({"name": "gradual", "finetune_temperature": 4}, "`workflow.finetune_temperature` is "
                                                     "used only by workflow.name: variational"),
    ({"name": "variational", "distill": 0.5, "finetune_teacher": "control",
      "trained_as_long": False},
     "`workflow.finetune_teacher` 'control' distils the dense control, which only "),
    ({"name": "variational", "checkpoint_steps": 50}, r"`checkpoint_steps` is not used by "
                                                     r"workflow.name: variational \(it "
                                                     r"checkpoints at every epoch end\)"),
])
def test_variational_recipe_keys_are_validated(workflow, message):
    from kprune.experiments.recipe import RecipeError

    workflow = dict(workflow)
    spec = {"model": "lenet-5", "workflow": workflow,
            "baseline": {"trained_as_long": workflow.pop("trained_as_long", True)}}
    if "checkpoint_steps" in workflow:
        spec["checkpoint_steps"] = workflow.pop("checkpoint_steps")
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(spec)
