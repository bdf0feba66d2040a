"""Package-level promises: one loader of tf_keras, lazy top level, a public API that resolves."""

import ast
import functools
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kprune

PACKAGE = Path(kprune.__file__).parent
TF_IMPORT = re.compile(r"^\s*(import|from)\s+(tensorflow|tf_keras|tensorflow_model_optimization|keras)\b",
                       re.MULTILINE)
KERAS3_HELPERS = "engines/keras3/helpers.py"
TF_KERAS_LOADER = "engines/tfkeras/loader.py"


def test_only_the_loader_imports_tensorflow_tf_keras_or_tfmot():
    # the Keras 3 engine's helpers are the one module that imports Keras 3 (``import keras``)
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if path.relative_to(PACKAGE).as_posix() not in (TF_KERAS_LOADER, KERAS3_HELPERS)
                 and TF_IMPORT.search(path.read_text())]
    assert offenders == []


def test_only_keras3_imports_keras():
    keras_import = re.compile(r"^\s*(import|from)\s+keras\b", re.MULTILINE)
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if path.relative_to(PACKAGE).as_posix() != KERAS3_HELPERS
                 and keras_import.search(path.read_text())]
    assert offenders == []


def test_importing_kprune_and_masks_does_not_start_tensorflow():
    code = ("import sys, kprune\n"
            "from kprune import masks, plan, schedules, layers\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_the_engine_choice_loads_neither_tfmot_nor_tf_keras():
    # the public functions and their modules load the tf_keras engine only for a tf_keras
    # model (its loader imports TensorFlow, tf_keras and tfmot when first read)
    code = ("import sys, kprune\n"
            "from kprune.engines.tfkeras import loader\n"
            "from kprune.engines import callbacks, saving, verify, wrap\n"
            "hooks = kprune.callbacks(log_dir='logs')\n"
            "for name in ('apply', 'callbacks', 'strip', 'sparsity_report', 'save_model',\n"
            "             'load_model', 'PruningStepper', 'copy_model'):\n"
            "    getattr(kprune, name)\n"
            "print(sorted(m for m in ('tensorflow', 'tf_keras', 'tensorflow_model_optimization')\n"
            "             if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "[]", result.stderr[-3000:]


def test_the_loader_loads_tensorflow_when_first_read():
    from kprune.engines.tfkeras import loader

    assert loader.keras.__name__ == "tf_keras" and loader.tfmot.sparsity.keras
    from kprune.engines.tfkeras.loader import PruneLowMagnitude, tf

    assert tf.__name__ == "tensorflow" and PruneLowMagnitude is loader.PruneLowMagnitude
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        loader.nothing_here  # noqa: B018


def test_import_kprune_masks_does_not_start_tensorflow():
    code = ("import sys\n"
            "import kprune.masks\n"
            "import kprune.plan, kprune.schedules, kprune.layers\n"
            "assert kprune.masks is sys.modules['kprune.core.masks']\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.slow
def test_import_kprune_name_works_for_every_submodule():
    # ``import kprune.NAME`` (not only ``from kprune import NAME``) for every name, in a
    # fresh process, each giving the module that lives in the subpackage.
    lines = ["import importlib, sys"]
    for name, real in sorted(kprune.SUBMODULES.items()):
        lines += [f"import kprune.{name}",
                  f"assert sys.modules['kprune.{name}'] is importlib.import_module('{real}')",
                  f"assert kprune.{name}.__name__ == '{real}', kprune.{name}.__name__",
                  f"assert kprune.{name}.__spec__.name == '{real}'"]
    lines += ["from kprune.masks import n_m", "from kprune.export import to_tflite",
              "print('ok')"]
    result = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True,
                            text=True, timeout=300)
    assert result.stdout.strip().endswith("ok"), result.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(kprune.SUBMODULES))
def test_import_kprune_name_goes_through_the_alias_for_every_submodule(name, monkeypatch):
    # in this process (the fresh-process test above is in the slow tier): the alias entry
    # is dropped so that the import really goes through kprune's finder
    real = kprune.SUBMODULES[name]
    if real != f"kprune.{name}":
        monkeypatch.delitem(sys.modules, f"kprune.{name}", raising=False)
    module = importlib.import_module(f"kprune.{name}")
    assert module is importlib.import_module(real) and module.__name__ == real
    assert module.__spec__.name == real and sys.modules[f"kprune.{name}"] is module


def test_import_of_an_unknown_kprune_module_still_fails():
    with pytest.raises(ModuleNotFoundError, match="No module named 'kprune.nothing_here'"):
        importlib.import_module("kprune.nothing_here")


def test_every_public_name_resolves():
    for name in kprune.__all__:
        assert getattr(kprune, name) is not None, name
    assert kprune.export.to_tflite and kprune.masks.n_m


@pytest.mark.parametrize("name", sorted(kprune.SUBMODULES))
def test_every_submodule_is_reachable_from_the_top(name):
    module = getattr(kprune, name)
    assert module.__name__ == kprune.SUBMODULES[name]
    namespace = {}
    exec(f"from kprune import {name}", namespace)  # the README's style of import
    assert namespace[name] is module


# Levels of the layout, bottom first: a module may import from its own level or below.
# The engine interface is at the bottom with core, whose layer registry asks it: the choice
# of an engine (``engines/__init__``: engine_of), each engine's side of it
# (``engines/*/engine``), the Keras 3 helpers, the tf_keras engine's loader of tf_keras and
# tfmot (``engines/tfkeras/loader``) and the per-example gradients both engines take
# (``engines/per_example``); they import nothing above.
# The rest of ``engines/keras3`` (the Keras 3 engine) and ``engines/tfkeras`` (the tf_keras
# engine's wrapper and callbacks) sit below ``engines`` (the rest of the tf_keras engine and
# the dispatch between the two); structural pruning below the methods that use it.
ENGINE_INTERFACE = ("engines/__init__", "engines/question", "engines/layer_paths",
                    "engines/keras3/engine", "engines/keras3/helpers", "engines/tfkeras/engine",
                    "engines/tfkeras/loader", "engines/per_example")
LEVELS = {"core": 0, "viz": 0, "progress": 0, **dict.fromkeys(ENGINE_INTERFACE, 0),
          "engines/keras3": 1, "engines/tfkeras": 1, "engines": 2, "structural": 3, "methods": 4,
          "tflite": 5, "experiments": 6, "cli": 7, "__init__": 7}


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _place(module):
    """The level of a module, its own path first (``kprune.engines`` -> ``engines/__init__``),
    then its folders' (``kprune.engines.keras3.wrap`` -> ``engines/keras3``)."""
    parts = module.split(".")[1:]
    if MODULES[module].name == "__init__.py":
        parts.append("__init__")
    for depth in range(len(parts), 0, -1):
        place = "/".join(parts[:depth])
        if place in LEVELS:
            return place
    raise KeyError(module)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


@functools.cache
def _parsed(module):
    return ast.parse(MODULES[module].read_text())


def imports_of(module, text=None):
    """Every kprune module that ``module``'s code imports, at the top or inside a function:
    ``from kprune.core import masks`` names ``kprune.core.masks``, ``from kprune.core.plan
    import X`` names ``kprune.core.plan``. A package's ``__init__`` is named only when
    the import names the package itself (``import kprune.structural``), or something in it
    that is not a submodule."""
    tree = _parsed(module) if text is None else ast.parse(text)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("kprune"))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "kprune" or node.module.startswith("kprune.")):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    found.discard(module)
    return {name for name in found if name != "kprune" or module == "kprune"}


def import_graph():
    """``{module: {modules it imports}}`` over the whole package."""
    return {module: imports_of(module) for module in MODULES}


def import_cycles(graph):
    """Every strongly connected group of two or more modules (each one cycle or more), and
    every module that imports itself, sorted; Tarjan's algorithm."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_imports_point_down_only():
    upward = []
    for module in MODULES:
        place = _place(module)
        for target in imports_of(module):
            if LEVELS[_place(target)] > LEVELS[place]:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_inside_the_package_modules_are_imported_by_their_full_path():
    aliases = []
    for module, path in MODULES.items():
        if module == "kprune":
            continue
        for names in FROM_KPRUNE.findall(path.read_text()):
            aliases += [f"{module} imports {name} from kprune"
                        for name in names.replace(" ", "").split(",")
                        if kprune.SUBMODULES.get(name, f"kprune.{name}") != f"kprune.{name}"]
    assert aliases == []


FROM_KPRUNE = re.compile(r"^\s*from\s+kprune\s+import\s+([\w, ]+)$", re.MULTILINE)


def test_no_import_cycle_between_modules():
    assert import_cycles(import_graph()) == []


def test_the_import_checks_catch_an_upward_import_and_a_cycle():
    text = "def later():\n    from kprune.experiments import data\n"
    assert imports_of("kprune.core.masks", text) == {"kprune.experiments.data"}
    assert LEVELS[_place("kprune.experiments.data")] > LEVELS[_place("kprune.core.masks")]
    assert _place("kprune.engines.keras3.wrap") == "engines/keras3"
    assert _place("kprune.engines.tfkeras.loader") == "engines/tfkeras/loader"
    text = "from kprune.engines import wrap\n"  # the loader is at the bottom: wrap is above it
    assert LEVELS[_place("kprune.engines.wrap")] > LEVELS[_place("kprune.engines.tfkeras.loader")]
    assert imports_of("kprune.engines.tfkeras.loader", text) == {"kprune.engines.wrap"}
    assert _place("kprune.engines") == "engines/__init__" and _place("kprune") == "__init__"
    assert LEVELS[_place("kprune.engines.keras3.wrap")] > LEVELS[_place("kprune.core.layers")]
    assert LEVELS["engines/keras3"] < LEVELS["engines"] and LEVELS["structural"] < LEVELS[
        "methods"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"], ["e"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_belongs_to_a_level():
    assert all(_place(module) in LEVELS for module in MODULES)


def test_names_that_moved_are_still_reachable_where_they_were():
    from kprune.engines import callbacks, classifier, wrap
    from kprune.engines.tfkeras import callbacks as tf_keras_callbacks
    from kprune.engines.tfkeras import wrapper

    for name in ("compile_classifier", "accuracy", "ends_in_softmax"):
        assert getattr(kprune.trainer, name) is getattr(classifier, name)
    assert kprune.models.compile_classifier is classifier.compile_classifier
    assert kprune.export.pqat_int8 is kprune.pqat.pqat_int8
    assert wrap.PruneLowMagnitude is wrapper.PruneLowMagnitude
    for name in ("SparsityLogger", "ScheduleGuard", "wrapped_layers", "final_step",
                 "training_step"):
        assert getattr(callbacks, name) is getattr(tf_keras_callbacks, name)
    assert callbacks.ScheduleWarning is kprune.core.pruning_logs.ScheduleWarning
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        callbacks.nothing_here  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing_here'"):
        wrap.nothing_here  # noqa: B018


# Which Keras a model holds is asked inside kprune/engines/ only (engine_of picks the engine
# once per public call; kprune.engines.is_keras3 is the question).
ASKING_NAMES = {"is_keras3", "_is_keras3"}


def askers_of_is_keras3(module, text=None):
    """The names by which ``module`` imports, calls, refers to or redefines ``is_keras3``
    (a private copy too), in its code (not its comments or docstrings)."""
    tree = _parsed(module) if text is None else ast.parse(text)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found.update(alias.name for alias in node.names if alias.name in ASKING_NAMES)
        elif isinstance(node, ast.Name) and node.id in ASKING_NAMES:
            found.add(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in ASKING_NAMES:
            found.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)) and getattr(
                node, "name", None) in ASKING_NAMES:
            found.add(node.name)
    return found


def test_only_the_engines_ask_which_keras_a_model_holds():
    askers = {module for module in MODULES
              if not module.startswith("kprune.engines") and askers_of_is_keras3(module)}
    assert askers == set(), "ask the model's engine (kprune.engines.engine_of)"


def test_the_engine_question_check_catches_imports_calls_and_copies():
    assert askers_of_is_keras3("kprune.core.masks", "from kprune.engines import is_keras3\n"
                                                    "def f(m):\n    return 1 if is_keras3(m) else 2\n"
                               ) == {"is_keras3"}
    assert askers_of_is_keras3("kprune.core.masks", "from kprune import engines\n"
                                                    "x = engines.is_keras3(object())\n") == {"is_keras3"}
    assert askers_of_is_keras3("kprune.core.masks", "def _is_keras3(obj):\n    return False\n"
                               ) == {"_is_keras3"}
    assert askers_of_is_keras3("kprune.core.masks", '"""is_keras3 in a docstring"""\n') == set()


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        kprune.nothing_here  # noqa: B018
