"""Coupled channel groups from a spec: which tensor dimensions must lose the same channels.

Every listed conv/linear opens a new *channel space* (its output channels). A norm layer
listed after it lives in the same space. The layers named in one ``prev`` sum are added
together, so their spaces merge. A depthwise conv's outputs are its inputs (times a
multiplier), so it lives in its input's space. A Linear after a flatten sees each input
channel as ``H*W`` consecutive features: a reference to a space carries that ``factor``.

Each resulting group lists its members: (module, side 'out' or 'in', factor). Cutting a
group means cutting every member at the same channel indices, expanded by its factor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from . import layers as L
from .errors import SpecError, UnsupportedError
from .params import count_attribute_of, parameter_of
from .spec import LayerSpec, Spec


@dataclass(frozen=True)
class Member:
    module: str
    side: str  # "out": the module's output channels; "in": its input channels
    factor: int = 1  # each group channel spans `factor` consecutive indices of this dimension
    scored: bool = False  # the criterion scores this member's output filters
    offset: int = 0  # a concatenation: this group's channels start at this index of the dimension
    axis: int | None = None  # a parameter entry ("module.param"): the parameter's channel axis
    count: bool = False  # an attribute entry ("module.attr"): an int holding the channel count


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together."""

    size: int
    members: list[Member] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # spec layers whose outputs live here
    pinned_by: list[str] = field(default_factory=list)  # why it must not be pruned
    rates: list[float] = field(default_factory=list)  # per-layer rates given in the spec
    blocks: int = 1  # grouped convs: kept channels must be spread equally over this many blocks
    heads: bool = False  # attention heads: a reader may take them one per input (split) or head_dim each

    @property
    def prunable(self) -> bool:
        return not self.pinned_by

    @property
    def unit(self) -> int:
        """Tensor indices one channel spans in every member (an attention head: head_dim rows)."""
        return min((member.factor for member in self.members if not member.count), default=1)

    def parts(self, module: str) -> int:
        """How many blocks of this group's channels ``module`` outputs (a fused q/k/v: 3)."""
        return sum(1 for member in self.members if member.module == module and member.side == "out") or 1

    @property
    def name(self) -> str:
        return self.layers[0] if self.layers else "<unnamed>"


@dataclass(frozen=True)
class _Ref:
    """A tensor whose channel dim is channel space `space`, each channel `factor` wide."""

    space: int
    factor: int = 1


class _Spaces:
    """Union-find over channel spaces; merging joins members, pins and block constraints."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(size=size))
        return len(self.parent) - 1

    def find(self, space: int) -> int:
        while self.parent[space] != space:
            self.parent[space] = self.parent[self.parent[space]]
            space = self.parent[space]
        return space

    def group(self, space: int) -> ChannelGroup:
        return self.groups[self.find(space)]

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        keep, gone = min(ra, rb), max(ra, rb)
        self.parent[gone] = keep
        target, source = self.groups[keep], self.groups[gone]
        target.members += source.members
        target.layers += source.layers
        target.pinned_by += source.pinned_by
        target.rates += source.rates
        target.blocks = _lcm(target.blocks, source.blocks)
        target.heads = target.heads or source.heads
        return keep

    def roots(self) -> list[ChannelGroup]:
        return [self.groups[i] for i in range(len(self.parent)) if self.find(i) == i]


def build_groups(spec: Spec, model: nn.Module) -> list[ChannelGroup]:
    """The coupled channel groups of ``model`` described by ``spec``, in forward order."""
    modules = dict(model.named_modules())
    spaces = _Spaces()
    output_of: dict[str, _Ref] = {}
    last: _Ref | None = None  # None: the previous tensor is the model input (never pruned)
    last_name: str | None = None
    attentions: set[str] = set()  # listed attention modules: only their out_proj reads their heads
    where = spec.source

    for layer in spec.layers:
        key = f"{where}: layers.{layer.name}"
        _check_heads_reader(layer, last_name, attentions, key)
        last_name = layer.name
        if layer.name not in modules:
            ref = _connect_parameter(layer, modules, spaces, output_of, last, key, type(model).__name__)
            _record(layer, ref, spaces)
            output_of[layer.name] = last = ref
            continue
        if layer.dim is not None:
            raise SpecError(f"{key}.dim: only a parameter entry (\"module.param\") takes dim; this is a module")
        module = modules[layer.name]
        kind = L.kind_of(module)
        if kind == "other":
            raise SpecError(f"{key}: is a {type(module).__name__}; only Conv1d/2d/3d, Linear, Embedding, "
                            "MultiheadAttention and the norm layers after them (BatchNorm, LayerNorm, GroupNorm, "
                            "PReLU) are listed")
        L.check_supported(layer.name, module)
        if kind == "embedding" and (layer.prev or layer.cat):
            raise SpecError(f"{key}: an Embedding reads indices, not channels; give it no prev or cat")
        # prev None: the previous listed layer feeds it; []: no listed layer does (input fixed)
        if source_is_fixed(layer.name, modules) and layer.name.rpartition(".")[0] not in attentions and \
                (layer.cat or layer.prev or (layer.prev is None and last)):
            raise SpecError(f"{key}: the out_proj of a MultiheadAttention reads its heads, which stay whole unless "
                            "the attention module itself is listed before it; give it \"prev\": []")
        if kind == "embedding":
            source = None
        elif layer.cat is not None:
            source = _cat_ref(layer.cat, output_of, spaces, key)
        else:
            source = last if layer.prev is None else (
                _input_ref(layer.prev, output_of, spaces, key) if layer.prev else None)
        if kind == "attention":
            ref = _connect_attention(layer.name, module, source, spaces, key)
            attentions.add(layer.name)
        elif isinstance(source, _Cat):
            ref = _connect_cat(layer.name, module, kind, source, spaces, key)
        elif kind == "norm":
            if source is None:
                raise SpecError(f"{key}: a norm layer must follow a listed conv or linear layer (or name them in prev)")
            _expect_width(key, L.out_width(module), spaces, source, "features")
            ref = _Ref(spaces.find(source.space), source.factor)
            group = spaces.group(ref.space)
            group.members.append(Member(layer.name, "out", ref.factor))
            if L.norm_blocks(module) > 1:  # GroupNorm: every group keeps the same number of channels
                _constrain_blocks(group, L.norm_blocks(module), ref.factor, layer.name)
        else:
            ref = _connect_producer(layer.name, module, kind, source, spaces, key)
        if layer.heads is not None:
            ref = _as_heads(layer, module, ref, spaces, key)
        _record(layer, ref, spaces)
        output_of[layer.name] = ref
        last = ref
    return [group for group in spaces.roots() if group.members]


def source_is_fixed(name: str, modules: dict[str, nn.Module]) -> bool:
    """A MultiheadAttention's out_proj: its input is the heads (embed_dim), which stay whole."""
    owner, _, attr = name.rpartition(".")
    return attr == "out_proj" and isinstance(modules.get(owner), nn.MultiheadAttention)


def _check_heads_reader(layer: LayerSpec, last_name: str | None, attentions: set[str], key: str) -> None:
    """An attention's heads are read by its own out_proj, and its out_proj reads nothing else."""
    if layer.cat is not None:
        reads = {name for part in layer.cat for name in part}
    elif layer.prev is None:
        reads = {last_name} if last_name is not None else set()
    else:
        reads = set(layer.prev)
    owner = layer.name.rpartition(".")[0]
    for name in sorted(reads & attentions):
        if layer.name != f"{name}.out_proj" or len(reads) > 1 or layer.cat is not None:
            raise SpecError(f"{key}: reads the heads of attention {name!r}; only {name}.out_proj reads them "
                            "(list it right after the attention, or give this layer its own \"prev\")")
    if owner in attentions and layer.name == f"{owner}.out_proj" and reads != {owner}:
        raise SpecError(f"{key}: the attention {owner!r} is listed, so its out_proj reads its heads: "
                        f"list it right after {owner!r} with no \"prev\"")


def _connect_attention(name: str, module: nn.Module, source: _Ref | _Cat | None, spaces: _Spaces,
                       key: str) -> _Ref:
    """A self-attention: its input columns follow the stream it reads; its heads are a new space
    whose every channel spans head_dim rows in each of the q, k and v blocks of in_proj."""
    if isinstance(source, _Cat):
        raise UnsupportedError(f"{key}: an attention reading a concatenation of channels is not supported; "
                               "mark the layers of its input \"prune\": false")
    if source is not None:
        _expect_width(key, L.in_width(module), spaces, source, "input features")
        source = _Ref(spaces.find(source.space), source.factor)
        spaces.group(source.space).members.append(Member(name, "in", source.factor))
    heads = spaces.new(module.num_heads)
    spaces.group(heads).heads = True
    for part in range(3):  # q, k, v: the same heads at offsets 0, E, 2E of in_proj's rows
        spaces.group(heads).members.append(Member(name, "out", module.head_dim, scored=part == 0,
                                                  offset=part * module.embed_dim))
    return _Ref(heads, module.head_dim)


def _as_heads(layer: LayerSpec, module: nn.Module, ref: _Ref | _Cat, spaces: _Spaces, key: str) -> _Ref:
    """A projection whose outputs are attention heads: its space is the heads, each spanning
    head_dim outputs, in every one of its parts (a fused qkv has three: q, k, v at offsets)."""
    heads, head_dim = layer.heads, layer.head_dim
    group = spaces.group(ref.space) if isinstance(ref, _Ref) else None
    fresh = group is not None and group.members == [Member(layer.name, "out", 1, scored=True)] and group.blocks == 1
    if L.kind_of(module) not in ("conv", "linear") or not fresh:
        raise SpecError(f"{key}.heads: only a conv or linear layer whose outputs are its own (not depthwise or "
                        "grouped, not reading a concatenation) has heads")
    width = L.out_width(module)
    if width % (heads * head_dim):
        raise SpecError(f"{key}.heads: {width} outputs are not a whole number of parts of {heads} heads x "
                        f"{head_dim} (head_dim)")
    group.size, group.heads = heads, True
    group.members = [Member(layer.name, "out", head_dim, scored=part == 0, offset=part * heads * head_dim)
                     for part in range(width // (heads * head_dim))]
    return _Ref(ref.space, head_dim)


def _record(layer: LayerSpec, ref: _Ref | _Cat, spaces: _Spaces) -> None:
    """The layer's name, rate and pin go to every group its output lives in."""
    for part in _parts(ref):
        group = spaces.group(part.space)
        if layer.name in group.layers:
            continue
        group.layers.append(layer.name)
        if layer.rate is not None:
            group.rates.append(layer.rate)
        if not layer.prunable:
            group.pinned_by.append(f"{layer.name}: " + ("prune: false" if not layer.prune else "arg: null"))


def _connect_parameter(layer: LayerSpec, modules: dict[str, nn.Module], spaces: _Spaces,
                       output_of: dict, last: _Ref | None, key: str, model_name: str) -> _Ref:
    """A parameter entry ("module.param" with dim): its channel axis lives in its prev's space."""
    found = parameter_of(modules, layer.name)
    attribute = count_attribute_of(modules, layer.name) if found is None else None
    if found is None and (attribute is None or not layer.count):
        raise SpecError(f"{key}: no module of that name in the model ({model_name}), nor a parameter"
                        + ("" if attribute is None else "; an int attribute holding the channel count needs "
                           "\"count\": true"))
    if attribute is not None:
        width, what = attribute[2], "as its value"
    else:
        if layer.count:
            raise SpecError(f"{key}.count: {layer.name!r} is a parameter; give it dim instead")
        if layer.dim is None:
            raise SpecError(f"{key}.dim: missing; a parameter entry names the axis that holds the channels")
        parameter = found[2]
        if layer.dim >= parameter.dim():
            raise SpecError(f"{key}.dim: {layer.dim}, but the parameter has shape {tuple(parameter.shape)}")
        width, what = parameter.shape[layer.dim], f"channels along dim {layer.dim}"
    source = last if layer.prev is None else (_input_ref(layer.prev, output_of, spaces, key) if layer.prev else None)
    if source is None:
        raise SpecError(f"{key}: a parameter entry must follow a listed layer (or name them in prev)")
    if isinstance(source, _Cat):
        raise UnsupportedError(f"{key}: a parameter over a concatenation of channels is not supported; "
                               "mark the layers in its prev \"prune\": false")
    ref = _Ref(spaces.find(source.space), source.factor)
    factor = ref.factor
    if attribute is not None and ref.factor > 1 and width == spaces.group(ref.space).size:
        factor = 1  # an attribute counting heads (num_heads), not their head_dim outputs (attn_dim)
    else:
        _expect_width(key, width, spaces, source, what)
    spaces.group(ref.space).members.append(Member(layer.name, "out", factor, axis=layer.dim,
                                                  count=attribute is not None))
    return ref


@dataclass(frozen=True)
class _Cat:
    """A channel concatenation: the parts' channels one after the other."""

    parts: tuple[_Ref, ...]


def _parts(ref: _Ref | _Cat) -> tuple[_Ref, ...]:
    return ref.parts if isinstance(ref, _Cat) else (ref,)


def _cat_ref(cat: tuple[tuple[str, ...], ...], output_of: dict, spaces: _Spaces, key: str) -> _Cat:
    parts: list[_Ref] = []
    for part in cat:
        parts += _parts(_input_ref(part, output_of, spaces, f"{key}.cat"))
    return _Cat(tuple(parts))


def _connect_cat(name: str, module: nn.Module, kind: str, cat: _Cat, spaces: _Spaces, key: str) -> _Ref | _Cat:
    """A layer reading a concatenation: one member per part, each at its offset."""
    parts = tuple(_Ref(spaces.find(p.space), p.factor) for p in cat.parts)
    widths = [spaces.group(p.space).size * p.factor for p in parts]
    width = L.in_width(module)
    if kind == "norm" and L.norm_blocks(module) > 1:
        raise UnsupportedError(f"{key}: a GroupNorm over a concatenation is not supported; "
                               "mark the layers of its 'cat' \"prune\": false")
    if width != sum(widths):
        raise SpecError(f"{key}: takes {width} input channels, but its concatenated input gives "
                        f"{' + '.join(map(str, widths))} = {sum(widths)}; check 'cat'")
    if kind == "conv" and module.groups > 1:
        raise UnsupportedError(f"{key}: a grouped conv reading a concatenation is not supported; "
                               "mark the layers of its 'cat' \"prune\": false")
    offset = 0
    for part, part_width in zip(parts, widths):
        side = "out" if kind == "norm" else "in"
        spaces.group(part.space).members.append(Member(name, side, part.factor, offset=offset))
        offset += part_width
    if kind == "norm":
        return _Cat(parts)  # a norm over a concatenation: its output is the same concatenation
    own = spaces.new(L.out_width(module))
    spaces.group(own).members.append(Member(name, "out", 1, scored=True))
    return _Ref(own)


def _input_ref(prev: tuple[str, ...], output_of: dict[str, _Ref], spaces: _Spaces, key: str) -> _Ref | _Cat:
    """The layers of one residual sum: all addends must be equally wide; their spaces merge."""
    refs = [output_of[name] for name in prev]
    if len(refs) == 1 and isinstance(refs[0], _Cat):
        return refs[0]
    if any(isinstance(ref, _Cat) for ref in refs):
        raise SpecError(f"{key}: adding concatenations to other tensors is not supported")
    widths = {name: spaces.group(ref.space).size * ref.factor for name, ref in zip(prev, refs)}
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"{name!r} has {width}" for name, width in widths.items())
        raise SpecError(f"{key}.prev: layers added together must have equal widths, but {shown}")
    first = refs[0]
    for ref in refs[1:]:
        if ref.factor != first.factor:
            raise SpecError(f"{key}.prev: addends with different channel layouts cannot be coupled")
        spaces.union(first.space, ref.space)
    return _Ref(spaces.find(first.space), first.factor)


def _connect_producer(name: str, module: nn.Module, kind: str, source: _Ref | None,
                      spaces: _Spaces, key: str) -> _Ref:
    """Attach a conv/linear's input side to ``source`` and return its output reference."""
    if source is not None:
        source = _Ref(spaces.find(source.space), source.factor)
        group = spaces.group(source.space)
        width = L.in_width(module)
        if group.heads and source.factor > 1 and width == group.size:
            source = _Ref(source.space, 1)  # reads the heads still split off head_dim: one input each
        channels = group.size * source.factor
        factor = source.factor
        if kind == "linear" and width != channels:
            if width % channels:
                raise SpecError(f"{key}: Linear takes {width} input features, not a multiple of the "
                                f"{channels} channels of its input; check the layer order or 'prev'")
            factor *= width // channels  # flatten: each channel spans H*W features
        elif kind == "conv":
            _expect_width(key, width, spaces, source, "input channels")
        if L.is_depthwise(module):
            multiplier = module.out_channels // module.in_channels
            group.members.append(Member(name, "in", factor))
            group.members.append(Member(name, "out", factor * multiplier, scored=True))
            return _Ref(source.space, factor * multiplier)
        group.members.append(Member(name, "in", factor))
        if kind == "conv" and module.groups > 1:
            _constrain_blocks(group, module.groups, factor, name)
    elif kind == "conv" and L.is_depthwise(module):
        own = spaces.new(L.out_width(module))
        spaces.group(own).pinned_by.append(f"{name}: depthwise conv on the model input")
        spaces.group(own).members.append(Member(name, "out", 1, scored=True))
        return _Ref(own)
    own = spaces.new(L.out_width(module))
    spaces.group(own).members.append(Member(name, "out", 1, scored=True))
    if kind == "conv" and module.groups > 1:
        spaces.group(own).blocks = _lcm(spaces.group(own).blocks, module.groups)
    return _Ref(own)


def _constrain_blocks(group: ChannelGroup, blocks: int, factor: int, name: str) -> None:
    if factor != 1:
        group.pinned_by.append(f"{name}: grouped conv over a strided channel layout")
    else:
        group.blocks = _lcm(group.blocks, blocks)
    if group.size % group.blocks:
        group.pinned_by.append(f"{name}: {group.size} channels cannot be split into {group.blocks} equal blocks")


def _expect_width(key: str, width: int, spaces: _Spaces, ref: _Ref, what: str) -> None:
    channels = spaces.group(ref.space).size * ref.factor
    if width != channels:
        raise SpecError(f"{key}: takes {width} {what}, but the layer before it (in spec order, or its 'prev') "
                        f"gives {channels}; check the order of 'layers' or add 'prev'")


def _lcm(a: int, b: int) -> int:
    from math import gcd

    return a * b // gcd(a, b)
