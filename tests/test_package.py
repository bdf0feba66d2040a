"""Package-level promises: one compat module, lazy top level, a public API that resolves."""

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
    offenders = [path.name for path in PACKAGE.glob("*.py")
                 if path.name != "_compat.py" and TF_IMPORT.search(path.read_text())]
    assert offenders == []


def test_importing_kprune_and_masks_does_not_start_tensorflow():
    code = ("import sys, kprune, kprune.masks, kprune.plan, kprune.schedules;"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_every_public_name_resolves():
    for name in kprune.__all__:
        assert getattr(kprune, name) is not None, name
    assert kprune.export.to_tflite and kprune.masks.n_m


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        kprune.nothing_here  # noqa: B018
