"""What a user can ask of ``prune``, ``auto`` and ``finetune``: one dataclass each, every default once.

The command line (``prunectl.cli``) and the library take the same options: the click decorators
read their defaults and choices from here, so a default cannot drift between a command, its help
text and ``prunectl.prune``. ``None`` means "from the spec" for the options a spec may also set
(criterion, rate, round_to, round_mode, min_channels, group_reduce); the spec's own defaults are the
``DEFAULT_*`` values below.

This module imports nothing of prunectl's stages, so any stage may read a default from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError

# the spec's defaults (a spec or an option may override each)
DEFAULT_CRITERION = "l1"
# with calibration data (``--data``) and no criterion asked for: magnitude is not reliably above
# random on real weights, a data-aware criterion is (docs/decisions.md, "The default with data")
DEFAULT_DATA_CRITERION = "activation"
DEFAULT_RATE = 0.5
DEFAULT_ROUND_TO = 1
# which way --round-to aligns a width: up keeps more channels (the achieved rate is at most the
# asked one), down keeps fewer (the NetAdapt tool's resize_alf: 45 with round-to 8 -> 40)
ROUND_MODES = ("up", "down", "nearest")
DEFAULT_ROUND_MODE = "up"
DEFAULT_MIN_CHANNELS = 1
DEFAULT_GROUP_REDUCE = "mean"
GROUP_REDUCTIONS = ("mean", "sum", "max", "union")
SCHEDULES = ("linear", "agp")
MODES = ("structured", "unstructured")
# --dtype: the floating dtype the model is loaded, scored, cut and saved in (models/dtype.py)
DTYPES = ("bfloat16", "float16", "float32")
DEFAULT_OPSET = 17
# --device (models/device.py): where prunectl runs a model; the bundle is always written from CPU tensors
DEFAULT_DEVICE = "cpu"
DEFAULT_SEED = 0
# auto (CAC and NetAdapt; docs/auto.md)
DEFAULT_MAX_DROP = 0.5
DEFAULT_AUTO_EPOCHS = 3
DEFAULT_MAX_STEPS = 1000
DEFAULT_CAC_RATES = (0.2, 0.1, 0.0)
DEFAULT_LOSS_MARGIN = 0.5
# CAC's trust-region knobs (auto_prune's scaling_factor and calc_iter; trust_radius: the initial
# bound on the thresholds' L2 norm, None = CAC's initialize_upper_bound from the model)
DEFAULT_SCALING_FACTOR = 2.0
DEFAULT_CALC_ITER = 8  # validation batches per sensitivity (CAC: 100; docs/auto.md says why 8)
# finetune
DEFAULT_FINETUNE_EPOCHS = 5
# text calibration for language models (loading/text_data.py): windows of 128 tokens, as the
# LLM-Pruner/FLAP/Wanda-sp comparisons use, 128 of them
DEFAULT_CALIB_SEQ_LEN = 128
DEFAULT_CALIB_TOKENS = 16384
# finetune --distill (training/distill.py): AdamW's rate
DEFAULT_DISTILL_LR = 1e-4
# finetune --distill's state every K steps (training/distill_state.py): a SmolLM2-135M step took ~18 s
# on 2 CPU cores, so a kill loses at most ~3 minutes, and the state of its 20 %-pruned 108M params
# (weights + AdamW's two moments, 1.2 GB) took 3.7-6.0 s to write and fsync: 2-4 % of 10 steps
DEFAULT_DISTILL_CHECKPOINT_EVERY = 10
# perplexity (measure/perplexity.py): non-overlapping windows of 256 tokens
DEFAULT_EVAL_SEQ_LEN = 256



def default_criterion(with_data: bool) -> str:
    """The criterion a run uses when neither the option nor the spec names one."""
    return DEFAULT_DATA_CRITERION if with_data else DEFAULT_CRITERION


# AutoOptions fields that are numbers however they are given (AutoOptions.__post_init__)
_AUTO_FLOATS = ("max_drop", "target_macs", "target_params", "budget_minutes", "loss_margin", "step_fraction",
                "trust_radius", "scaling_factor", "lr")
_SPEC_KEYS = ("criterion", "rate", "round_to", "round_mode", "min_channels", "group_reduce")


def spec_overrides(options: Any) -> dict[str, Any]:
    """The options that override the spec's own values (``None``: not given)."""
    return {key: getattr(options, key) for key in _SPEC_KEYS if getattr(options, key, None) is not None}


def _check_round_mode(options: Any) -> None:
    if options.round_mode is not None and options.round_mode not in ROUND_MODES:
        raise SpecError(f"--round-mode: expected one of {', '.join(ROUND_MODES)}, got {options.round_mode!r}")


def _check_positive(options: Any, *names: str) -> None:
    for name in names:
        value = getattr(options, name)
        if value is not None and value < 1:
            raise SpecError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")


def _device_text(options: Any) -> None:
    """``device=torch.device("cuda", 1)`` is kept as its text, ``"cuda:1"`` (models/device.py parses it)."""
    if options.device is None:
        object.__setattr__(options, "device", DEFAULT_DEVICE)
    elif not isinstance(options.device, str) and type(options.device).__name__ == "device":
        object.__setattr__(options, "device", str(options.device))


@dataclass(frozen=True)
class PruneOptions:
    """Everything ``prune`` needs besides the checkpoint; ``None`` means "from the spec"."""

    spec: str | Path | None = None
    model: str | None = None
    criterion: str | None = None
    rate: float | None = None
    round_to: int | None = None
    round_mode: str | None = None  # up, down or nearest (ROUND_MODES)
    min_channels: int | None = None
    group_reduce: str | None = None
    # choosing what to cut (prunectl.selection); data for data-driven criteria
    data: str | Path | None = None  # .pt/.npz tensor file, a .txt file (language models) or a task plugin name
    tokenizer: Any = None  # text data: tokenizer.json, folder or tokenizer object (default: the checkpoint's own)
    calib_seq_len: int = DEFAULT_CALIB_SEQ_LEN
    calib_tokens: int = DEFAULT_CALIB_TOKENS
    eval_data: str | Path | None = None  # a .txt file: perplexity before and after, into report.json
    global_ranking: bool = False
    exclude: tuple[str, ...] = ()
    only: tuple[str, ...] = ()  # layer globs: cut only the groups holding a matching layer (--only)
    target_macs: float | None = None
    target_params: float | None = None
    steps: int = 1
    schedule: str = "linear"
    mode: str = "structured"
    # unstructured mode: the layers' biases are pruned too (torch.nn.utils.prune's name="bias")
    prune_bias: bool = False
    input_shape: tuple[int, ...] | None = None
    output: str | Path | None = None
    onnx: bool = False
    opset: int = DEFAULT_OPSET
    seed: int = DEFAULT_SEED
    trust_pickle: bool = False
    skip_unsupported: bool = False  # traced spec: leave channels behind ops prunectl cannot cut unpruned
    max_memory: int | str | None = None  # bytes or "4G"; None: 80% of the memory available (load/memory.py)
    # time original vs pruned (torch eager and ONNX Runtime) into report.json; timings vary, so
    # the bundle is then no longer byte-identical across runs
    latency: bool = False
    latency_threads: int = 1
    module: str | None = None  # trace and verify this submodule (spec "module"), e.g. a detector's backbone
    # a rate per structure of a transformer (selection/structures.py); None: --rate
    rate_heads: float | None = None
    rate_mlp: float | None = None
    rate_hidden: float | None = None
    # depth: remove this many decoder layers (least block influence) before the width cut (cut/depth.py)
    drop_layers: int | None = None
    # load, score, cut and save the weights in this dtype (DTYPES); None: as the checkpoint builds
    dtype: str | None = None
    # where data-driven scoring and the proof run (models/device.py): cpu, cuda, cuda:N, mps
    device: str = DEFAULT_DEVICE

    def __post_init__(self) -> None:
        _device_text(self)

    def structure_rates(self) -> tuple[tuple[str, float], ...]:
        """``(structure, rate)`` for every --rate-STRUCTURE given."""
        return tuple((structure, getattr(self, f"rate_{structure}")) for structure in ("heads", "mlp", "hidden")
                     if getattr(self, f"rate_{structure}") is not None)

    def check(self) -> None:
        """The options' own constraints (what needs the model or spec is checked where it is read)."""
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, (int, float))):
            raise SpecError(f"--rate: expected a number, got {type(self.rate).__name__} {self.rate!r}")
        if isinstance(self.rate, int) and not isinstance(self.rate, bool) and self.mode == "unstructured":
            if self.rate < 0:  # a count of weights, as torch.nn.utils.prune takes an int amount
                raise SpecError(f"--rate: a count of weights must be >= 0, got {self.rate}")
        elif self.rate is not None and not 0 <= self.rate < 1:
            raise SpecError(f"--rate: expected a number in [0, 1) (an int count of weights with --mode "
                            f"unstructured), got {self.rate}")
        _check_positive(self, "round_to", "min_channels", "latency_threads", "drop_layers")
        for structure in ("heads", "mlp", "hidden"):
            value = getattr(self, f"rate_{structure}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < 1):
                raise SpecError(f"--rate-{structure}: expected a number in [0, 1), got {value!r}")
        _check_round_mode(self)
        if self.dtype is not None and self.dtype not in DTYPES:
            raise SpecError(f"--dtype: expected one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.mode not in MODES:
            raise SpecError(f"--mode: expected structured or unstructured, got {self.mode!r}")
        if self.prune_bias and self.mode != "unstructured":
            raise SpecError("--prune-bias: biases are pruned entry by entry, with --mode unstructured only")
        if self.module is not None and (self.target_macs is not None or self.target_params is not None
                                        or self.steps != 1):
            raise SpecError("--module: --target-macs/--target-params/--steps measure the whole model on the spec "
                            "input; use --rate with --module")


@dataclass(frozen=True)
class AutoOptions:
    """``prunectl auto``: CAC's accuracy-controlled search, or NetAdapt toward a target (docs/auto.md)."""

    task: str | None = None  # a registered task plugin; None only in-process (prunectl.auto's callables)
    spec: str | Path | None = None
    model: str | None = None
    max_drop: float = DEFAULT_MAX_DROP  # accuracy points (the task metric's unit) below the original
    target_macs: float | None = None  # fraction of the original kept: NetAdapt mode
    target_params: float | None = None
    criterion: str | None = None
    epochs: int = DEFAULT_AUTO_EPOCHS  # retraining (CAC) / short fine-tune (NetAdapt) epochs per step
    final_epochs: int = 0  # a long fine-tune at the end (its last epoch is kept)
    early_stop: bool = True  # CAC: retraining stops once back within max_drop; False: all epochs, best kept
    budget_minutes: float | None = None
    max_steps: int = DEFAULT_MAX_STEPS  # CAC's max_search_times
    rates: tuple[float, ...] = DEFAULT_CAC_RATES
    loss_margin: float = DEFAULT_LOSS_MARGIN
    trust_radius: float | None = None  # CAC: initial bound on the thresholds' norm; None: from the model
    scaling_factor: float = DEFAULT_SCALING_FACTOR  # CAC: the bound grows x max(this, ...), shrinks x min(1/this, ...)
    calc_iter: int = DEFAULT_CALC_ITER  # CAC: validation batches each sensitivity is averaged over
    lr: float | None = None  # fine-tuning learning rate; None: the task optimizer's, else SGD's 0.01
    step_fraction: float | None = None  # NetAdapt: resource saved per iteration, of the original
    round_to: int | None = None
    round_mode: str | None = None  # up, down or nearest (ROUND_MODES)
    min_channels: int | None = None
    group_reduce: str | None = None
    exclude: tuple[str, ...] = ()  # layer globs never cut (prune's --exclude)
    output: str | Path | None = None
    onnx: bool = False
    resume: bool = False
    seed: int = DEFAULT_SEED
    micro_batches: int | None = None  # default: the number of processes
    threads: int | None = 1  # one thread: bit-identical results, resumable byte for byte
    device: str = DEFAULT_DEVICE  # where scoring, fine-tuning, the metric and the proof run (models/device.py)

    def __post_init__(self) -> None:
        _device_text(self)
        # the library's max_drop=1 is the command line's --max-drop 1 (a float): same report bytes
        for name in _AUTO_FLOATS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"--{name.replace('_', '-')}: expected a number, got {type(value).__name__} {value!r}")
            object.__setattr__(self, name, float(value))

    def check(self) -> None:
        if self.target_macs is not None and self.target_params is not None:
            raise SpecError("give one of --target-macs and --target-params, not both")
        for name in ("target_macs", "target_params"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise SpecError(f"--{name.replace('_', '-')}: expected a fraction kept in (0, 1], got {value}")
        if self.max_drop < 0:
            raise SpecError(f"--max-drop: expected a number >= 0, got {self.max_drop}")
        if self.epochs < 0 or self.final_epochs < 0 or self.max_steps < 0:
            raise SpecError("--epochs, --final-epochs and --max-steps must be >= 0")
        if not self.rates or any(not 0 <= r < 1 for r in self.rates):
            raise SpecError(f"--rates: expected numbers in [0, 1), got {list(self.rates)}")
        _check_positive(self, "round_to", "min_channels", "calc_iter")
        _check_round_mode(self)
        if self.scaling_factor <= 1:
            raise SpecError(f"--scaling-factor: expected a number > 1 (the bound grows by it and shrinks by its "
                            f"inverse), got {self.scaling_factor}")
        for name in ("trust_radius", "lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise SpecError(f"--{name.replace('_', '-')}: expected a number > 0, got {value}")
