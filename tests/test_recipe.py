"""Recipes: every example loads; bad recipes are refused with the key and line."""

from pathlib import Path

import pytest

from kprune.experiments.recipe import Recipe, RecipeError

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


def test_there_is_a_recipe_per_workflow_and_per_builtin_model():
    from kprune.experiments.models import MODELS
    from kprune.experiments.recipe import WORKFLOWS

    recipes = [Recipe.load(path) for path in EXAMPLES]
    assert {r.workflow.name for r in recipes} == set(WORKFLOWS)
    assert {r.model for r in recipes} == set(MODELS)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_loads_and_round_trips(path):
    recipe = Recipe.load(path)
    assert recipe.pruning_plan().rules
    again = Recipe.from_dict(__import__("yaml").safe_load(recipe.to_yaml()), base_dir=path.parent)
    assert again == recipe


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: seed-cnn\nbaseline:\n  epochs: 1\n  epoch: 2\n",
         r"Unknown key `baseline.epoch` \(line 4\)\. Did you mean 'epochs'"),
        ("model: seed-cnn\nworkflow: {name: gradual, epochs: two}\n",
         r"Key `workflow.epochs` \(line 2\) must be an int.*Received: workflow.epochs='two'"),
        ("model: seed-cnn\nworkflow: {name: lottery}\n",
         r"`workflow.name` \(line 2\) must be one of \['gradual'"),
        ("model: missing.keras\n", r"Key `model` \(line 1\) is neither a built-in model"),
        ("model: seed-cnn\ndata: no/such/dir\n",
         r"Key `data.source` \(line 2\) is neither one of \['mnist', 'fashion-mnist'\]"),
        ("model: seed-cnn\ndata: {source: mnist, scale: -3}\n",
         r"Key `data.scale` \(line 2\) must be 'auto', a positive number"),
        ("model: seed-cnn\ndata: {source: mnist, image_size: 32}\n",
         r"Key `data.image_size` \(line 2\) must be \[height, width\]"),
        ("model: seed-cnn\ndata:\n  source: mnist\n  test_split: 1\n",
         r"Key `data.test_split` \(line 4\) must be a fraction in \(0, 1\)"),
        ("model: seed-cnn\ndata: {source: mnist, split: 0.2}\n",
         r"Unknown key `data.split` \(line 2\)\. Did you mean 'test_split'"),
        ("model: seed-cnn\nstructural: {fraction: 1.0}\n",
         r"Key `structural.fraction` \(line 2\) must be a fraction in \(0, 1\)"),
        ("model: seed-cnn\nstructural: {fraction: 0.5, scope: model}\n",
         r"Key `structural.scope` \(line 2\) must be one of \['global', 'layer'\]"),
        ("model: seed-cnn\nstructural: {fraction: 0.5, cost: flops}\n",
         r"Key `structural.cost` \(line 2\) must be one of \['macs', 'params'\]"),
        ("model: seed-cnn\nstructural: {fraction: 0.5, when: during}\n",
         r"Key `structural.when` \(line 2\) must be one of \['before', 'after'\]"),
        ("model: seed-cnn\nstructural: {fraction: 0.5, when: after, fine_tune_epochs: 0}\n",
         r"Key `structural.fine_tune_epochs` \(line 2\) must be at least 1 with when: after"),
        ("model: seed-cnn\nstructural: {fraction: 0.5}\nworkflow: {name: rewind}\n",
         r"Key `workflow.name` \(line 3\) cannot be 'rewind' with a structural step"),
        ("model: seed-cnn\nstructural: {heads: 1.2}\n",
         r"Key `structural.heads` \(line 2\) must be a fraction in \(0, 1\) of the attention "
         r"heads to remove, or null\. Received: structural.heads=1.2"),
        ("model: seed-cnn\nstructural: {neurons: 0}\n",
         r"Key `structural.neurons` \(line 2\) must be a fraction in \(0, 1\) of the channels "
         r"other than heads"),
        ("model: seed-cnn\nstructural: {blocks: -0.25}\n",
         r"Key `structural.blocks` \(line 2\) must be a fraction in \(0, 1\) of the droppable "
         r"residual blocks"),
        ("model: seed-cnn\nstructural: {fraction: 0.5, neurons: 0.5}\n",
         r"Key `structural.neurons` \(line 2\) cannot be given with structural.fraction"),
        ("model: seed-cnn\nstructural: {heads: 0.5, criterion: fishr}\n",
         r"Key `structural.criterion` \(line 2\) must be one of \['l1', 'l2', 'bn', 'taylor', "
         r"'fisher'\] \(did you mean 'fisher'\?\)"),
        ("model: seed-cnn\nstructural: {blocks: 0.25, block_criterion: influense}\n",
         r"Key `structural.block_criterion` \(line 2\) must be one of \['sensitivity', 'l1', "
         r"'influence'\] \(did you mean 'influence'\?\)"),
        ("model: seed-cnn\nstructural: {heads: 0.5, correction: least_square}\n",
         r"Key `structural.correction` \(line 2\) must be one of \['least_squares'\] \(did "
         r"you mean 'least_squares'\?\)"),
        ("model: seed-cnn\nstructural: {heads: 0.5, criterion: fisher, calibration: 0}\n",
         r"Key `structural.calibration` \(line 2\) must be a positive integer"),
        ("model: seed-cnn\nstructural: {correction: least_squares}\n",
         r"Key `structural.correction` \(line 2\) is used only with a structural step "
         r"\(structural.fraction, heads, neurons or blocks\)"),
        ("model: seed-cnn\nstructural: {blocks: 0.25, correction: least_squares}\n",
         r"Key `structural.correction` \(line 2\) is used only with structural.fraction, heads "
         r"or neurons"),
        ("model: seed-cnn\nstructural: {blocks: 0.25, block_unit: transformers}\n",
         r"Key `structural.block_unit` \(line 2\) must be one of \['add', 'transformer'\] "
         r"\(did you mean 'transformer'\?\)"),
        ("model: seed-cnn\nstructural: {heads: 0.5, block_unit: transformer}\n",
         r"Key `structural.block_unit` \(line 2\) is used only with structural.blocks"),
        ("model: seed-cnn\nstructural: {heads: 0.5, block_criterion: l1}\n",
         r"Key `structural.block_criterion` \(line 2\) is used only with structural.blocks"),
        ("model: seed-cnn\nstructural: {heads: 0.5, calibration: 64}\n",
         r"Key `structural.calibration` \(line 2\) is used only with criterion taylor or "
         r"fisher, a correction, or blocks ranked by influence"),
        ("model: seed-cnn\nplan: {rules: [{match: fc_1}]}\n", None),
        ("model: seed-cnn\nplan: {rules: [{match: fc1, sparsity: 0.5}]}\n",
         r"Key `plan` \(line 2\): Unknown key 'sparsity' in rule"),
        ("model: seed-cnn\nexport: {variants: [float, int4]}\n",
         r"`export.variants` \(line 2\) must be one of"),
        ("model: seed-cnn\nexport: {variants: float}\n", "must be a list"),
        ("model: seed-cnn\nbaseline: {epochs: -1}\n", "`baseline.epochs` .* must be an integer >= 0"),
        ("model: seed-cnn\nworkflow: {epochs: 0}\n", "`workflow.epochs` .* must be a positive"),
        ("model: seed-cnn\nworkflow: {name: post-training, method: sparsgpt}\n",
         r"`workflow.method` \(line 2\) must be one of \['magnitude', 'wanda', 'sparsegpt'\]"),
        ("model: seed-cnn\nworkflow: {name: post-training, calibration: 0}\n",
         r"`workflow.calibration` \(line 2\) must be a positive"),
        ("model: seed-cnn\nworkflow: {name: gradual, method: wanda}\n",
         r"`workflow.method` \(line 2\) is used only by workflow.name: post-training"),
        ("model: seed-cnn\nworkflow: {name: gradual, finetune_epochs: 2}\n",
         r"`workflow.finetune_epochs` \(line 2\) is used only by workflow.name: variational"),
        ("model: seed-cnn\nsubset: 5\n", r"`subset` \(line 2\) must be a mapping"),
        ("data: mnist\n", "Missing key `model`"),
        ("model: seed-cnn\nvalidation: 1.5\n",
         r"Key `validation` \(line 2\) must be a fraction in \(0, 1\) when it is a float.*"
         r"Received: validation=1.5"),
        ("model: seed-cnn\nvalidation: 0.0\n", r"`validation` \(line 2\) must be a fraction"),
        ("model: seed-cnn\nseed: 1\nvalidation: 0\n",
         r"Key `validation` \(line 3\) must be a positive integer count"),
        ("model: seed-cnn\nvalidation: ten\n",
         r"`validation` \(line 2\) must be a fraction in \(0, 1\) or a positive integer "
         r"count. Received: validation='ten'"),
        ("model: seed-cnn\nvalidation: true\n", r"Received: validation=True"),
        ("model: seed-cnn\nsubset: {train: 500}\nvalidation: 500\n",
         r"`validation` \(line 3\) must be below subset.train \(500\)"),
        ("model: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "`recipe` must be a mapping"),
    ],
)
def test_bad_recipes_name_the_key_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    if message is None:
        # A rule for a missing layer is caught when the model is known: at run time,
        # before training. The recipe itself is well-formed.
        Recipe.load(path)
        return
    with pytest.raises(RecipeError, match=message):
        Recipe.load(path)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="Recipe file not found"):
        Recipe.load(tmp_path / "nope.yaml")


def test_paths_are_relative_to_the_recipe(tmp_path):
    from kprune import LayerRule, PruningPlan

    (tmp_path / "plans").mkdir()
    PruningPlan([LayerRule("fc1", target=0.9)]).to_yaml(tmp_path / "plans" / "p.yaml")
    path = write(tmp_path, "model: lenet-300-100\nplan: plans/p.yaml\n")
    assert Recipe.load(path).pruning_plan().rules[0].target == 0.9


def test_validation_defaults_to_a_tenth_and_takes_a_fraction_or_a_count(tmp_path):
    assert Recipe.load(write(tmp_path, "model: seed-cnn\n")).validation == 0.1
    for text, value in (("0.25", 0.25), ("5000", 5000)):
        recipe = Recipe.load(write(tmp_path, f"model: seed-cnn\nvalidation: {text}\n"))
        assert recipe.validation == value and type(recipe.validation) is type(value)
        assert Recipe.from_dict(__import__("yaml").safe_load(recipe.to_yaml())) == recipe
    recipe = Recipe.load(write(tmp_path, "model: seed-cnn\nsubset: {train: 500}\n"
                                         "validation: 499\n"))
    assert recipe.validation == 499


def test_data_is_a_source_or_a_mapping_and_round_trips(tmp_path):
    short = Recipe.load(write(tmp_path, "model: seed-cnn\ndata: mnist\n"))
    full = Recipe.from_dict({"model": "seed-cnn",
                             "data": {"source": "mnist", "scale": 255, "image_size": [32, 32]}})
    assert short.data.source == "mnist" and short.data.scale == "auto"
    assert full.data.scale == 255 and full.data.image_size == [32, 32]
    assert Recipe.from_dict(full.to_dict()) == full
    assert Recipe(model="seed-cnn", data="images/").data.source == "images/"


def test_heads_neurons_and_blocks_make_a_structural_step():
    from kprune.experiments.recipe import Structural

    spec = Recipe.from_dict({"model": "seed-cnn", "structural": {
        "heads": 0.5, "neurons": 0.25, "blocks": 0.25, "criterion": "fisher",
        "correction": "least_squares", "calibration": 64}}).structural
    assert spec.active and spec.prune_fraction() == {"heads": 0.5, "channels": 0.25}
    assert Structural(blocks=0.25).prune_fraction() is None and Structural(blocks=0.25).active
    assert Structural(fraction=0.3).prune_fraction() == 0.3 and not Structural().active


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: seed-cnn\nimports: my_layers\n",
         r"Key `imports` \(line 2\) must be a list. Received: imports='my_layers'"),
        ("model: seed-cnn\nimports: [3]\n",
         r"Key `imports` \(line 2\) must be a list of Python module names"),
        ("model: seed-cnn\nimports: [my-layers.py]\n",
         r"Key `imports` \(line 2\) must be a list of Python module names .*"
         r"Received: imports=\['my-layers.py'\]"),
        ("model: seed-cnn\nimports: [kprune_no_such_module]\n",
         r"Key `imports` \(line 2\): cannot import module 'kprune_no_such_module' "
         r"\(ModuleNotFoundError: No module named 'kprune_no_such_module'\)"),
        ("model: seed-cnn\nimports: [broken_layers]\n",
         r"cannot import module 'broken_layers' \(ImportError: cannot import name "
         r"'Nothing' from 'keras'"),
    ],
)
def test_bad_imports_name_the_key_and_the_module(tmp_path, text, message):
    (tmp_path / "broken_layers.py").write_text("from keras import Nothing\n")
    with pytest.raises(RecipeError, match=message):
        Recipe.load(write(tmp_path, text))


def test_imports_are_imported_from_the_recipes_folder_and_round_trip(tmp_path):
    import sys

    (tmp_path / "kprune_recipe_layers.py").write_text("LOADED = True\n")
    recipe = Recipe.load(write(tmp_path, "model: seed-cnn\nimports: [kprune_recipe_layers]\n"))
    assert recipe.imports == ("kprune_recipe_layers",)
    assert sys.modules["kprune_recipe_layers"].LOADED
    assert str(tmp_path) not in sys.path  # the folder was on the path only to import
    assert "imports:\n- kprune_recipe_layers" in recipe.to_yaml()
    assert "imports" not in Recipe.load(write(tmp_path, "model: seed-cnn\n")).to_yaml()
    del sys.modules["kprune_recipe_layers"]
