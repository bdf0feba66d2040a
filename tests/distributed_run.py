"""Run the kprune CLI on two logical CPU devices (a helper script, not a test module).

TensorFlow's logical devices must be configured before anything initialises them, so
the tests that train under ``tf.distribute`` run this script in a fresh process:

    $ python tests/distributed_run.py run recipe.yaml --out runs/mirrored

Under ``MultiWorkerMirroredStrategy`` each worker process runs it with its own
``TF_CONFIG``; the logical devices are then left alone (one device per worker).
"""

import os
import sys

from kprune import _compat

if "TF_CONFIG" not in os.environ:
    cpu = _compat.tf.config.list_physical_devices("CPU")[0]
    _compat.tf.config.set_logical_device_configuration(
        cpu, [_compat.tf.config.LogicalDeviceConfiguration()] * 2)

from kprune.cli import main  # noqa: E402  (after the devices are configured)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
