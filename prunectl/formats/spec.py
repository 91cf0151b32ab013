"""The pruning spec (sidecar JSON, version 1): typed, strictly validated, round-trippable.

A spec plays the role of CAC's ``model_info``: which layers to prune, in forward order, the
constructor argument that sets each one's width (``arg``), the residual sums feeding a layer
(``prev``) and what must not be pruned (``prune: false``). A bare ``model_info`` object with
no wrapper is accepted as ``layers`` with defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..options import GROUP_REDUCTIONS, ROUND_MODES
from .checksums import bytes_sha256
from .strict_json import dump_json, is_finite_number, parse_json, read_json_bytes

SPEC_VERSION = 1
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32")
_TOP_KEYS = {
    "prunectl_spec", "model", "input", "criterion", "rate", "round_to", "round_mode", "min_channels",
    "group_reduce", "layers", "module",
}
_LAYER_KEYS = {"arg", "prev", "prune", "rate", "cat", "dim", "count", "heads", "head_dim", "parts"}
MAX_DIM = 1 << 20


@dataclass(frozen=True)
class ModelRef:
    """How to build the model: ``factory`` ("pkg.mod:Class", "torchvision:resnet18") and kwargs."""

    factory: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"factory": self.factory, "args": dict(self.args)}

    @classmethod
    def of_class(cls, model: Any, args: dict[str, Any] | None = None) -> ModelRef:
        """The model's own class as its factory ("pkg.mod:Class")."""
        return cls(f"{type(model).__module__}:{type(model).__qualname__}", dict(args or {}))


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: str = "float32"

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class LayerSpec:
    """One listed layer. ``has_arg`` False means "no arg key": rebuilt by surgery."""

    name: str
    arg: str | None = None
    has_arg: bool = False
    prev: tuple[str, ...] | None = None
    prune: bool = True
    rate: float | None = None
    # the input is the channel concatenation of these parts, in order; each part is the sum of
    # the outputs of its layers (a one-layer part is just that layer's output)
    cat: tuple[tuple[str, ...], ...] | None = None
    # set only for a parameter entry ("module.param"): the parameter's axis holding the channels
    dim: int | None = None
    # an attribute entry ("module.attr"): an int attribute that holds the channel count (ViT's hidden_dim)
    count: bool = False
    # a conv/linear whose outputs are attention heads (a q/k/v projection, or a fused qkv: parts
    # of ``heads`` heads each): channels are whole heads of ``head_dim`` outputs
    # (a producer split into parts of different head widths, Phi-3's q, k and v of a grouped-query
    # attention: one head_dim per part, part i being ``heads * head_dim[i]`` outputs)
    heads: int | None = None
    head_dim: int | tuple[int, ...] | None = None
    # a producer whose outputs are ``parts`` equal consecutive blocks of the same channels (Phi-3's
    # gate_up_proj, chunked into gate and up): channel c is output c of every block
    parts: int | None = None

    @property
    def prunable(self) -> bool:
        return self.prune and not (self.has_arg and self.arg is None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.has_arg:
            out["arg"] = self.arg
        if self.prev is not None:
            out["prev"] = list(self.prev)
        if self.cat is not None:
            out["cat"] = [part[0] if len(part) == 1 else list(part) for part in self.cat]
        if not self.prune:
            out["prune"] = False
        if self.rate is not None:
            out["rate"] = self.rate
        if self.dim is not None:
            out["dim"] = self.dim
        if self.count:
            out["count"] = True
        if self.heads is not None:
            out["heads"] = self.heads
            out["head_dim"] = list(self.head_dim) if isinstance(self.head_dim, tuple) else self.head_dim
        if self.parts is not None:
            out["parts"] = self.parts
        return out


@dataclass(frozen=True)
class Spec:
    layers: tuple[LayerSpec, ...]
    model: ModelRef | None = None
    input: InputSpec | None = None
    criterion: str | None = None
    rate: float | None = None
    round_to: int | None = None
    round_mode: str | None = None  # up (default), down, nearest
    min_channels: int | None = None
    group_reduce: str | None = None
    # the submodule that is traced and verified (a detector's "backbone"): ``input`` is its input,
    # layer names stay full paths, and whatever reads its outputs is left as it is
    module: str | None = None
    source: str = "<spec>"  # where it was read from; used in messages, not serialised
    sha256: str | None = field(default=None, compare=False)  # of the file's bytes, when read from one

    def layer(self, name: str) -> LayerSpec:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def under(self, module: str) -> Spec:
        """This spec, written for ``module`` on its own, with every name a path in the whole model."""
        def full(name: str) -> str:
            return f"{module}.{name}"

        layers = tuple(replace(layer, name=full(layer.name),
                               prev=None if layer.prev is None else tuple(map(full, layer.prev)),
                               cat=None if layer.cat is None else tuple(tuple(map(full, part)) for part in layer.cat))
                       for layer in self.layers)
        return replace(self, layers=layers, module=module)

    def with_options(self, **overrides: Any) -> Spec:
        """Command-line options win over the file; ``None`` means "not given"."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prunectl_spec": SPEC_VERSION}
        if self.model is not None:
            out["model"] = self.model.to_json()
        if self.input is not None:
            out["input"] = self.input.to_json()
        for key in ("criterion", "rate", "round_to", "round_mode", "min_channels", "group_reduce", "module"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["layers"] = {layer.name: layer.to_json() for layer in self.layers}
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "<spec>") -> Spec:
        return _SpecParser(source).parse(data)


def _positive(number: Any) -> bool:
    return isinstance(number, int) and not isinstance(number, bool) and number >= 1


def read_spec(path: str | Path) -> Spec:
    """The spec in ``path``, with the sha256 of the very bytes parsed (the manifest records it)."""
    data = read_json_bytes(path, SpecError)
    try:
        parsed = parse_json(data)
    except ValueError as exc:
        raise SpecError(f"{path}: not valid JSON: {exc}") from None
    return replace(Spec.from_json(parsed, source=str(path)), sha256=bytes_sha256(data))


def write_spec(spec: Spec, path: str | Path) -> None:
    Path(path).write_bytes(dump_json(spec.to_json()))


class _SpecParser:
    """Validation with messages of the form ``<file>: <key path>: <problem>``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(f"{self.source}: {key}: {problem}" if key else f"{self.source}: {problem}")

    def parse(self, data: Any) -> Spec:
        if not isinstance(data, dict):
            raise self.fail("", f"expected a JSON object, got {_kind(data)}")
        if "prunectl_spec" not in data:
            if data and all(isinstance(v, dict) and set(v) <= _LAYER_KEYS for v in data.values()):
                return Spec(layers=self.layers(data, "layers"), source=self.source)
            raise self.fail("prunectl_spec", "missing (a spec starts with \"prunectl_spec\": 1, "
                            "or is a bare CAC model_info object of layer -> {arg, prev, prune})")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            raise self.fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
        version = data["prunectl_spec"]
        if version != SPEC_VERSION or isinstance(version, bool):
            raise self.fail("prunectl_spec",
                            f"unsupported version {version!r}; this prunectl reads version {SPEC_VERSION}")
        if "layers" not in data:
            raise self.fail("layers", "missing")
        return Spec(
            layers=self.layers(data["layers"], "layers"),
            model=self.model(data["model"]) if "model" in data else None,
            input=self.input(data["input"], "input") if "input" in data else None,
            criterion=self.name(data, "criterion"),
            rate=self.rate(data.get("rate"), "rate"),
            round_to=self.positive_int(data.get("round_to"), "round_to"),
            round_mode=self.choice(data.get("round_mode"), "round_mode", ROUND_MODES),
            min_channels=self.positive_int(data.get("min_channels"), "min_channels"),
            group_reduce=self.choice(data.get("group_reduce"), "group_reduce", GROUP_REDUCTIONS),
            module=self.module_path(data.get("module")),
            source=self.source,
        )

    def module_path(self, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not all(part.isidentifier() or part.isdigit() for part in value.split(".")):
            raise self.fail("module", f"expected a submodule path such as \"backbone\" or \"features.0\", "
                                      f"got {value!r}")
        return value

    def model(self, value: Any) -> ModelRef:
        if not isinstance(value, dict):
            raise self.fail("model", f"expected an object, got {_kind(value)}")
        unknown = sorted(set(value) - {"factory", "args"})
        if unknown:
            raise self.fail(f"model.{unknown[0]}", "unknown key; allowed: args, factory")
        factory = value.get("factory")
        if not isinstance(factory, str) or ":" not in factory:
            raise self.fail("model.factory", f"expected \"module:Name\" or \"torchvision:name\", got {factory!r}")
        args = value.get("args", {})
        if not isinstance(args, dict):
            raise self.fail("model.args", f"expected an object, got {_kind(args)}")
        return ModelRef(factory=factory, args=dict(args))

    def input(self, value: Any, key: str) -> InputSpec:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object, got {_kind(value)}")
        unknown = sorted(set(value) - {"shape", "dtype"})
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}", "unknown key; allowed: dtype, shape")
        shape = value.get("shape")
        if (not isinstance(shape, list) or not shape or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_DIM for d in shape)):
            raise self.fail(f"{key}.shape",
                            f"expected a list of 1 to 8 positive integers (each <= {MAX_DIM}), got {shape!r}")
        dtype = self.choice(value.get("dtype", "float32"), f"{key}.dtype", DTYPES)
        return InputSpec(shape=tuple(shape), dtype=dtype)

    def layers(self, value: Any, key: str) -> tuple[LayerSpec, ...]:
        if not isinstance(value, dict):
            raise self.fail(key, f"expected an object of layer name -> options, got {_kind(value)}")
        if not value:
            raise self.fail(key, "is empty; list the layers to prune in forward order")
        layers: list[LayerSpec] = []
        seen: set[str] = set()
        for name, options in value.items():
            where = f"{key}.{name}"
            if not name or len(name) > 1000:
                raise self.fail(where, "layer names must be 1 to 1000 characters")
            if not isinstance(options, dict):
                raise self.fail(where, f"expected an object, got {_kind(options)}")
            unknown = sorted(set(options) - _LAYER_KEYS)
            if unknown:
                raise self.fail(f"{where}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(_LAYER_KEYS))}")
            arg = options.get("arg")
            if arg is not None and (not isinstance(arg, str) or not arg.isidentifier()):
                raise self.fail(f"{where}.arg", f"expected a constructor argument name or null, got {arg!r}")
            prev = options.get("prev")
            if prev is not None:
                # [] says "the input comes from no listed layer" (the model input, or an op prunectl
                # leaves alone): the layer's input side is never cut
                if not isinstance(prev, list) or not all(isinstance(p, str) for p in prev):
                    raise self.fail(f"{where}.prev", f"expected a list of layer names, got {prev!r}")
                self.earlier(prev, f"{where}.prev", name, value, seen)
                prev = tuple(dict.fromkeys(prev))
            cat = self.cat(options.get("cat"), f"{where}.cat", name, value, seen)
            if cat is not None and prev is not None:
                raise self.fail(f"{where}.cat", "give either prev (a sum) or cat (a concatenation), not both")
            prune = options.get("prune", True)
            if not isinstance(prune, bool):
                raise self.fail(f"{where}.prune", f"expected true or false, got {prune!r}")
            dim = options.get("dim")
            if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or not 0 <= dim < 8):
                raise self.fail(f"{where}.dim", f"expected the parameter's channel axis (an integer 0..7), got {dim!r}")
            if dim is not None and ("arg" in options or cat is not None):
                raise self.fail(f"{where}.dim", "a parameter entry (with dim) takes no arg or cat; its channels "
                                "follow the layers in its prev")
            count = options.get("count", False)
            if count is not False and (count is not True or dim is not None or "arg" in options or cat is not None):
                raise self.fail(f"{where}.count", "expected true, on an attribute entry without dim, arg or cat")
            heads, head_dim, parts = options.get("heads"), options.get("head_dim"), options.get("parts")
            if isinstance(head_dim, list):  # one per part: the parts' heads are of different widths
                if len(head_dim) < 2 or not all(_positive(n) for n in head_dim):
                    raise self.fail(f"{where}.head_dim", f"expected a positive integer or a list of two or more "
                                    f"(one per part), got {head_dim!r}")
                head_dim = tuple(head_dim)
            for key, number in (("heads", heads), ("head_dim", head_dim), ("parts", parts)):
                if number is not None and not isinstance(number, tuple) and not _positive(number):
                    raise self.fail(f"{where}.{key}", f"expected a positive integer, got {number!r}")
            if parts is not None and (parts < 2 or heads is not None or dim is not None or count):
                raise self.fail(f"{where}.parts", "expected 2 or more, on a conv or linear layer entry without heads "
                                "(heads say their parts through head_dim)")
            if (heads is None) != (head_dim is None):
                raise self.fail(f"{where}.{'head_dim' if head_dim is None else 'heads'}",
                                "heads and head_dim go together (the layer's outputs are heads of head_dim channels)")
            if heads is not None and (dim is not None or count):
                raise self.fail(f"{where}.heads", "only a conv or linear layer entry has heads")
            layers.append(LayerSpec(name=name, arg=arg, has_arg="arg" in options, prev=prev,
                                    prune=prune, rate=self.rate(options.get("rate"), f"{where}.rate"), cat=cat,
                                    dim=dim, count=count, heads=heads, head_dim=head_dim, parts=parts))
            seen.add(name)
        return tuple(layers)

    def earlier(self, names: list[str], key: str, name: str, listed: dict, seen: set[str]) -> None:
        """Every name is a layer listed before ``name`` (layers are in forward order)."""
        for p in names:
            if p == name:
                raise self.fail(key, "names the layer itself (a cycle)")
            if p not in listed:
                raise self.fail(key, f"names {p!r}, which is not listed in layers")
            if p not in seen:
                raise self.fail(key, f"names {p!r}, which is listed after {name!r}; "
                                "layers are in forward order, so this would be a cycle")

    def cat(self, value: Any, key: str, name: str, listed: dict, seen: set[str]) -> tuple[tuple[str, ...], ...] | None:
        if value is None:
            return None
        parts = value if isinstance(value, list) else None
        if not parts or not all(isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(q, str) for q in p))
                                for p in parts):
            raise self.fail(key, f"expected a non-empty list of layer names (or lists of names, for sums), "
                                 f"got {value!r}")
        parts = [(p,) if isinstance(p, str) else tuple(dict.fromkeys(p)) for p in parts]
        self.earlier([q for part in parts for q in part], key, name, listed, seen)
        return tuple(parts)

    def rate(self, value: Any, key: str) -> float | None:
        if value is None:
            return None
        if not is_finite_number(value) or not 0 <= value < 1:
            raise self.fail(key, f"expected a number in [0, 1), got {value!r}")
        return float(value)

    def positive_int(self, value: Any, key: str) -> int | None:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_DIM:
            raise self.fail(key, f"expected an integer >= 1, got {value!r}")
        return value

    def name(self, data: dict, key: str) -> str | None:
        value = data.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise self.fail(key, f"expected a name, got {value!r}")
        return value

    def choice(self, value: Any, key: str, allowed: tuple[str, ...]) -> str | None:
        if value is not None and value not in allowed:
            raise self.fail(key, f"expected one of {', '.join(allowed)}, got {value!r}")
        return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
