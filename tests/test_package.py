"""Package-level promises: one compat module, lazy top level, a public API that resolves."""

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


def test_only_compat_imports_tensorflow_tf_keras_or_tfmot():
    # _keras3 is the one module that imports Keras 3 (``import keras``), for its engine.
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if path.name not in ("_compat.py", "_keras3.py")
                 and TF_IMPORT.search(path.read_text())]
    assert offenders == []


def test_only_keras3_imports_keras():
    keras_import = re.compile(r"^\s*(import|from)\s+keras\b", re.MULTILINE)
    offenders = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                 if path.name != "_keras3.py" and keras_import.search(path.read_text())]
    assert offenders == []


def test_importing_kprune_and_masks_does_not_start_tensorflow():
    code = ("import sys, kprune\n"
            "from kprune import masks, plan, schedules, layers\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_import_kprune_masks_does_not_start_tensorflow():
    code = ("import sys\n"
            "import kprune.masks\n"
            "import kprune.plan, kprune.schedules, kprune.layers\n"
            "assert kprune.masks is sys.modules['kprune.core.masks']\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


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
LEVELS = {"_compat": 0, "_keras3": 0, "core": 0, "viz": 0, "progress": 0, "engines": 1, "structural": 2,
          "methods": 2, "tflite": 3, "experiments": 4, "cli": 5, "__init__": 5}
KPRUNE_IMPORT = re.compile(r"^\s*(?:from|import)\s+kprune\.(\w+)", re.MULTILINE)


def _level(path):
    top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return top, LEVELS[top]


FROM_KPRUNE = re.compile(r"^\s*from\s+kprune\s+import\s+([\w, ]+)$", re.MULTILINE)


def test_imports_point_down_only():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        top, level = _level(path)
        text = path.read_text()
        for target in KPRUNE_IMPORT.findall(text):
            if LEVELS[target] > level:
                upward.append(f"{path.relative_to(PACKAGE)} imports kprune.{target}")
        if top == "__init__":
            continue
        for names in FROM_KPRUNE.findall(text):  # inside the package, import by full path
            upward += [f"{path.relative_to(PACKAGE)} imports {name} from kprune"
                       for name in names.replace(" ", "").split(",")
                       if kprune.SUBMODULES.get(name, f"kprune.{name}") != f"kprune.{name}"]
    assert upward == []


def test_the_import_direction_check_catches_an_upward_import(tmp_path):
    text = "from kprune.experiments import data\n"
    assert [t for t in KPRUNE_IMPORT.findall(text) if LEVELS[t] > LEVELS["core"]] == ["experiments"]


def test_every_module_belongs_to_a_level():
    tops = {_level(path)[0] for path in PACKAGE.rglob("*.py")}
    assert tops <= set(LEVELS)


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        kprune.nothing_here  # noqa: B018
