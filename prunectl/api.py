"""The operations the CLI offers, as plain functions: prune, verify, export, info, load."""
from __future__ import annotations

import copy
import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .bundle import check_output_path, staged_directory
from .bundle_files import add_onnx, sealed, versions, write_bundle
from .checkpoint import Loaded, file_sha256, load_checkpoint
from .factories import build as build_model
from .choose import from_prune_options
from .errors import SpecError, VerificationError
from .export.onnx import DEFAULT_OPSET, ONNX_ATOL, check_onnx
from .manifest import Manifest, load_bundle, check_files, write_manifest
from .masking import soft_prune
from .plan import compose, kept_by_layer, make_plan
from .rebuild import make_recipe, rebuild_mismatch
from .entry import entry, submodule
from .layers import kind_of
from .latency import compare_latency
from .resources import check_input, default_limit, guard_prune
from .report import build_report, count_macs, count_params, layer_widths, size_bytes
from .spec import InputSpec, ModelRef, Spec, read_spec, write_spec
from .surgery import hard_prune
from .tracing import TraceResult, default_input_dtype, default_input_shape, trace_model
from .verify import TOLERANCE, make_inputs, run, soft_vs_hard

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PruneOptions:
    """Everything ``prune`` needs besides the checkpoint; ``None`` means "from the spec"."""

    spec: str | Path | None = None
    model: str | None = None
    criterion: str | None = None
    rate: float | None = None
    round_to: int | None = None
    min_channels: int | None = None
    group_reduce: str | None = None
    # choosing what to cut (choose.py, targets.py, unstructured.py); data for data-driven criteria
    data: str | Path | None = None  # .pt/.npz tensor file or a task plugin name
    global_ranking: bool = False
    exclude: tuple[str, ...] = ()
    target_macs: float | None = None
    target_params: float | None = None
    steps: int = 1
    schedule: str = "linear"
    mode: str = "structured"
    input_shape: tuple[int, ...] | None = None
    output: str | Path | None = None
    onnx: bool = False
    opset: int = DEFAULT_OPSET
    seed: int = 0
    trust_pickle: bool = False
    skip_unsupported: bool = False  # traced spec: leave channels behind ops prunectl cannot cut unpruned
    max_memory: int | str | None = None  # bytes or "4G"; None: 80% of the memory available (resources.py)
    # time original vs pruned (torch eager and ONNX Runtime) into report.json; timings vary, so
    # the bundle is then no longer byte-identical across runs
    latency: bool = False
    latency_threads: int = 1
    module: str | None = None  # trace and verify this submodule (spec "module"), e.g. a detector's backbone


@dataclass
class PruneResult:
    model: nn.Module  # the pruned model, as prunectl.load(output) rebuilds it
    manifest: Manifest
    report: dict[str, Any]
    output: Path | None
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self, progress: Progress | None):
        self.progress, self.timings, self.stage, self.start = progress, {}, None, time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        if self.stage:
            self.timings[self.stage] = round(now - self.start, 4)
        self.stage, self.start = stage, now
        if self.progress:
            self.progress(stage)

    def done(self) -> dict[str, float]:
        self("")
        return self.timings


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, then as it was.

    A full collection walks every object the process holds (~340k once torch and torchvision
    are imported) and costs 0.13-0.2 s, 10-15% of pruning resnet50; allocating the trace's
    graph triggers one per run. What a run frees is freed by reference counting when it is
    dropped; the few cycles it leaves (torch.fx graphs) go at the first collection after it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def prune(checkpoint: str | Path, options: PruneOptions = PruneOptions(), progress: Progress | None = None) -> PruneResult:
    """Prune ``checkpoint`` per its spec; verify soft == hard; write a bundle if ``options.output``."""
    with _collector_paused():
        return _prune(checkpoint, options, progress)


def _prune(checkpoint: str | Path, options: PruneOptions, progress: Progress | None) -> PruneResult:
    clock = _Clock(progress)
    clock("load")
    if options.output is not None:
        check_output_path(Path(options.output))
    spec = _spec_with_options(options)
    loaded = load_checkpoint(checkpoint, _model_ref(spec, options), options.trust_pickle)
    model = loaded.model.eval()
    input_spec = _input_spec(spec, options, loaded)
    module = options.module or spec.module
    target = model if module is None else submodule(model, module, "--module" if options.module else spec.source)
    _check_module_options(module, options)
    guard_prune(target, loaded.model_ref if module is None else None, input_spec.shape, input_spec.dtype,
                options.max_memory)
    traced = None
    if options.spec is None:  # no spec given: derive it by tracing the loaded model (or its submodule)
        traced = trace_model(target, input_spec.shape, dtype=input_spec.dtype, model_ref=loaded.model_ref,
                             skip_unsupported=options.skip_unsupported).under(module)
        spec = _apply_options(traced.spec, options)
    spec = replace(spec, module=module)
    tolerance = TOLERANCE.get(input_spec.dtype, TOLERANCE["float32"])
    inputs = make_inputs(input_spec, options.seed)
    if traced is None:  # a traced model has just run on this input shape (walk_graph); a given spec's may not
        try:
            run(entry(model, module), inputs[0], "original model")
        except Exception as exc:
            raise SpecError(f"the model does not run on input {list(input_spec.shape)} ({exc}); "
                            "set input.shape in the spec or --input-shape") from None

    clock("score")
    criterion, select_options, choice = from_prune_options(spec, model, options, inputs[0])
    groups, kept = choice.groups, choice.kept
    plan = make_plan(groups, kept)

    clock("prune")
    original = copy.deepcopy(model) if options.latency else None  # timed against the pruned model later
    # the hard model shares the tensors of every layer the plan leaves alone with the original,
    # which is then masked in place: masking writes only to the layers the plan cuts, and the
    # original is not needed again (choice.model: the masked copy in unstructured mode)
    hard, _ = hard_prune(choice.model, plan, share_unchanged=True)
    soft = soft_prune(choice.model, plan, in_place=True)

    clock("verify")
    # the rebuilt model takes the hard model's tensors: nothing but the error path below reads it
    recipe = make_recipe(spec, loaded.model_ref, hard, copy_weights=False)
    args, resize, rebuilt = recipe.args, recipe.resize, recipe.model
    try:  # the model exactly as prunectl.load rebuilds it must compute what the masked original does
        comparison = soft_vs_hard(entry(soft, module), entry(rebuilt, module), inputs, tolerance, plan,
                                  list(spec.layer_names))
    except VerificationError:
        mismatch = rebuild_mismatch(recipe, loaded.model_ref.factory, hard, inputs[0], tolerance, module)
        if mismatch is not None:  # the masking and the surgery agree; the rebuild recipe is wrong
            raise mismatch from None
        raise
    del hard

    clock("report")
    report = build_report(soft, rebuilt, inputs[0], list(spec.layer_names), groups, kept,
                          macs=(comparison.soft_macs, comparison.hard_macs))
    report.update(choice.report)
    if traced is not None:
        report["traced"] = {"pinned": traced.pinned, "tracer": traced.tracer}
    if module is not None:
        report["module"] = module  # MACs are the submodule's, on its input
    if options.latency:
        clock("latency")
        report["latency"] = compare_latency(original, rebuilt, inputs[0], threads=options.latency_threads)
    kept_indices = kept_by_layer(plan)
    if loaded.manifest is not None:  # iterative pruning: indices in the very first numbering
        kept_indices = compose(loaded.manifest.kept, kept_indices)
    manifest = Manifest(
        rebuild={"factory": loaded.model_ref.factory, "args": args}, resize=resize, kept=kept_indices,
        input=input_spec.to_json(), files={}, versions=versions(),
        extra={**({"module": module} if module is not None else {}),
               "criterion": criterion.name, "rate": select_options.rate, "round_to": select_options.round_to,
               "min_channels": select_options.min_channels, "group_reduce": select_options.group_reduce,
               **choice.report,
               "verify": {"soft_vs_hard_max_abs": comparison.max_abs, "reference_max_abs": comparison.max_ref,
                          "tolerance": tolerance, "inputs": len(inputs), "seed": options.seed},
               "source": {"path": Path(checkpoint).name, "sha256": loaded.sha256},
               **({"spec_sha256": file_sha256(options.spec)} if options.spec else {})})
    output = None
    if options.output is not None:
        clock("export")
        manifest = write_bundle(Path(options.output), rebuilt, manifest, report, inputs,
                                options.opset if options.onnx else None)
        output = Path(options.output)
    return PruneResult(rebuilt, manifest, report, output, clock.done())


def _check_module_options(module: str | None, options: PruneOptions) -> None:
    if module is None:
        return
    if options.target_macs is not None or options.target_params is not None or options.steps != 1:
        raise SpecError("--module: --target-macs/--target-params/--steps measure the whole model on the spec input; "
                        "use --rate with --module")


def _spec_with_options(options: PruneOptions) -> Spec:
    if options.rate is not None and not 0 <= options.rate < 1:
        raise SpecError(f"--rate: expected a number in [0, 1), got {options.rate}")
    for name in ("round_to", "min_channels", "latency_threads"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise SpecError(f"--{name.replace('_', '-')}: expected an integer >= 1, got {value}")
    if options.spec is None:  # traced later, once the model is loaded
        return Spec(layers=(), source="<traced spec>")
    return _apply_options(read_spec(options.spec), options)


def _apply_options(spec: Spec, options: PruneOptions) -> Spec:
    return spec.with_options(criterion=options.criterion, rate=options.rate, round_to=options.round_to,
                             min_channels=options.min_channels, group_reduce=options.group_reduce)


def _model_ref(spec: Spec, options: PruneOptions) -> ModelRef | None:
    if options.model:
        return ModelRef(options.model, dict(spec.model.args) if spec.model else {})
    return spec.model


def _input_spec(spec: Spec, options: PruneOptions, loaded: Loaded) -> InputSpec:
    dtype = spec.input.dtype if spec.input else default_input_dtype(loaded.model)
    if options.input_shape:
        if not all(isinstance(d, int) and 0 < d <= 1 << 20 for d in options.input_shape):
            raise SpecError(f"--input-shape: expected positive integers, got {options.input_shape}")
        return InputSpec(tuple(options.input_shape), dtype)
    if spec.input:
        return spec.input
    if loaded.manifest is not None:
        return InputSpec(tuple(loaded.manifest.input["shape"]), loaded.manifest.input["dtype"])
    if options.spec is None and default_input_shape(loaded.model_ref, loaded.model) is not None:
        return InputSpec(default_input_shape(loaded.model_ref, loaded.model), dtype)
    raise SpecError(f"{spec.source}: input: missing; add \"input\": {{\"shape\": [1, 3, 224, 224]}} or pass --input-shape")


def load(bundle: str | Path) -> nn.Module:
    """Rebuild a bundle's pruned model (checksums verified, weights strict, no pickle)."""
    return load_bundle(bundle)[0]


def verify(bundle: str | Path) -> dict[str, Any]:
    """Re-check a bundle: checksums, strict rebuild, a forward pass, and ONNX vs torch if present."""
    bundle = Path(bundle)
    model, manifest = load_bundle(bundle)
    input_spec = InputSpec(tuple(manifest.input["shape"]), manifest.input["dtype"])
    seed = manifest.extra.get("verify", {}).get("seed", 0)
    check_input(input_spec.shape, input_spec.dtype, default_limit(), f"{bundle / 'manifest.json'}: input.shape")
    inputs = make_inputs(input_spec, seed if isinstance(seed, int) else 0)
    module = manifest.extra.get("module")  # the input is this submodule's (prune --module)
    if module is not None:
        submodule(model, module, str(bundle / "manifest.json"))
    outputs = run(entry(model, module), inputs[0], "bundle model")
    if not all(bool(torch.isfinite(t).all()) for t in outputs if t.is_floating_point()):
        raise VerificationError(f"{bundle}: the rebuilt model produces NaN/inf on its input")
    result: dict[str, Any] = {"bundle": str(bundle), "files": sorted(manifest.files), "checksums": "ok",
                              "rebuild": "ok", "forward": "ok"}
    if "model.onnx" in manifest.files:
        result["onnx_max_abs"] = check_onnx(bundle / "model.onnx", model, inputs, ONNX_ATOL).max_abs
    return result


def export(bundle: str | Path, onnx: bool = True, opset: int = DEFAULT_OPSET) -> Manifest:
    """Add (or redo) ``model.onnx`` in an existing bundle, atomically."""
    bundle = Path(bundle)
    model, manifest = load_bundle(bundle)
    if not onnx:
        return manifest
    input_spec = InputSpec(tuple(manifest.input["shape"]), manifest.input["dtype"])
    check_input(input_spec.shape, input_spec.dtype, default_limit(), f"{bundle / 'manifest.json'}: input.shape")
    inputs = make_inputs(input_spec, manifest.extra.get("verify", {}).get("seed", 0))
    with staged_directory(bundle) as staging:
        for name in manifest.files:
            if name != "model.onnx":
                (staging / name).write_bytes((bundle / name).read_bytes())
        manifest = sealed(staging, manifest, {**manifest.extra, "onnx": add_onnx(staging, model, inputs, opset)})
        check_files(staging, manifest)
        write_manifest(manifest, staging)
    return manifest


def info(path: str | Path, spec: str | Path | None = None, model: str | None = None,
         input_shape: tuple[int, ...] | None = None, trust_pickle: bool = False) -> dict[str, Any]:
    """Per-layer widths, params and MACs of a checkpoint or bundle."""
    parsed = read_spec(spec) if spec else None
    ref = ModelRef(model, dict(parsed.model.args) if parsed and parsed.model else {}) if model else (
        parsed.model if parsed else None)
    loaded = load_checkpoint(path, ref, trust_pickle)
    options = PruneOptions(input_shape=input_shape)
    input_spec = _input_spec(parsed or Spec(layers=(), source=str(spec or path)), options, loaded)
    check_input(input_spec.shape, input_spec.dtype, default_limit())
    x = make_inputs(input_spec, 0, count=1)[0]
    run(loaded.model, x, "model")
    names = list(parsed.layer_names) if parsed else [
        name for name, module in loaded.model.named_modules() if kind_of(module) != "other"]
    widths = layer_widths(loaded.model, names)
    modules = dict(loaded.model.named_modules())
    return {"path": str(path), "factory": loaded.model_ref.factory if loaded.model_ref else None,
            "input": input_spec.to_json(), "params": count_params(loaded.model),
            "macs": count_macs(loaded.model, x), "size_bytes": size_bytes(loaded.model),
            "layers": [{"name": n, "type": type(modules[n]).__name__, "width": w} for n, w in widths.items()]}


def trace_spec(checkpoint: str | Path | None = None, model: str | None = None,
               input_shape: tuple[int, ...] | None = None, skip_unsupported: bool = False,
               trust_pickle: bool = False, module: str | None = None) -> TraceResult:
    """Derive a spec by tracing a checkpoint's model, or a factory's freshly built one
    (``module``: only that submodule, on its own input; the spec records it and keeps full names)."""
    if checkpoint is not None:
        loaded = load_checkpoint(checkpoint, ModelRef(model, {}) if model else None, trust_pickle)
    elif model:
        loaded = Loaded(build_model(model, {}), ModelRef(model, {}), Path(model), "")
    else:
        raise SpecError("nothing to trace: pass a checkpoint, --model FACTORY, or both")
    options = PruneOptions(input_shape=input_shape)
    input_spec = _input_spec(Spec(layers=(), source="--input-shape"), options, loaded)
    target = loaded.model if module is None else submodule(loaded.model, module, "--module")
    return trace_model(target, input_spec.shape, dtype=input_spec.dtype, model_ref=loaded.model_ref,
                       skip_unsupported=skip_unsupported).under(module)


def write_traced_spec(traced: TraceResult, path: str | Path) -> None:
    """Write the traced spec atomically (a temporary file beside it, then rename)."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp")
    try:
        write_spec(traced.spec, staging)
        staging.replace(path)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise SpecError(f"{path}: cannot write the spec ({exc.strerror or exc})") from None


def criteria() -> list[dict[str, Any]]:
    """Installed criteria (built-in and plugins): name, one-line description, needs data, class."""
    from . import registry
    from .criteria.base import Criterion

    rows = []
    for name in registry.available(registry.CRITERIA):
        cls = registry.load(registry.CRITERIA, name)
        if not (isinstance(cls, type) and issubclass(cls, Criterion)):
            raise SpecError(f"criterion {name!r} is registered as {cls!r}, which is not a prunectl Criterion subclass")
        rows.append({"name": name, "description": cls.description, "needs_data": bool(cls.needs_data),
                     "class": f"{cls.__module__}:{cls.__qualname__}"})
    return rows
