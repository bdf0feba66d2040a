"""Recipes: a whole pruning experiment in one YAML file, validated before anything trains.

A recipe names the model, the data, the baseline training, the plan, the workflow and
the export variants. Every key is checked (unknown keys, wrong types, bad values) and
errors name the key and, when read from a file, the line.

Example recipe (every key optional except ``model``)::

    model: seed-cnn            # built-in name, or a .keras/.h5 path of any classifier
    # imports: [my_package.layers]   # modules imported first: they register custom layers
    data: mnist                # mnist, fashion-mnist, an .npz, an IDX or image folder
    # or: data: {source: images/, scale: auto, image_size: [32, 32], test_split: 0.2}
    subset: {train: 6000, test: 2000}
    validation: 0.1            # held out of the training images: a fraction or a count
    structural: {fraction: 0.5, scope: global, fine_tune_epochs: 1}   # optional; when: after
    # transformers: structural: {heads: 0.5, neurons: 0.5, blocks: 0.25, criterion: fisher,
    #                            correction: least_squares, calibration: 256}
    seed: 0
    baseline: {epochs: 1, batch_size: 64, optimizer: adam, learning_rate: 0.001}
    # baseline: {..., learning_rate_decay: 0.95}: each fit's rate falls 5 % an epoch
    # (or cosine: each fit anneals it towards 0)
    # baseline: {..., trained_as_long: true}: compare with a dense model trained as long
    plan: default              # default, a plan file, or {rules: [...]}
    workflow: {name: gradual, epochs: 1}
    # workflow: {..., learning_rate_decay: 0.95}: the fits after the baseline decay so
    export: {variants: [float, sparse, int8], calibration_samples: 200}
    distribute: {strategy: mirrored}   # optional: mirrored or multi-worker (TF_CONFIG)
    checkpoint_steps: 200      # optional: checkpoint inside epochs too (every epoch always)

Example:
    >>> recipe = Recipe.load("examples/seed_cnn.yaml")
    >>> recipe.workflow.name
    'gradual'
"""

import difflib
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path

__all__ = ["Recipe", "DataSpec", "Structural", "Training", "Workflow", "Export", "Subset",
           "Distribute", "RecipeError", "WORKFLOWS"]

WORKFLOWS = ("gradual", "one-shot", "iterative", "rewind", "variational", "post-training")
TEACHERS = ("baseline", "control")
OPTIMIZERS = ("adam", "sgd", "rmsprop")


class RecipeError(ValueError):
    """A recipe that cannot run: says which key, what was wrong, and where."""


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is prepared (see :mod:`kprune.sources`).

    ``source``: ``mnist``, ``fashion-mnist``, an ``.npz``, or a folder (IDX files, or
    images in class subfolders); ``scale``: ``auto`` (pixels / 255 unless the model has
    its own ``Rescaling``), a divisor, or null; ``image_size``: ``[height, width]`` for an
    image folder when the model does not fix it; ``test_split``: the fraction of each
    class an image folder without ``train/`` and ``test/`` keeps for testing.
    """

    source: str = "mnist"
    scale: object = "auto"
    image_size: object = None
    test_split: float = 0.2


@dataclass(frozen=True)
class Subset:
    """Use only the first ``train``/``test`` images (a seeded sample) for quick runs."""

    train: int | None = None
    test: int | None = None


@dataclass(frozen=True)
class Training:
    """How the dense baseline is trained (``epochs: 0`` uses a saved model as it is).

    ``trained_as_long: true``: the report compares the pruned model with a dense control
    trained on from the baseline for as many epochs as the pruned model got after it
    (structural fine-tune and workflow), so both trained as many epochs in total; that
    control is the run's ``baseline.keras`` and ``dense-float.tflite`` (the baseline
    before those epochs is kept as ``baseline-start.keras``). Default false: the report
    compares with the baseline as trained (``epochs``).

    ``learning_rate_decay``: how the rate falls within each fit of the run (baseline,
    structural fine-tune, workflow, dense control; ``workflow.learning_rate_decay``, when
    given, replaces it in every fit after the baseline): 1 keeps it constant; a factor in
    (0, 1) multiplies it by that every epoch (``learning_rate * decay ** epoch``);
    ``cosine`` anneals it from ``learning_rate`` towards 0 over the fit's epochs.
    """

    epochs: int = 1
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 0.001
    learning_rate_decay: object = 1.0
    trained_as_long: bool = False


@dataclass(frozen=True)
class Structural:
    """Remove channels before the sparse plan (see :func:`kprune.structural.prune`).

    ``fraction`` of the channels (null: no structural step) go by ``criterion`` with
    ``scope`` global or per layer (a global budget counts channels, or with ``cost: macs``
    or ``params`` weighs each by its cost), keeping multiples of ``round_to``, leaving the groups of
    the ``exclude`` layers whole. ``when: before`` (the default): the smaller model is
    fine-tuned ``fine_tune_epochs``, then the workflow prunes it with the plan. ``when:
    after``: the workflow's sparse model loses channels, then the plan is applied again on
    the smaller model, one-shot, and fine-tuned ``fine_tune_epochs`` (at least 1): removing
    input channels shifts the groups of 4 that 2:4 runs along, so the masks are recomputed
    rather than sliced.

    Transformers: ``heads`` and ``neurons`` (instead of ``fraction``) remove those fractions
    of the attention heads and of the other prunable channels (a feed-forward block's
    neurons), each its own budget; ``blocks`` drops that fraction of the droppable residual
    blocks (rounded down) first, ranked by ``block_criterion`` (``influence``: block
    influence on the calibration inputs; ``l1``; ``sensitivity``: validation accuracy);
    ``block_unit: transformer`` counts and drops whole transformer blocks (attention and
    feed-forward together, see :func:`kprune.structural.drop_blocks`), ``add`` (the
    default) one residual ``Add`` at a time.
    ``criterion: fisher`` scores channels and heads on ``calibration`` unlabeled training
    examples (``taylor`` on them with their labels); ``correction: least_squares`` re-fits
    on them the projections that lost inputs and the layers after them (see
    :func:`kprune.structural.correct`).
    """

    fraction: float | None = None
    heads: float | None = None
    neurons: float | None = None
    blocks: float | None = None
    scope: str = "global"
    criterion: str = "l1"
    cost: str | None = None
    round_to: int | None = None
    exclude: tuple = ()
    fine_tune_epochs: int = 1
    when: str = "before"
    block_criterion: str = "influence"
    block_unit: str = "add"
    correction: str | None = None
    calibration: int = 256

    @property
    def active(self):
        """Whether the recipe has a structural step (any of its fractions given)."""
        return any(getattr(self, key) is not None for key in ("fraction", "heads", "neurons",
                                                               "blocks"))

    def prune_fraction(self):
        """What :func:`kprune.structural.prune` takes: ``fraction``, or one per kind of
        unit (``{"heads": ..., "channels": ...}``); None when only blocks are dropped."""
        if self.fraction is not None:
            return self.fraction
        kinds = {"heads": self.heads, "channels": self.neurons}
        return {key: value for key, value in kinds.items() if value is not None} or None

    def needs_calibration(self):
        """Whether the step reads calibration examples of the training split."""
        return (self.criterion in ("taylor", "fisher") or self.correction is not None
                or (self.blocks is not None and self.block_criterion == "influence"))


@dataclass(frozen=True)
class Workflow:
    """Which pruning workflow runs, and its knobs (see ``kprune.workflows``).

    ``epochs`` is the pruning fit (gradual), the fine-tune (one-shot), the epochs per
    round (iterative), the retraining (rewind) or the variational training
    (variational: sparse variational dropout, :mod:`kprune.methods.variational`, on the
    plan's layers, or on every Dense and Conv2D with ``plan: default``; its own keys are
    ``threshold``, ``kl_weight``, ``kl_ramp_epochs``, ``finetune_epochs``, the fine-tune
    with the zeros held that follows, and ``distill``, the dense model's share of the
    targets in both), distilled at ``temperature`` from ``teacher``: ``baseline`` (the
    dense model the workflow starts from) or ``control`` (the dense control of
    ``baseline.trained_as_long``, then trained before the workflow rather than after:
    the pruned model learns from the model it is compared with). ``finetune_teacher`` and
    ``finetune_temperature`` (null: as the variational stage) are the fine-tune's: it
    leaves the sparsity as it is, so it can distil the control at a high temperature
    while the variational stage keeps the teacher its ``kl_weight`` was chosen with.

    ``learning_rate_decay`` (null: the baseline's) is the decay of every fit after the
    baseline: the structural fine-tune, the workflow's and the dense control's, which so
    trains as the baseline did, then as the pruned model did.

    ``post-training`` prunes the baseline at once from ``calibration`` unlabeled examples
    of the training split with ``method`` (``magnitude``, ``wanda`` or ``sparsegpt``:
    :func:`kprune.methods.post_training.prune_post_training`), no training; then
    ``finetune_epochs`` (0: none) fine-tune it with its zeros held (``epochs`` is unused).
    """

    name: str = "gradual"
    epochs: int = 1
    rounds: int = 3
    accuracy_floor: float | None = None
    rewind_to: str = "init"
    threshold: float = 3.0
    kl_weight: float = 1.0
    kl_ramp_epochs: int = 0
    finetune_epochs: int = 0
    distill: float = 0.0
    temperature: float = 1.0
    teacher: str = "baseline"
    finetune_teacher: str | None = None
    finetune_temperature: float | None = None
    learning_rate_decay: object = None
    method: str = "sparsegpt"
    calibration: int = 512


@dataclass(frozen=True)
class Export:
    """Which TFLite variants to write and measure (names from ``kprune.export.VARIANTS``)."""

    variants: tuple = ("float", "sparse", "int8")
    calibration_samples: int = 200
    latency_repeats: int = 20


@dataclass(frozen=True)
class Distribute:
    """Which ``tf.distribute`` strategy trains the run (null: none, one device).

    ``mirrored``: every local GPU, or the CPU's logical devices; ``multi-worker``:
    ``MultiWorkerMirroredStrategy`` over the workers the ``TF_CONFIG`` environment
    variable names (see :func:`kprune.engines.distribute.make`).
    """

    strategy: str | None = None


@dataclass(frozen=True)
class Recipe:
    """One experiment: model, data, baseline, plan, workflow, export. See the module doc.

    ``validation`` (a fraction in (0, 1) or a count) is held out of the (subset) training
    images with ``seed``: the workflow validates on it (``accuracy_floor``), and the test
    split is used only for the final report. ``seed`` also seeds the model's initial
    weights and every fit (shuffles, dropout, op determinism: two runs on one machine
    give the same masks and weights). ``distribute`` picks a ``tf.distribute`` strategy;
    ``checkpoint_steps`` adds checkpoints inside epochs to those at every epoch end.

    ``imports``: Python modules (``my_package.layers``) imported before the model is
    loaded, so the custom layers a ``.keras`` file holds are registered (their
    ``keras.saving.register_keras_serializable`` decorators run); a module is looked up
    in the recipe's folder first, then on the Python path.
    """

    model: str
    imports: tuple = ()
    data: DataSpec = field(default_factory=DataSpec)
    subset: Subset = field(default_factory=Subset)
    validation: object = 0.1
    seed: int = 0
    baseline: Training = field(default_factory=Training)
    plan: object = "default"
    structural: Structural = field(default_factory=Structural)
    workflow: Workflow = field(default_factory=Workflow)
    export: Export = field(default_factory=Export)
    distribute: Distribute = field(default_factory=Distribute)
    checkpoint_steps: int | None = None
    base_dir: str = field(default=".", compare=False, repr=False)

    def __post_init__(self):
        if isinstance(self.data, str):  # Recipe(data="images/") is the source alone
            object.__setattr__(self, "data", DataSpec(source=self.data))

    @classmethod
    def from_dict(cls, data, *, lines=None, base_dir="."):
        """Build and validate a recipe from a mapping; ``lines`` maps key paths to lines."""
        lines = lines or {}
        if isinstance(data, dict) and isinstance(data.get("data"), str):
            data = {**data, "data": {"source": data["data"]}}  # `data: PATH` is the source
            lines = {**lines, "data.source": lines.get("data")}
        recipe = _build(cls, data, "", lines, skip=("base_dir",))
        recipe = replace(recipe, base_dir=str(base_dir))
        recipe.check(lines)
        return recipe

    @classmethod
    def load(cls, path, *, overrides=None):
        """Read and validate a recipe file; relative paths inside it are taken from its folder.

        ``overrides`` maps keys to values that replace the file's before validation, e.g.
        ``{"data.source": "/abs/images", "model": "my.keras"}`` from ``kprune run --data
        --model``; errors in them name the option instead of a line. ``imports`` (from
        ``--import``) is added to the file's list rather than replacing it.
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"Recipe file not found. Received: path={str(path)!r}")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            raise RecipeError(f"{path}: not a text (UTF-8) file: byte {err.start:,} cannot be "
                              "decoded; a recipe is a YAML text file") from None
        try:
            data = yaml.safe_load(text)
            lines = _key_lines(yaml.compose(text))
        except yaml.YAMLError as err:
            raise RecipeError(f"{path}: not valid YAML: {err}") from None
        if data is None:
            raise RecipeError(f"{path}: the recipe file is empty; it needs at least `model`")
        for key, (option, value) in (overrides or {}).items():
            data, lines = _override(data, lines, key, value, option)
        try:
            return cls.from_dict(data, lines=lines, base_dir=path.parent)
        except RecipeError as err:
            raise RecipeError(f"{path}: {err}") from None

    def check(self, lines=None):
        """Check values that types alone do not catch; paths must exist."""
        lines = lines or {}
        from kprune.experiments import models
        from kprune.tflite.export import VARIANTS

        _positive(self.baseline.epochs, "baseline.epochs", lines, minimum=0)
        _positive(self.baseline.batch_size, "baseline.batch_size", lines)
        _positive(self.workflow.epochs, "workflow.epochs", lines)
        _positive(self.workflow.rounds, "workflow.rounds", lines)
        _positive(self.export.calibration_samples, "export.calibration_samples", lines)
        _positive(self.export.latency_repeats, "export.latency_repeats", lines)
        for key in ("train", "test"):
            value = getattr(self.subset, key)
            if value is not None:
                _positive(value, f"subset.{key}", lines)
        self._check_validation(lines)
        _choice(self.baseline.optimizer, OPTIMIZERS, "baseline.optimizer", lines)
        _choice(self.workflow.name, WORKFLOWS, "workflow.name", lines)
        if self.checkpoint_steps is not None:
            _positive(self.checkpoint_steps, "checkpoint_steps", lines)
        if self.distribute.strategy is not None:
            from kprune.engines.distribute import STRATEGIES

            _choice(self.distribute.strategy, STRATEGIES, "distribute.strategy", lines)
        if self.baseline.learning_rate <= 0:
            _fail("baseline.learning_rate", "must be positive", self.baseline.learning_rate, lines)
        for key, decay in (("baseline", self.baseline.learning_rate_decay),
                           ("workflow", self.workflow.learning_rate_decay)):
            if key == "workflow" and decay is None:  # the baseline's
                continue
            if decay != "cosine" and (isinstance(decay, bool) or not isinstance(
                    decay, (int, float)) or not 0 < decay <= 1):
                _fail(f"{key}.learning_rate_decay", "must be a factor per epoch in (0, 1] (1: "
                      "a constant rate) or 'cosine'", decay, lines)
        if self.workflow.accuracy_floor is not None and not 0 < self.workflow.accuracy_floor < 1:
            _fail("workflow.accuracy_floor", "must be a fraction in (0, 1)",
                  self.workflow.accuracy_floor, lines)
        self._check_variational(lines)
        if self.workflow.rewind_to != "init":
            _fail("workflow.rewind_to", "must be 'init' (rewind to the initial weights)",
                  self.workflow.rewind_to, lines)
        for variant in self.export.variants:
            _choice(variant, tuple(VARIANTS), "export.variants", lines)
        self.import_modules(lines)
        if self.model not in models.MODELS and not self.resolve(self.model).is_file():
            _fail("model", f"is neither a built-in model {sorted(models.MODELS)} nor an "
                  "existing .keras/.h5 file", self.model, lines)
        self._check_data(lines)
        self._check_structural(lines)
        try:
            self.pruning_plan()
        except (ValueError, TypeError, FileNotFoundError) as err:
            raise RecipeError(f"Key `plan`{_at('plan', lines)}: {err}") from None

    def _check_variational(self, lines):
        spec, default = self.workflow, Workflow()
        if spec.name != "post-training":
            for key in ("method", "calibration"):
                if getattr(spec, key) != getattr(default, key):
                    _fail(f"workflow.{key}", "is used only by workflow.name: post-training",
                          getattr(spec, key), lines)
        else:
            from kprune.methods.post_training import METHODS

            _choice(spec.method, METHODS, "workflow.method", lines)
            _positive(spec.calibration, "workflow.calibration", lines)
            _positive(spec.finetune_epochs, "workflow.finetune_epochs", lines, minimum=0)
        if spec.name != "variational":
            shared = ("finetune_epochs",) if spec.name == "post-training" else ()
            for key in ("threshold", "kl_weight", "kl_ramp_epochs", "finetune_epochs",
                        "distill", "temperature", "teacher", "finetune_teacher",
                        "finetune_temperature"):
                if key not in shared and getattr(spec, key) != getattr(default, key):
                    _fail(f"workflow.{key}", "is used only by workflow.name: variational",
                          getattr(spec, key), lines)
            return
        if not -10 < spec.threshold < 10:
            _fail("workflow.threshold", "must be a log_alpha in (-10, 10) (3 drops weights "
                  "whose dropout rate is above 0.95)", spec.threshold, lines)
        if not spec.kl_weight > 0:
            _fail("workflow.kl_weight", "must be a positive number (1: the variational "
                  "bound; more: sparser)", spec.kl_weight, lines)
        _positive(spec.kl_ramp_epochs, "workflow.kl_ramp_epochs", lines, minimum=0)
        _positive(spec.finetune_epochs, "workflow.finetune_epochs", lines, minimum=0)
        if not 0 <= spec.distill < 1:
            _fail("workflow.distill", "must be a fraction in [0, 1) (the dense model's share "
                  "of the targets; 0: the labels alone)", spec.distill, lines)
        for key in ("temperature", "finetune_temperature"):
            value = getattr(spec, key)
            if value is not None and not value >= 1:
                _fail(f"workflow.{key}", "must be a number >= 1 (1: the teacher's "
                      "probabilities as they are)", value, lines)
        _choice(spec.teacher, TEACHERS, "workflow.teacher", lines)
        if spec.finetune_teacher is not None:
            _choice(spec.finetune_teacher, TEACHERS, "workflow.finetune_teacher", lines)
        for key in ("temperature", "teacher", "finetune_teacher", "finetune_temperature"):
            if not spec.distill and getattr(spec, key) != getattr(default, key):
                _fail(f"workflow.{key}", "is used only with workflow.distill above 0",
                      getattr(spec, key), lines)
        if self.checkpoint_steps is not None:
            _fail("checkpoint_steps", "is not used by workflow.name: variational (it "
                  "checkpoints at every epoch end)", self.checkpoint_steps, lines)
        for key in ("teacher", "finetune_teacher"):
            if getattr(spec, key) == "control" and not self.baseline.trained_as_long:
                _fail(f"workflow.{key}", "'control' distils the dense control, which only "
                      "baseline.trained_as_long: true trains", "control", lines)

    def _check_data(self, lines):
        from kprune.experiments.sources import NAMED_SOURCES, check_scale

        spec = self.data
        if spec.source not in NAMED_SOURCES and not self.resolve(spec.source).exists():
            _fail("data.source", f"is neither one of {list(NAMED_SOURCES)} nor an existing "
                  ".npz file or folder (IDX files, or images in class subfolders)",
                  spec.source, lines)
        try:
            check_scale(spec.scale)
        except ValueError:
            _fail("data.scale", "must be 'auto', a positive number (e.g. 255) or null",
                  spec.scale, lines)
        size = spec.image_size
        if size is not None and not (
                isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                        for d in size)):
            _fail("data.image_size", "must be [height, width] in pixels, or null", size, lines)
        if not 0 < spec.test_split < 1:
            _fail("data.test_split", "must be a fraction in (0, 1)", spec.test_split, lines)

    def _check_structural(self, lines):
        from kprune.structural.blocks import CRITERIA as BLOCK_CRITERIA
        from kprune.structural.blocks import UNITS as BLOCK_UNITS
        from kprune.structural.correct import CORRECTIONS
        from kprune.structural.importance import CRITERIA

        spec, default = self.structural, Structural()
        if not spec.active:
            for key in ("block_criterion", "block_unit", "correction", "calibration"):
                if getattr(spec, key) != getattr(default, key):
                    _fail(f"structural.{key}", "is used only with a structural step "
                          "(structural.fraction, heads, neurons or blocks)", getattr(spec, key),
                          lines)
            return
        for key, what in (("fraction", "the channels and heads"), ("heads", "the attention "
                          "heads"), ("neurons", "the channels other than heads (feed-forward "
                          "neurons)"), ("blocks", "the droppable residual blocks (or transformer "
                          "blocks, with block_unit: transformer)")):
            value = getattr(spec, key)
            if value is not None and not 0 < value < 1:
                _fail(f"structural.{key}", f"must be a fraction in (0, 1) of {what} to "
                      "remove, or null", value, lines)
        if spec.fraction is not None and (spec.heads, spec.neurons) != (None, None):
            key = "heads" if spec.heads is not None else "neurons"
            _fail(f"structural.{key}", "cannot be given with structural.fraction (one budget "
                  "for channels and heads alike): give fraction, or heads and neurons",
                  getattr(spec, key), lines)
        _choice(spec.criterion, CRITERIA, "structural.criterion", lines)
        _choice(spec.block_criterion, BLOCK_CRITERIA, "structural.block_criterion", lines)
        _choice(spec.block_unit, BLOCK_UNITS, "structural.block_unit", lines)
        if spec.correction is not None:
            _choice(spec.correction, CORRECTIONS, "structural.correction", lines)
        _positive(spec.calibration, "structural.calibration", lines)
        only = {"block_criterion": spec.blocks is not None,
                "block_unit": spec.blocks is not None,
                "correction": spec.prune_fraction() is not None,
                "calibration": spec.needs_calibration()}
        for key, used in only.items():
            if not used and getattr(spec, key) != getattr(default, key):
                why = {"block_criterion": "structural.blocks", "block_unit": "structural.blocks",
                       "correction": "structural.fraction, heads or neurons",
                       "calibration": "criterion taylor or fisher, a correction, or blocks "
                                      "ranked by influence"}[key]
                _fail(f"structural.{key}", f"is used only with {why}", getattr(spec, key),
                      lines)
        _choice(spec.scope, ("global", "layer"), "structural.scope", lines)
        if spec.cost is not None:
            _choice(spec.cost, ("macs", "params"), "structural.cost", lines)
        if spec.round_to is not None:
            _positive(spec.round_to, "structural.round_to", lines)
        _choice(spec.when, ("before", "after"), "structural.when", lines)
        _positive(spec.fine_tune_epochs, "structural.fine_tune_epochs", lines, minimum=0)
        if spec.when == "after" and spec.fine_tune_epochs < 1:
            _fail("structural.fine_tune_epochs", "must be at least 1 with when: after (the "
                  "plan is applied again inside that fine-tune)", spec.fine_tune_epochs, lines)
        if self.workflow.name == "rewind" and spec.when == "before":
            _fail("workflow.name", "cannot be 'rewind' with a structural step before it: "
                  "the initial weights it rewinds to have the shapes of the model before "
                  "channels were removed (use structural.when: after)", self.workflow.name,
                  lines)

    def import_modules(self, lines=None):
        """Import the ``imports`` modules (the recipe's folder first on the path); a name
        that is not a module name, or a module that fails to import, is a RecipeError."""
        import importlib
        import sys

        lines = lines or {}
        for name in self.imports:
            if not isinstance(name, str) or not all(
                    part.isidentifier() for part in name.split(".")):
                _fail("imports", "must be a list of Python module names (e.g. "
                      "my_package.layers)", list(self.imports), lines)
        folder = str(Path(self.base_dir).resolve())
        for name in self.imports:
            sys.path.insert(0, folder)
            try:
                importlib.import_module(name)
            except Exception as err:  # ImportError, or anything the module's code raises
                raise RecipeError(
                    f"Key `imports`{_at('imports', lines)}: cannot import module {name!r} "
                    f"({type(err).__name__}: {' '.join(str(err).split())}). Received: "
                    f"imports={list(self.imports)!r}") from None
            finally:
                sys.path.remove(folder)

    def data_source(self):
        """The data source as :func:`kprune.sources.load_data` takes it (paths resolved)."""
        from kprune.experiments.sources import NAMED_SOURCES

        source = self.data.source
        return source if source in NAMED_SOURCES else str(self.resolve(source))

    def _check_validation(self, lines):
        value = self.validation
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail("validation", "must be a fraction in (0, 1) or a positive integer count",
                  value, lines)
        if isinstance(value, float) and not 0 < value < 1:
            _fail("validation", "must be a fraction in (0, 1) when it is a float (or a "
                  "positive integer count)", value, lines)
        if isinstance(value, int) and value < 1:
            _fail("validation", "must be a positive integer count (or a fraction in (0, 1))",
                  value, lines)
        train = self.subset.train
        if isinstance(value, int) and train is not None and value >= train:
            _fail("validation", f"must be below subset.train ({train}): the rest of the "
                  "training images are the training split", value, lines)

    def resolve(self, path):
        """A path from the recipe, relative to the recipe file's folder."""
        path = Path(path).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path

    def pruning_plan(self):
        """The recipe's :class:`~kprune.PruningPlan`."""
        from kprune.core.plan import PruningPlan

        if self.plan == "default":
            return PruningPlan.default()
        if isinstance(self.plan, str):
            return PruningPlan.load(self.resolve(self.plan))
        if isinstance(self.plan, dict):
            return PruningPlan.from_dict(self.plan)
        raise TypeError(
            "must be 'default', a plan file path or a mapping with 'rules'. "
            f"Received: plan={self.plan!r}"
        )

    def to_dict(self):
        data = asdict(self)
        data.pop("base_dir")
        data["export"]["variants"] = list(self.export.variants)
        if self.imports:
            data["imports"] = list(self.imports)
        else:  # left out: the recipe copies of runs from before the key stay the same
            del data["imports"]
        data["structural"]["exclude"] = list(self.structural.exclude)
        return data

    def to_yaml(self):
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)


_NESTED = {"data": DataSpec, "subset": Subset, "structural": Structural, "baseline": Training, "workflow": Workflow, "export": Export,
           "distribute": Distribute}


def _build(cls, data, prefix, lines, skip=()):
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(
            f"`{where}`{_at(prefix.rstrip('.'), lines)} must be a mapping of keys to values. "
            f"Received: {data!r}"
        )
    known = [f.name for f in fields(cls) if f.name not in skip]
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(
                f"Unknown key `{prefix}{key}`{_at(prefix + str(key), lines)}.{hint} "
                f"Known keys in `{where}`: {known}"
            )
    values = {}
    for f in fields(cls):
        if f.name in skip or f.name not in data:
            if f.name not in skip and f.default is f.default_factory is MISSING:
                raise RecipeError(f"Missing key `{prefix}{f.name}` in `{where}`.")
            continue
        key = prefix + f.name
        value = data[f.name]
        if f.name in _NESTED and cls is Recipe:
            value = _build(_NESTED[f.name], value or {}, key + ".", lines)
        else:
            value = _typed(value, f.type, key, lines)
        values[f.name] = value
    return cls(**values)


def _typed(value, annotation, key, lines):
    text = str(annotation)
    optional = "None" in text
    if value is None and optional:
        return None
    if annotation is object:
        return value
    if annotation is tuple or text.startswith("tuple"):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            _fail(key, "must be a list", value, lines)
        return tuple(value)
    for kind in (bool, int, float, str):
        if kind.__name__ in text:
            break
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(key, f"must be {'an' if kind is int else 'a'} {kind.__name__}"
              f"{' or null' if optional else ''}", value, lines)
    return value


def _positive(value, key, lines, *, minimum=1):
    if value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        _fail(key, f"must be {kind}", value, lines)


def _choice(value, choices, key, lines):
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail(key, f"must be one of {list(choices)}{hint}", value, lines)


def _fail(key, problem, value, lines):
    raise RecipeError(f"Key `{key}`{_at(key, lines)} {problem}. Received: {key}={value!r}")


def _at(key, lines):
    line = lines.get(key)
    if isinstance(line, str):  # given on the command line, e.g. "--data"
        return f" ({line})"
    return "" if line is None else f" (line {line})"


def _override(data, lines, key, value, option):
    """``data`` with the dotted ``key`` set to ``value``; its line becomes ``option``."""
    if not isinstance(data, dict):
        return data, lines
    if key == "imports":  # `--import` adds to the recipe's list (left as it is if no list)
        given = data.get("imports")
        if given is not None and not isinstance(given, list):
            return data, lines
        at = option if given is None else f"line {lines.get('imports')} and {option}"
        return {**data, "imports": [*(given or []), *value]}, {**lines, "imports": at}
    head, _, rest = key.partition(".")
    if rest:
        inner = data.get(head)
        inner = {"source": inner} if isinstance(inner, str) else dict(inner or {})
        inner[rest] = value
        value = inner
    return {**data, head: value}, {**lines, key: option}


def _key_lines(node, prefix=""):
    """Map dotted key paths of a YAML mapping to their 1-based line numbers."""
    import yaml

    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    return lines
