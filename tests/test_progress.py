"""kprune.progress: a bar on a terminal, plain lines elsewhere, nothing when quiet."""

import io

import numpy as np
import pytest

from kprune import progress


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def default_quiet(monkeypatch):
    """Every test starts from the default: not quiet, no KPRUNE_QUIET."""
    monkeypatch.delenv(progress.ENV_VAR, raising=False)
    progress.set_quiet(None)
    yield
    progress.set_quiet(None)


def lines_of(loop_items, desc="work", **kwargs):
    stream = io.StringIO()
    items = list(progress.track(loop_items, desc, file=stream, **kwargs))
    return items, stream.getvalue()


# ------------------------------------------------------------------ plain lines


def test_a_short_loop_gets_one_plain_line_per_item_and_an_end_line():
    items, text = lines_of(["dense", "pruned/int8", "pruned/sparse"], "measure accuracy",
                           unit="variant", label=str)
    assert items == ["dense", "pruned/int8", "pruned/sparse"]
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[:3] == ["measure accuracy: 1/3 (dense)", "measure accuracy: 2/3 (pruned/int8)",
                         "measure accuracy: 3/3 (pruned/sparse)"]
    assert len(lines) == 4
    assert lines[3].startswith("measure accuracy: done, 3/3 variants in ")


def test_a_long_loop_gets_a_line_at_the_start_each_quarter_and_the_end():
    items, text = lines_of(range(200), "predict", unit="batch")
    assert items == list(range(200)) and "\r" not in text
    lines = text.splitlines()
    assert lines[:4] == ["predict: 0/200 batches", "predict: 50/200 batches (25%)",
                         "predict: 100/200 batches (50%)", "predict: 150/200 batches (75%)"]
    assert len(lines) == 5 and lines[4].startswith("predict: done, 200/200 batches in ")


def test_per_item_can_be_forced_either_way():
    _, text = lines_of(range(60), per_item=True)
    assert len(text.splitlines()) == 61
    _, text = lines_of(range(10), per_item=False)
    assert text.splitlines()[0] == "work: 0/10 items"
    assert len(text.splitlines()) == 5
    _, text = lines_of(range(3), per_item=False)  # fewer steps than quarters: the end only
    assert len(text.splitlines()) == 1 and text.startswith("work: done, 3/3 items in ")


def test_unknown_length_and_an_explicit_total():
    _, text = lines_of(iter(range(7)))
    assert text.splitlines()[0] == "work: started (items)"
    assert text.splitlines()[1].startswith("work: done, 7 items in ")
    _, text = lines_of(iter(range(2)), total=2, label=lambda i: f"#{i}")
    assert text.splitlines()[:2] == ["work: 1/2 (#0)", "work: 2/2 (#1)"]


def test_an_empty_loop_prints_nothing():
    assert lines_of([]) == ([], "")


def test_a_loop_inside_a_tracked_loop_writes_no_lines():
    stream = io.StringIO()
    for _ in progress.track(range(2), "outer", file=stream):
        assert list(progress.track(range(100), "inner", file=stream)) == list(range(100))
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["outer"] * 3


def test_leaving_a_loop_early_resets_the_nesting():
    stream = io.StringIO()
    for _ in progress.track(range(5), "first", file=stream):
        break
    _, text = lines_of(range(2), "second")
    assert text.splitlines()[0] == "second: 1/2"


def test_lines_go_to_stderr_by_default(capsys):
    list(progress.track(range(2), "to stderr"))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines()[0] == "to stderr: 1/2"


# ------------------------------------------------------------------ terminal


def test_a_terminal_gets_a_tqdm_bar():
    stream = Terminal()
    items = list(progress.track(range(3), "bar", file=stream, unit="variant",
                                label=lambda i: f"v{i}"))
    text = stream.getvalue()
    assert items == [0, 1, 2]
    assert "\r" in text and "bar: 100%" in text and "3/3" in text and "variant" in text
    assert "v2" in text
    assert "bar: 1/3" not in text  # no plain lines


def test_a_nested_loop_on_a_terminal_gets_its_own_bar_that_goes_away():
    stream = Terminal()
    for _ in progress.track(range(2), "outer", file=stream):
        list(progress.track(range(3), "inner", file=stream))
    text = stream.getvalue()
    assert "outer: 100%" in text and "inner:" in text


# ------------------------------------------------------------------ quiet


def test_set_quiet_and_the_context_manager_silence_everything():
    progress.set_quiet(True)
    assert progress.is_quiet()
    assert lines_of(range(3)) == ([0, 1, 2], "")
    stream = Terminal()
    assert list(progress.track(range(3), "bar", file=stream)) == [0, 1, 2]
    assert stream.getvalue() == ""
    progress.set_quiet(False)
    with progress.quiet():
        assert progress.is_quiet() and lines_of(range(3))[1] == ""
        with progress.quiet(False):
            assert lines_of(range(1))[1]
        assert progress.is_quiet()
    assert not progress.is_quiet() and lines_of(range(1))[1]


def test_the_environment_variable(monkeypatch):
    monkeypatch.setenv("KPRUNE_QUIET", "1")
    assert progress.is_quiet() and lines_of(range(3))[1] == ""
    progress.set_quiet(False)  # an explicit setting wins
    assert lines_of(range(1))[1]
    progress.set_quiet(None)
    for value, quiet in (("0", False), ("", False), ("false", False), ("yes", True),
                         ("TRUE", True)):
        monkeypatch.setenv("KPRUNE_QUIET", value)
        assert progress.is_quiet() is quiet, value


def test_bad_arguments():
    with pytest.raises(TypeError, match="`value` must be True, False or None"):
        progress.set_quiet("yes")
    with pytest.raises(TypeError, match="`value` must be True or False"):
        with progress.quiet(1):
            pass
    with pytest.raises(TypeError, match="`desc` must be a string"):
        progress.track(range(2), 3)
    with pytest.raises(TypeError, match="`label` must be a callable"):
        progress.track(range(2), "x", label="name")
    with pytest.raises(TypeError, match="`per_item` must be True, False or None"):
        progress.track(range(2), "x", per_item=1)
    with pytest.raises(ValueError, match="`total` must be a non-negative integer"):
        progress.track(range(2), "x", total=-1)


# ------------------------------------------------------------------ where kprune uses it


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny dense model on 16 features exported as float and int8."""
    from kprune import export
    from kprune.engines.tfkeras import loader

    keras = loader.keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu",
                                                                     name="fc"),
                              keras.layers.Dense(4, name="head")])
    x = np.random.default_rng(0).random((64, 16), dtype=np.float32)
    y = model.predict(x, verbose=0).argmax(axis=1)
    out = tmp_path_factory.mktemp("progress")
    with progress.quiet():
        runs = export.export_variants(model, out, ["float", "int8"], representative_data=x,
                                      prefix="p-")
    return model, x, y, out, runs


@pytest.mark.slow
def test_export_variants_shows_progress(exported, tmp_path, capsys):
    from kprune import export

    model, x, _, _, _ = exported
    export.export_variants(model, tmp_path, ["float", "dynamic"], prefix="p-")
    err = capsys.readouterr().err.splitlines()
    assert "export: 1/2 (p-float.tflite)" in err and "export: 2/2 (p-dynamic.tflite)" in err
    with progress.quiet():
        export.export_variants(model, tmp_path, ["float"])
    assert "export:" not in capsys.readouterr().err


def test_compare_shows_progress_over_the_variants_and_the_latency_rounds(exported, tmp_path,
                                                                          capsys):
    from kprune import report

    _, x, y, _, runs = exported
    variants = [("dense", runs["float"].path), ("int8", runs["int8"].path)]
    report.compare(variants, baseline="dense", x_test=x, y_test=y, out_dir=tmp_path,
                   latency_repeats=2, latency_warmup=0, latency_rounds=3, plots=False)
    err = capsys.readouterr().err.splitlines()
    assert "measure accuracy: 1/2 (dense)" in err and "measure accuracy: 2/2 (int8)" in err
    assert [line for line in err if line.startswith("measure latency: ")][:3] == [
        "measure latency: 1/3", "measure latency: 2/3", "measure latency: 3/3"]
    assert not [line for line in err if line.startswith("predict ")]  # nested: no lines
    with progress.quiet():
        report.compare(variants, baseline="dense", x_test=x, y_test=y, out_dir=tmp_path,
                       latency_repeats=0, plots=False)
    assert "measure" not in capsys.readouterr().err


def test_measure_shows_progress_on_its_own(exported, capsys):
    from kprune import measure

    _, x, y, _, runs = exported
    measure.evaluate_tflite(runs["int8"].path, x, y, batch_size=8)
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if line.startswith("predict p-int8.tflite: ")][:2] == [
        "predict p-int8.tflite: 0/8 batches", "predict p-int8.tflite: 2/8 batches (25%)"]


def test_sensitivity_scan_shows_progress_over_the_layers(exported, capsys):
    from kprune import sensitivity

    model, x, y, _, _ = exported
    sensitivity.scan(model, x, y, sparsities=(0.5, 0.9))
    err = capsys.readouterr().err.splitlines()
    assert "sensitivity: 1/2 (fc, 512 weights)" in err
    assert "sensitivity: 2/2 (head, 128 weights)" in err
    assert not [line for line in err if line.startswith("fc:")]  # the ladder is nested
    sensitivity.scan(model, x, y, sparsities=(0.5,), progress=False)
    with progress.quiet():
        sensitivity.scan(model, x, y, sparsities=(0.5,))
    assert "sensitivity" not in capsys.readouterr().err
    lines = []
    sensitivity.scan(model, x, y, sparsities=(0.5,), progress=lines.append)
    assert len(lines) == 3 and lines[1].startswith("sensitivity [1/2] fc (512 weights): 0.5 ")
    assert "sensitivity" not in capsys.readouterr().err  # a callable replaces the bar


def test_sensitivity_scan_draws_bars_on_a_terminal(exported, monkeypatch):
    import sys

    from kprune import sensitivity

    model, x, y, _, _ = exported
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    sensitivity.scan(model, x, y, sparsities=(0.5, 0.9))
    text = stream.getvalue()
    assert "sensitivity: 100%" in text and "2/2" in text and "layer" in text
