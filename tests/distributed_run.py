"""Run the kprune CLI on two logical CPU devices (a helper script, not a test module).

TensorFlow's logical devices must be configured before anything initialises them, so
the tests that train under ``tf.distribute`` run this script in a fresh process:

    $ python tests/distributed_run.py run recipe.yaml --out runs/mirrored

Under ``MultiWorkerMirroredStrategy`` each worker process runs it with its own
``TF_CONFIG``; the logical devices are then left alone (one device per worker).
``agree FOLDER`` instead has the workers agree on the checkpoints in their FOLDERs
(``Checkpoints.agree``) and prints the name of the newest one left.
"""

import os
import sys

from kprune.engines.tfkeras import loader

if "TF_CONFIG" not in os.environ:
    cpu = loader.tf.config.list_physical_devices("CPU")[0]
    loader.tf.config.set_logical_device_configuration(
        cpu, [loader.tf.config.LogicalDeviceConfiguration()] * 2)

from kprune.cli import main  # after the devices are configured


def agree(folder):
    from kprune.engines import distribute
    from kprune.methods.checkpoints import Checkpoints

    store = Checkpoints(folder)
    store.agree(distribute.make("multi-worker"))
    print(store.latest().path.name)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["agree"]:
        sys.exit(agree(sys.argv[2]))
    sys.exit(main(sys.argv[1:]))
