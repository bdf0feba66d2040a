"""Damaged files: one line on stderr naming the file, exit 2, nothing written, no traceback.

Real files (a .keras and an .h5 model, a dense and a sparse .tflite, a recipe) are
emptied, truncated, replaced by text and fuzzed with hypothesis (truncations and byte
flips); every CLI command that reads them answers 0 or 2, never raises, and a 2 comes
with exactly one stderr line that names the file.
"""

import itertools
import signal
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import kprune
from kprune import export, flatbuffer, models, saving
from kprune.cli import main
from kprune.engines.tfkeras import loader
from kprune.experiments.recipe import Recipe

RECIPE = """model: model.keras
data: mnist
subset: {train: 200, test: 100}
baseline: {epochs: 0}
workflow: {name: one-shot, epochs: 1}
export: {variants: [float]}
"""


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Real files, made once: {kind: path} for keras, h5, tflite, sparse (.tflite), recipe."""
    folder = tmp_path_factory.mktemp("good")
    loader.keras.utils.set_random_seed(0)
    model = models.build("tfmot-cnn")
    for name in ("conv1", "head"):  # 60% zeros: the sparse export stores both sparse
        kernel = model.get_layer(name).kernel
        values = kernel.numpy()
        values[np.abs(values) < np.quantile(np.abs(values), 0.6)] = 0.0
        kernel.assign(values)
    paths = {
        "keras": kprune.save_model(model, folder / "model.keras"),
        "h5": kprune.save_model(model, folder / "model.h5"),
        "tflite": export.to_tflite(model, folder / "model.tflite").path,
        "sparse": export.to_tflite(model, folder / "sparse.tflite", sparse=True).path,
        "recipe": folder / "recipe.yaml",
    }
    paths["recipe"].write_text(RECIPE)
    assert flatbuffer.tflite_tensors(paths["sparse"]).sparse_storage
    return paths


_serial = itertools.count()


def fresh_out(tmp_path):
    """An output folder path that does not exist yet (one per hypothesis example)."""
    return tmp_path / f"out-{next(_serial)}"


def one_line_naming(capsys, path):
    """The single stderr line, which names ``path``."""
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0], lines[0]
    return lines[0]


def damaged(raw, keep, flips):
    """``raw`` cut to ``keep`` bytes (modulo its length; None: not cut), then bytes set."""
    data = bytearray(raw if keep is None else raw[: keep % len(raw)])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    return bytes(data)


KEEP = st.none() | st.integers(min_value=0, max_value=2**24)
FLIPS = st.lists(st.tuples(st.integers(min_value=0, max_value=2**24),
                           st.integers(min_value=0, max_value=255)), max_size=8)
# Recipes get YAML's own characters too, so damage reaches the parser and the checks.
YAML_BYTES = st.sampled_from(b" \n:-,#{}[]'\"0123456789.eE_abcdefmnorstuwxyz") | st.integers(0, 255)
RECIPE_FLIPS = st.lists(st.tuples(st.integers(min_value=0, max_value=2**24), YAML_BYTES),
                        max_size=8)


def fuzz(examples):
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------ explicit cases

def _empty(raw):
    return b""


def _half(raw):
    return raw[: len(raw) // 2]


def _text(raw):
    return b"model: seed-cnn\nnot a model file at all\n"


BREAKAGES = {"empty": _empty, "half": _half, "text": _text}


@pytest.mark.parametrize("kind", ["keras", "h5", "tflite", "sparse"])
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_inspect_answers_a_broken_file_in_one_line(good, tmp_path, capsys, kind, breakage):
    path = tmp_path / f"broken{good[kind].suffix}"
    path.write_bytes(BREAKAGES[breakage](good[kind].read_bytes()))
    assert main(["inspect", str(path)]) == 2
    line = one_line_naming(capsys, path)
    assert "not a readable Keras model file" in line or "not a valid .tflite file" in line


@pytest.mark.parametrize("kind", ["keras", "h5"])
@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_export_writes_nothing_for_a_broken_model(good, tmp_path, capsys, kind, breakage):
    path = tmp_path / f"broken{good[kind].suffix}"
    path.write_bytes(BREAKAGES[breakage](good[kind].read_bytes()))
    out = tmp_path / "out"
    assert main(["export", str(path), "--out", str(out)]) == 2
    assert "not a readable Keras model file" in one_line_naming(capsys, path)
    assert not out.exists()


def test_good_files_still_read(good, capsys):
    for kind in ("tflite", "sparse", "keras", "h5"):
        assert main(["inspect", str(good[kind])]) == 0
    assert "sparse storage: yes" in capsys.readouterr().out


def test_tflite_with_a_corrupted_root_offset(good, tmp_path, capsys):
    raw = bytearray(good["sparse"].read_bytes())
    path = tmp_path / "root.tflite"
    raw[0:4] = (len(raw) + 100).to_bytes(4, "little")  # past the end
    path.write_bytes(bytes(raw))
    assert main(["inspect", str(path)]) == 2
    assert "root table offset" in one_line_naming(capsys, path)
    raw[0:4] = (8).to_bytes(4, "little")  # inside the file, but no table there
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"root\.tflite: not a valid \.tflite file: model"):
        flatbuffer.tflite_tensors(path)


def test_tflite_reader_raises_value_error_naming_the_file(good, tmp_path):
    path = tmp_path / "cut.tflite"
    path.write_bytes(good["tflite"].read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cut\.tflite: not a valid \.tflite file: .*outside"):
        flatbuffer.tflite_tensors(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"cut\.tflite: not a valid \.tflite file: the file is empty"):
        flatbuffer.tflite_tensors(path)


@pytest.mark.parametrize(
    "kind, breakage, message",
    [
        ("keras", "empty", r"not a readable Keras model file \(the file is empty\)"),
        ("keras", "half", r"not a readable Keras model file \(truncated or damaged zip archive"),
        ("keras", "text", r"not a readable Keras model file \(not a zip archive"),
        ("h5", "half", r"not a readable Keras model file \(truncated or damaged HDF5 file"),
        ("h5", "text", r"not a readable Keras model file \(no HDF5 signature"),
    ],
)
def test_load_model_raises_value_error_naming_the_file(good, tmp_path, kind, breakage, message):
    path = tmp_path / f"broken{good[kind].suffix}"
    path.write_bytes(BREAKAGES[breakage](good[kind].read_bytes()))
    with pytest.raises(ValueError, match=rf"broken\.{kind}: {message}"):
        kprune.load_model(path)
    with pytest.raises(ValueError, match=rf"broken\.{kind}: {message}"):
        models.load(path)


def test_keras_archive_with_a_flipped_byte_fails_its_crc(good, tmp_path):
    raw = bytearray(good["keras"].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path = tmp_path / "flipped.keras"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"flipped\.keras: .*damaged zip archive"):
        kprune.load_model(path)


def test_h5_with_a_broken_global_heap_is_refused_before_hdf5_loops(good, tmp_path):
    # HDF5 1.14 loops forever on a global heap object of index 0 and size 0.
    raw = bytearray(good["h5"].read_bytes())
    heap = raw.find(b"GCOL\x01\x00\x00\x00")
    assert heap > 0
    raw[heap + 16 : heap + 32] = bytes(16)  # first object: index 0, size 0
    path = tmp_path / "heap.h5"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"heap\.h5: .*global heap at byte [\d,]+ is damaged"):
        kprune.load_model(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_h5_that_crashes_hdf5_is_refused(good, monkeypatch):
    # Some flipped bytes make HDF5 itself segfault; the child process that reads the
    # file first takes the crash. Simulated here, as those bytes depend on the layout.
    monkeypatch.setattr(saving, "_READ_HDF5",
                        f"import os; os.kill(os.getpid(), {int(signal.SIGSEGV)})")
    with pytest.raises(ValueError, match=r"HDF5 library crashed reading it \(signal 11\)"):
        kprune.load_model(good["h5"])


def test_h5_without_a_model_is_refused(good, tmp_path):
    path = tmp_path / "weights.h5"
    kprune.load_model(good["h5"]).save_weights(str(path))
    with pytest.raises(ValueError, match=r"weights\.h5: .*without a Keras model"):
        kprune.load_model(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "the recipe file is empty"),
        (b"# only a comment\n", "the recipe file is empty"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe binary", r"not a text \(UTF-8\) file: byte 0 "),
        (b"model: [unclosed\n", "not valid YAML"),
    ],
)
def test_recipe_load_refuses_a_broken_recipe(tmp_path, content, message):
    from kprune.experiments.recipe import RecipeError

    path = tmp_path / "broken.yaml"
    path.write_bytes(content)
    with pytest.raises(RecipeError, match=rf"broken\.yaml: {message}"):
        Recipe.load(path)


def test_run_answers_a_broken_recipe_and_a_broken_model(good, tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_bytes(b"\x00\xff" * 50)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 2
    one_line_naming(capsys, path)
    # A valid recipe whose model file is truncated: refused before anything is written.
    model = tmp_path / "model.keras"
    model.write_bytes(_half(good["keras"].read_bytes()))
    path.write_text(RECIPE)
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert "not a readable Keras model file" in one_line_naming(capsys, model)
    assert not out.exists()


# ------------------------------------------------------------------ fuzzing

@pytest.mark.parametrize("kind", ["tflite", "sparse"])
@fuzz(40)
@given(keep=KEEP, flips=FLIPS)
def test_fuzz_inspect_tflite(good, tmp_path, capsys, kind, keep, flips):
    inspect_damaged(good[kind], tmp_path, capsys, keep, flips)


@pytest.mark.parametrize("kind", ["keras", pytest.param("h5", marks=pytest.mark.slow)])
@fuzz(12)
@given(keep=KEEP, flips=FLIPS)
def test_fuzz_inspect_model(good, tmp_path, capsys, kind, keep, flips):
    inspect_damaged(good[kind], tmp_path, capsys, keep, flips)


def test_an_undecodable_byte_in_the_error_is_printed_escaped(good, tmp_path, capsys):
    """A flipped byte in an .h5 layer name reached the message as a lone surrogate, and
    printing it raised UnicodeEncodeError (found by the fuzz test below)."""
    path = tmp_path / "fuzzed.h5"
    path.write_bytes(damaged(good["h5"].read_bytes(), None, [(3424, 128)]))
    capsys.readouterr()
    assert main(["inspect", str(path)]) == 2
    one_line_naming(capsys, path)


def inspect_damaged(original, tmp_path, capsys, keep, flips):
    """``kprune inspect`` on a damaged copy of ``original``: exit 0, or 2 with one line."""
    assume(keep is not None or flips)
    path = tmp_path / f"fuzzed{original.suffix}"
    path.write_bytes(damaged(original.read_bytes(), keep, flips))
    capsys.readouterr()
    rc = main(["inspect", str(path)])
    event(f"exit {rc}")
    assert rc in (0, 2)
    if rc == 2:
        one_line_naming(capsys, path)


@fuzz(12)
@given(keep=KEEP, flips=FLIPS)
def test_fuzz_export(good, tmp_path, capsys, keep, flips):
    assume(keep is not None or flips)
    path = tmp_path / "fuzzed.keras"
    path.write_bytes(damaged(good["keras"].read_bytes(), keep, flips))
    out = fresh_out(tmp_path)
    capsys.readouterr()
    rc = main(["export", str(path), "--out", str(out)])
    event(f"exit {rc}")
    assert rc in (0, 2)
    if rc == 2:
        one_line_naming(capsys, path)
        assert not out.exists()


def _loads(path):
    try:
        Recipe.load(path)
    except ValueError:  # RecipeError, the refusal this test is after
        return False
    return True


@fuzz(30)
@given(keep=KEEP, flips=RECIPE_FLIPS)
def test_fuzz_run_recipe(good, tmp_path, capsys, keep, flips):
    path = good["recipe"].parent / f"fuzzed-{next(_serial)}.yaml"  # next to model.keras
    path.write_bytes(damaged(good["recipe"].read_bytes(), keep, flips))
    try:
        # A recipe the damage left valid would train: only refusals are run here.
        assume(not _loads(path))
        out = fresh_out(tmp_path)
        capsys.readouterr()
        rc = main(["run", str(path), "--out", str(out)])
        assert rc == 2
        line = one_line_naming(capsys, path)
        event(" ".join(line.split(f"{path}: ")[-1].split()[:2]))  # the kind of refusal
        assert not out.exists()
    finally:
        path.unlink()
