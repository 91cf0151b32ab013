"""The operations the CLI offers, as plain functions: prune, verify, export, info, load.

``prune`` is the pipeline of docs/architecture.md: load -> trace (when no spec is given) ->
couple -> score and select -> cut (soft and hard) -> verify -> write the bundle. Each stage is
a function of its own package; this module only passes plain data from one to the next.
"""
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

from .bundle.manifest_builder import build_manifest
from .bundle.report import build_report
from .bundle.staging import check_output_path, staged_directory
from .bundle.writer import add_onnx, sealed, write_bundle
from .criteria.base import Criterion, get_criterion
from .criteria.base import installed_criteria as criteria
from .cut.depth import drop_layers
from .cut.hard import hard_prune
from .cut.plan import kept_by_layer, make_plan
from .cut.soft import soft_prune
from .errors import SpecError, VerificationError
from .formats.manifest import MANIFEST_NAME, Manifest, write_manifest
from .formats.spec import ModelRef, Spec
from .in_process import Given, Plan, resolve, soft
from .layers.kinds import kind_of
from .loading.bundle import check_files, load_bundle
from .loading.checkpoint import Loaded, companions_of, load_checkpoint
from .loading.data import CalibrationData, data_inputs
from .loading.in_memory import input_spec_of
from .loading.memory import check_input, default_limit, guard_prune
from .loading.request import requested_input, requested_model, requested_spec
from .loading.text_data import is_text, load_calibration
from .loading.tokenizer import find_tokenizer
from .measure.language_model import language_model_sizes
from .measure.latency import compare_latency
from .measure.perplexity import before_and_after, eval_tokens, evaluate_perplexity
from .measure.perplexity import evaluate_checkpoint as evaluate
from .measure.size import count_macs, count_params, layer_widths, size_bytes
from .models.device import device_name, is_cpu, resolve_device
from .models.dtype import DEFAULT_WEIGHT_DTYPE, weights_dtype
from .models.forward import run
from .models.inputs import lighter_inputs, make_inputs, torch_dtype
from .models.submodule import entry, submodule
from .options import (
    DEFAULT_OPSET,
    DEFAULT_ROUND_MODE,
    PruneOptions,
    default_criterion,
    spec_overrides,
)
from .selection.bias_compensation import compensate_biases
from .selection.budget import Target
from .selection.choice import Choice
from .selection.depth import choose_drop
from .selection.per_layer import SelectOptions
from .selection.strategy import ChooseOptions, choose
from .selection.unstructured import EXACT_CRITERIA, choose_unstructured
from .tracing import trace_model
from .tracing.from_checkpoint import trace_spec, write_traced_spec
from .verification.depth import prove_drop
from .verification.onnx_check import check_onnx
from .verification.recipe import make_recipe, rebuild_mismatch
from .verification.soft_vs_hard import soft_vs_hard

Progress = Callable[[str], None]

__all__ = ["PruneOptions", "PruneResult", "prune", "soft", "load", "verify", "export", "info", "evaluate",
           "trace_spec", "write_traced_spec", "criteria"]


@dataclass
class PruneResult:
    model: nn.Module  # the pruned model, as prunectl.load(output) rebuilds it
    manifest: Manifest
    report: dict[str, Any]
    output: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    plan: Plan = field(default_factory=dict, repr=False)  # what was cut: prunectl.soft(model, plan)
    inputs: list[torch.Tensor] = field(default_factory=list, repr=False)  # the seeded check inputs
    companions: Path | None = field(default=None, repr=False)  # tokenizer files for hf/ (bundle/hf_folder.py)

    def save(self, directory: str | Path, onnx: bool = False, opset: int = DEFAULT_OPSET) -> Path:
        """Write the bundle ``prunectl prune -o`` writes (atomically; ``onnx``: with model.onnx)."""
        directory = Path(directory)
        self.manifest = write_bundle(directory, self.model, self.manifest, self.report, self.inputs,
                                     opset if onnx else None, hf_companions=self.companions)
        self.output = directory
        return directory


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


def prune(checkpoint: str | Path | nn.Module, options: PruneOptions | None = None, progress: Progress | None = None,
          *, example_inputs: Any = None, loss: Callable | None = None, factory_args: dict[str, Any] | None = None,
          **overrides: Any) -> PruneResult:
    """Prune a checkpoint file, a bundle or an in-memory ``nn.Module``; verify soft == hard; write a
    bundle if ``output`` is set (or later with ``result.save(dir)``).

    ``overrides``: any PruneOptions field as a keyword (``rate=0.3, output="out"``); ``criterion``
    may be a ``Criterion`` instance and ``data`` a DataLoader or any iterable of batches (``loss``:
    their loss, default by the targets' dtype). ``example_inputs``: the model's input (its shape
    and dtype are traced and checked on). ``factory_args``: the constructor arguments that rebuild
    an in-memory model (``prunectl.load``); the factory is its class, or ``model="pkg:make"``."""
    checkpoint, options, given = resolve(checkpoint, options, overrides, example_inputs=example_inputs, loss=loss,
                                         factory_args=factory_args)
    with _collector_paused():
        return _prune(checkpoint, options, progress, given)


def _prune(checkpoint: str | Path | None, options: PruneOptions, progress: Progress | None,
           given: Given) -> PruneResult:
    clock = _Clock(progress)
    clock("load")
    if options.output is not None:
        check_output_path(Path(options.output))
    options.check(data_given=given.data is not None)
    device = resolve_device(options.device)  # a device that is not here: exit 3 before anything is read
    spec = requested_spec(options.spec, options)
    if given.loaded and options.dtype is not None:
        raise SpecError("--dtype: a model passed in memory is used as it is; cast it yourself "
                        "(model.to(torch.bfloat16)) or pass a checkpoint file")
    with weights_dtype(options.dtype):  # built in that dtype: the weights are cast as they are loaded
        loaded = (given.loaded_with(spec.model) if given.loaded else
                  load_checkpoint(checkpoint, requested_model(spec, options.model), options.trust_pickle))
    model = loaded.model.eval()
    input_spec = (input_spec_of(given.example) if given.example is not None and options.input_shape is None else
                  requested_input(spec, options.input_shape, loaded, spec_given=options.spec is not None))
    if options.dtype is not None and torch_dtype(input_spec.dtype).is_floating_point:
        input_spec = replace(input_spec, dtype=options.dtype)  # a float input in the weights' dtype
    module = options.module or spec.module
    target = model if module is None else submodule(model, module, "--module" if options.module else spec.source)
    guard_prune(target, loaded.model_ref if module is None else None, input_spec.shape, input_spec.dtype,
                options.max_memory)
    tokenizer = find_tokenizer(options.tokenizer, checkpoint) if _needs_tokenizer(options) else None
    data = given.data or (load_calibration(options.data, model, tokenizer, options.calib_seq_len,
                                           options.calib_tokens, options.seed) if options.data is not None else None)
    eval_ids = None if options.eval_data is None else eval_tokens(Path(options.eval_data), tokenizer, model)
    before = None if eval_ids is None else evaluate_perplexity(model, eval_ids, source=str(options.eval_data),
                                                               device=device)
    depth = None
    if options.drop_layers is not None:  # whole layers first: the width cut then runs on the smaller model
        loaded, depth = _drop_layers(loaded, options, module, input_spec, data)
        model = target = loaded.model.eval()
    traced = None
    if options.spec is None:  # no spec given: derive it by tracing the loaded model (or its submodule)
        traced = trace_model(target, input_spec.shape, dtype=input_spec.dtype, model_ref=loaded.model_ref,
                             skip_unsupported=options.skip_unsupported).under(module)
        spec = traced.spec.with_options(**spec_overrides(options))
    spec = replace(spec, module=module)
    inputs = make_inputs(input_spec, options.seed, model=target)
    if traced is None:  # a traced model has just run on this input shape (walk_graph); a given spec's may not
        try:
            run(entry(model, module), inputs[0], "original model")
        except Exception as exc:
            raise SpecError(f"the model does not run on input {list(input_spec.shape)} ({exc}); "
                            "set input.shape in the spec or --input-shape") from None

    clock("score")
    criterion = given.criterion or get_criterion(spec.criterion or default_criterion(data is not None))
    select = SelectOptions.from_spec(spec, criterion)
    choice = _choose(spec, model, criterion, select, options, inputs[0], data, device)
    from_data = data_inputs(data, input_spec)  # the proof also sees the user's own data
    proof = lighter_inputs(entry(model, module), input_spec, options.seed) + from_data
    groups, kept = choice.groups, choice.kept
    plan = make_plan(groups, kept)

    clock("prune")
    original = copy.deepcopy(model) if options.latency else None  # timed against the pruned model later
    compensation = None
    if options.bias_compensation:  # on the original, before masking: soft and hard then share the new biases
        compensation = compensate_biases(choice.model, groups, kept, data, loaded.model_ref, device)
        loaded = replace(loaded, model_ref=compensation.model_ref)  # the rebuild (and hf/) builds the new biases
    # the hard model shares the tensors of every layer the plan leaves alone with the original,
    # which is then masked in place: masking writes only to the layers the plan cuts, and the
    # original is not needed again (choice.model: the masked copy in unstructured mode)
    hard, _ = hard_prune(choice.model, plan, share_unchanged=True)
    soft = soft_prune(choice.model, plan, in_place=True)

    clock("verify")
    # the rebuilt model takes the hard model's tensors: nothing but the error path below reads it
    with weights_dtype(options.dtype):
        recipe = make_recipe(spec, loaded.model_ref, hard, copy_weights=False)
    rebuilt = recipe.model
    try:  # the model exactly as prunectl.load rebuilds it must compute what the masked original does
        comparison = soft_vs_hard(entry(soft, module), entry(rebuilt, module), proof, plan, list(spec.layer_names),
                                  device)
    except VerificationError:
        mismatch = rebuild_mismatch(recipe, loaded.model_ref.factory, hard, inputs[0], module)
        if mismatch is not None:  # the masking and the surgery agree; the rebuild recipe is wrong
            raise mismatch from None
        raise
    del hard

    clock("report")
    report = build_report(soft, rebuilt, inputs[0], list(spec.layer_names), groups, kept,
                          macs=(comparison.soft_macs, comparison.hard_macs))
    report.update(choice.report)
    report.update(language_model_sizes(soft, rebuilt))
    report.update({"bias_compensation": compensation.report} if compensation is not None else {})
    if traced is not None:
        report["traced"] = {"pinned": traced.pinned, "tracer": traced.tracer}
    if module is not None:
        report["module"] = module  # MACs are the submodule's, on its input
    if eval_ids is not None:
        clock("eval")
        report["perplexity"] = before_and_after(before, evaluate_perplexity(rebuilt, eval_ids, device=device,
                                                                            source=str(options.eval_data)))
    if options.latency:
        clock("latency")
        report["latency"] = compare_latency(original, rebuilt, inputs[0], threads=options.latency_threads)
    facts = {**({"module": module} if module is not None else {}),
             "criterion": criterion.name, "rate": select.rate, "round_to": select.round_to,
             **({"structure_rates": dict(options.structure_rates())} if options.structure_rates() else {}),
             **_round_mode_fact(select),
             "min_channels": select.min_channels, "group_reduce": select.group_reduce, **choice.report,
             "verify": {"soft_vs_hard_max_abs": comparison.max_abs, "reference_max_abs": comparison.max_ref,
                        "tolerance": comparison.tolerance, "precision": comparison.precision,
                        "inputs": len(inputs), "seed": options.seed,
                        "input_shapes": [list(x.shape) for x in proof],
                        **({"data_inputs": len(from_data)} if from_data else {})},
             **({"drop_layers": depth} if depth is not None else {}),
             **({"calibration": data.details} if data is not None and data.details else {}),
             # only when not float32: default runs keep the bundle bytes they had before --dtype
             **({"dtype": options.dtype} if options.dtype not in (None, DEFAULT_WEIGHT_DTYPE) else {}),
             # likewise only off the CPU: where data-driven scores and the proof's numbers were computed
             **({"device": device_name(device)} if not is_cpu(device) else {})}
    manifest = build_manifest(model_ref=loaded.model_ref, args=recipe.args, resize=recipe.resize,
                              kept=kept_by_layer(plan), input_spec=input_spec, facts=facts, checkpoint=loaded.path,
                              checkpoint_sha256=loaded.sha256, spec_sha256=spec.sha256, previous=loaded.manifest)
    output, companions = None, companions_of(checkpoint)
    if options.output is not None:
        clock("export")
        manifest = write_bundle(Path(options.output), rebuilt, manifest, report, inputs,
                                options.opset if options.onnx else None, hf_companions=companions)
        output = Path(options.output)
    return PruneResult(rebuilt, manifest, report, output, clock.done(), plan, inputs, companions)


def _drop_layers(loaded: Loaded, options: PruneOptions, module: str | None, input_spec: Any,
                 data: CalibrationData | None) -> tuple[Loaded, dict[str, Any]]:
    """The checkpoint without ``--drop-layers`` decoder layers, proven, and what was done (manifest
    ``drop_layers``): layers chosen, their block influence, the proof's max difference."""
    if options.spec is not None or module is not None:
        raise SpecError("--drop-layers renumbers the layers: it takes a traced model, not --spec or --module")
    inputs = make_inputs(input_spec, options.seed, model=loaded.model) + data_inputs(data, input_spec)
    # text calibration: block influence over every window of the text, not random tokens (the proof keeps its few)
    text = [ids for ids, _ in data.batches] if data is not None and data.details else inputs
    cut = choose_drop(loaded.model, options.drop_layers, text)
    smaller = drop_layers(loaded.model, cut)
    worst = prove_drop(loaded.model, smaller, cut, inputs)
    model_ref = None if loaded.model_ref is None else replace(loaded.model_ref,
                                                               args={**loaded.model_ref.args, **cut.args})
    return replace(loaded, model=smaller, model_ref=model_ref), {**cut.to_json(), "max_abs": worst}


def _needs_tokenizer(options: PruneOptions) -> bool:
    return is_text(options.data) or options.eval_data is not None


def _round_mode_fact(select: SelectOptions) -> dict[str, str]:
    """The manifest records ``round_mode`` only when it is not the default, so that runs without it
    keep the bundle bytes they had before the option existed."""
    return {} if select.round_mode == DEFAULT_ROUND_MODE else {"round_mode": select.round_mode}


def _choose(spec: Spec, model: nn.Module, criterion: Criterion, select: SelectOptions, options: PruneOptions,
            example: torch.Tensor, data: CalibrationData | None, device: torch.device | None = None) -> Choice:
    """The selection stage, from the user's options: unstructured masks, or structured kept channels
    (per layer or global, toward a rate or a MACs/params target, in steps)."""
    exclude = tuple(options.exclude or ())
    if options.mode == "unstructured":
        if options.only:
            raise SpecError("--only: with --mode unstructured, give the layers to leave whole with --exclude")
        if options.target_macs is not None or options.target_params is not None or options.steps != 1:
            raise SpecError("--mode unstructured keeps every shape: --target-macs/--target-params/--steps "
                            "apply to structured pruning only")
        # torch's exact l1/random by name; any other criterion (an instance too) scores entries itself
        ranking = criterion.name if criterion.name in EXACT_CRITERIA else criterion
        return choose_unstructured(spec, model, ranking, select.rate, options.global_ranking, exclude,
                                   options.seed, ("weight", "bias") if options.prune_bias else ("weight",))
    if options.target_macs is not None and options.target_params is not None:
        raise SpecError("give one of --target-macs and --target-params, not both")
    target = (Target("macs", options.target_macs) if options.target_macs is not None else
              Target("params", options.target_params) if options.target_params is not None else None)
    choose_options = ChooseOptions(select, options.global_ranking, exclude, target, options.steps,
                                   options.schedule, options.seed, options.structure_rates(), device,
                                   tuple(options.only or ()))
    choice = choose(spec, model, criterion, choose_options, data if criterion.needs_data else None, example)
    if options.data is not None:
        choice.report["data"] = str(options.data)
    return choice


def load(bundle: str | Path) -> nn.Module:
    """Rebuild a bundle's pruned model (checksums verified, weights strict, no pickle)."""
    return load_bundle(bundle)[0]


def _replay_inputs(bundle: Path, manifest: Manifest, model: nn.Module) -> list[torch.Tensor]:
    """The verification inputs a bundle records (shape, dtype, seed), after the memory guard."""
    input_spec = manifest.input_spec
    check_input(input_spec.shape, input_spec.dtype, default_limit(), f"{bundle / MANIFEST_NAME}: input.shape")
    return make_inputs(input_spec, manifest.seed, model=model)


def verify(bundle: str | Path) -> dict[str, Any]:
    """Re-check a bundle: checksums, strict rebuild, a forward pass, and ONNX vs torch if present."""
    bundle = Path(bundle)
    model, manifest = load_bundle(bundle)
    module = manifest.extra.get("module")  # the input is this submodule's (prune --module)
    target = model if module is None else submodule(model, module, str(bundle / MANIFEST_NAME))
    inputs = _replay_inputs(bundle, manifest, target)
    outputs = run(entry(model, module), inputs[0], "bundle model")
    if not all(bool(torch.isfinite(t).all()) for t in outputs if t.is_floating_point()):
        raise VerificationError(f"{bundle}: the rebuilt model produces NaN/inf on its input")
    result: dict[str, Any] = {"bundle": str(bundle), "files": sorted(manifest.files), "checksums": "ok",
                              "rebuild": "ok", "forward": "ok"}
    if "model.onnx" in manifest.files:
        result["onnx_max_abs"] = check_onnx(bundle / "model.onnx", model, inputs).max_abs
    return result


def export(bundle: str | Path, onnx: bool = True, opset: int = DEFAULT_OPSET) -> Manifest:
    """Add (or redo) ``model.onnx`` in an existing bundle, atomically."""
    bundle = Path(bundle)
    model, manifest = load_bundle(bundle)
    if not onnx:
        return manifest
    inputs = _replay_inputs(bundle, manifest, model)
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
    parsed = requested_spec(spec) if spec else None
    ref = requested_model(parsed, model) if parsed else (ModelRef(model, {}) if model else None)
    loaded = load_checkpoint(path, ref, trust_pickle)
    input_spec = requested_input(parsed or Spec(layers=(), source=str(spec or path)), input_shape, loaded,
                                 spec_given=False)
    check_input(input_spec.shape, input_spec.dtype, default_limit())
    x = make_inputs(input_spec, 0, count=1, model=loaded.model)[0]
    run(loaded.model, x, "model")
    names = list(parsed.layer_names) if parsed else [
        name for name, module in loaded.model.named_modules() if kind_of(module) != "other"]
    widths = layer_widths(loaded.model, names)
    modules = dict(loaded.model.named_modules())
    return {"path": str(path), "factory": loaded.model_ref.factory if loaded.model_ref else None,
            "input": input_spec.to_json(), "params": count_params(loaded.model),
            "macs": count_macs(loaded.model, x), "size_bytes": size_bytes(loaded.model),
            "layers": [{"name": n, "type": type(modules[n]).__name__, "width": w} for n, w in widths.items()]}
