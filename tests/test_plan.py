"""PruningPlan: rules as data, resolution against a model, serialisation, errors."""

import json

import pytest

from kprune import LayerRule, PruningPlan, Schedule
from kprune.core.plan import PlanWarning

from helpers import keras, nested_model, tiny_cnn, tiny_mlp


def test_default_plan_on_tiny_cnn():
    resolved = PruningPlan.default().resolve(tiny_cnn())
    assert resolved["conv_a"].method == "unstructured"
    assert "first conv" in resolved["conv_a"].reason
    assert resolved["conv_b"].method == "m_by_n"
    assert (resolved["conv_b"].n, resolved["conv_b"].m) == (2, 4)
    # dense_a has 4*4*8 = 128 inputs: a multiple of 4, so 2:4 applies.
    assert resolved["dense_a"].method_label == "2:4"
    assert resolved["head"].method == "skip"
    assert resolved["head"].reason == "classifier head"
    assert resolved["flatten"].reason == "no weights"


def test_default_plan_falls_back_and_says_why():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, name="c1"),
            keras.layers.Conv2D(6, 3, name="c2"),  # 4 input channels: 2:4 fine
            keras.layers.Conv2D(8, 3, name="c3"),  # 6 input channels: not a multiple of 4
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="head"),
        ]
    )
    resolved = PruningPlan.default().resolve(model)
    assert resolved["c2"].method == "m_by_n"
    assert resolved["c3"].method == "unstructured"
    assert "6 input channels is not a multiple of 4" in resolved["c3"].reason


def test_first_conv_with_one_channel_falls_back_when_only_2_4_rules():
    plan = PruningPlan(
        [LayerRule("Conv2D", by="type", method="m_by_n", fallback="unstructured")]
    )
    row = plan.resolve(tiny_cnn())["conv_a"]
    assert row.method == "unstructured"
    assert "1 input channel < group size 4" in row.reason


def test_explicit_2_4_on_impossible_layer_is_an_error():
    plan = PruningPlan([LayerRule("conv_a", method="m_by_n")])
    with pytest.raises(ValueError, match=r"'conv_a' cannot take 2:4 sparsity: 1 input channel"):
        plan.resolve(tiny_cnn())


def test_first_matching_rule_wins_and_unmatched_layers_stay_dense():
    plan = PruningPlan(
        [
            LayerRule("fc1", target=0.9),
            LayerRule("Dense", by="type", target=0.3),
        ]
    )
    resolved = plan.resolve(tiny_mlp())
    assert resolved["fc1"].target == 0.9
    assert resolved["fc2"].target == 0.3
    assert resolved["head"].target == 0.3
    only_fc1 = PruningPlan([LayerRule("fc1")]).resolve(tiny_mlp())
    assert only_fc1["fc2"].reason == "no rule selects it"


def test_regex_and_one_four():
    plan = PruningPlan([LayerRule(r"fc\d", by="regex", method="m_by_n", n=1, m=4)])
    resolved = plan.resolve(tiny_mlp())
    assert resolved["fc1"].target == 0.75
    assert resolved["fc2"].method_label == "1:4"
    assert resolved["head"].method == "skip"


def test_regex_matching_nothing_warns():
    with pytest.warns(PlanWarning, match="matches no layer"):
        PruningPlan([LayerRule("conv.*", by="regex")]).resolve(tiny_mlp())


def test_missing_layer_name_suggests_close_names():
    plan = PruningPlan([LayerRule("fc_1", target=0.5)])
    with pytest.raises(ValueError, match=r"'fc_1', which is not in the model\. Did you mean 'fc1'"):
        plan.resolve(tiny_mlp())


def test_nested_model_paths():
    plan = PruningPlan([LayerRule("block/fc", target=0.6), LayerRule("stem", target=0.4)])
    resolved = plan.resolve(nested_model())
    assert [r.name for r in resolved] == ["stem", "block/fc", "head"]
    assert resolved["block/fc"].target == 0.6


def test_resolve_pins_schedules_to_steps():
    resolved = PruningPlan.default().resolve(tiny_cnn(), steps_per_epoch=20, epochs=2)
    schedule = resolved["conv_a"].schedule
    assert schedule.total_steps == 40
    assert schedule.sparsity_at(40) == pytest.approx(0.5)


def test_table_is_readable():
    text = str(PruningPlan.default().resolve(tiny_cnn()))
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["layer", "type", "params", "prunes", "method"]
    assert any(line.startswith("conv_b") and "2:4" in line for line in lines)
    assert "classifier head" in text
    assert "kind=conv" in str(PruningPlan.default())


def test_json_and_yaml_round_trip_every_field():
    plan = PruningPlan(
        [
            LayerRule(
                "fc.*",
                by="regex",
                method="unstructured",
                target=0.7,
                schedule=Schedule(kind="constant", begin=1, unit="steps", frequency=3),
                which="last",
                block=(1, 4),
                pool="MAX",
                note="why not",
            ),
            LayerRule("Dense", by="type", method="m_by_n", n=1, m=8, fallback="unstructured"),
            LayerRule("head", method="skip"),
        ]
    )
    assert PruningPlan.from_json(plan.to_json()) == plan
    assert PruningPlan.from_yaml(plan.to_yaml()) == plan
    assert json.loads(plan.to_json())["schema_version"] == 1


def test_plan_files(tmp_path):
    plan = PruningPlan.default()
    plan.to_yaml(tmp_path / "plan.yaml")
    plan.to_json(tmp_path / "plan.json")
    assert PruningPlan.load(tmp_path / "plan.yaml") == plan
    assert PruningPlan.load(tmp_path / "plan.json") == plan
    with pytest.raises(FileNotFoundError, match="Plan file not found"):
        PruningPlan.load(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"rules": [], "colour": 1}, "Unknown key 'colour' in plan"),
        ({"rules": [{"match": "fc1", "sparsity": 0.5}]}, "Unknown key 'sparsity' in rule"),
        (
            {"rules": [{"match": "fc1", "schedule": {"kind": "constant", "stop": 3}}]},
            "Unknown key 'stop' in schedule",
        ),
        ({"schema_version": 99, "rules": []}, "schema version 1"),
        ({"rules": [{"match": "fc1", "target": 1.2}]}, r"fraction in \[0, 1\).*target=1.2"),
        ({"rules": [{"match": "fc1", "method": "random"}]}, "`method` must be one of"),
        ({"rules": [{"match": "fc1", "n": 4, "m": 4}]}, "`n`.*smaller than `m`"),
        ({"rules": [{"match": "(", "by": "regex"}]}, "not a valid regex"),
        ({"rules": [{"match": "fc1", "block": [0, 2]}]}, "`block` must be two positive"),
    ],
)
def test_bad_plan_data(data, message):
    with pytest.raises((ValueError, TypeError), match=message):
        PruningPlan.from_dict(data)


def test_rules_must_be_rules():
    with pytest.raises(TypeError, match=r"rules\[0\]="):
        PruningPlan([{"match": "fc1"}])


def test_an_n_m_rule_with_a_schedule_is_refused_unless_it_falls_back():
    with pytest.raises(ValueError, match="An N:M rule takes no `schedule`"):
        LayerRule("fc1", method="m_by_n", schedule=Schedule(end=1))
    rule = LayerRule("fc1", method="m_by_n", fallback="unstructured", schedule=Schedule(end=1))
    assert rule.schedule.end == 1  # used by the layers that fall back


def test_uniform_plan_prunes_every_prunable_layer_but_the_head():
    resolved = PruningPlan.uniform(0.8).resolve(tiny_cnn())
    assert [r.name for r in resolved.pruned] == ["conv_a", "conv_b", "dense_a"]
    assert resolved["head"].reason == "classifier head"
    assert resolved["flatten"].reason == "no weights"
