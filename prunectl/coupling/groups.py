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

import torch.nn as nn

from ..errors import SpecError, UnsupportedError
from ..formats.spec import LayerSpec, Spec
from ..layers import kinds as L
from ..layers.params import count_attribute_of, parameter_of
from .attention_groups import as_heads, as_parts, check_heads_reader, connect_attention, source_is_fixed
from .channel_spaces import Cat, ChannelGroup, Member, Ref, Spaces, constrain_blocks, expect_width, lcm, parts_of


def build_groups(spec: Spec, model: nn.Module) -> list[ChannelGroup]:
    """The coupled channel groups of ``model`` described by ``spec``, in forward order."""
    modules = dict(model.named_modules())
    spaces = Spaces()
    output_of: dict[str, Ref] = {}
    last: Ref | None = None  # None: the previous tensor is the model input (never pruned)
    last_name: str | None = None
    attentions: set[str] = set()  # listed attention modules: only their out_proj reads their heads
    where = spec.source

    for layer in spec.layers:
        key = f"{where}: layers.{layer.name}"
        check_heads_reader(layer, last_name, attentions, key)
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
            reader_width = L.in_width(module) if kind in ("conv", "linear") else None
            source = last if layer.prev is None else (
                _input_ref(layer.prev, output_of, spaces, key, reader_width) if layer.prev else None)
        if kind == "attention":
            ref = connect_attention(layer.name, module, source, spaces, key)
            attentions.add(layer.name)
        elif isinstance(source, Cat):
            ref = _connect_cat(layer.name, module, kind, source, spaces, key)
        elif kind == "norm":
            if source is None:
                raise SpecError(f"{key}: a norm layer must follow a listed conv or linear layer (or name them in prev)")
            expect_width(key, L.out_width(module), spaces, source, "features")
            ref = Ref(spaces.find(source.space), source.factor)
            group = spaces.group(ref.space)
            group.members.append(Member(layer.name, "out", ref.factor))
            if L.norm_blocks(module) > 1:  # GroupNorm: every group keeps the same number of channels
                constrain_blocks(group, L.norm_blocks(module), ref.factor, layer.name)
        else:
            ref = _connect_producer(layer.name, module, kind, source, spaces, key)
        if layer.heads is not None:
            ref = as_heads(layer, module, ref, spaces, key)
        elif layer.parts is not None:
            ref = as_parts(layer, module, ref, spaces, key)
        _record(layer, ref, spaces)
        output_of[layer.name] = ref
        last = ref
    return [group for group in spaces.roots() if group.members]


def _record(layer: LayerSpec, ref: Ref | Cat, spaces: Spaces) -> None:
    """The layer's name, rate and pin go to every group its output lives in."""
    for part in parts_of(ref):
        group = spaces.group(part.space)
        if layer.name in group.layers:
            continue
        group.layers.append(layer.name)
        if layer.rate is not None:
            group.rates.append(layer.rate)
        if not layer.prunable:
            group.pinned_by.append(f"{layer.name}: " + ("prune: false" if not layer.prune else "arg: null"))


def _connect_parameter(layer: LayerSpec, modules: dict[str, nn.Module], spaces: Spaces,
                       output_of: dict, last: Ref | None, key: str, model_name: str) -> Ref:
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
    if isinstance(source, Cat):
        raise UnsupportedError(f"{key}: a parameter over a concatenation of channels is not supported; "
                               "mark the layers in its prev \"prune\": false")
    ref = Ref(spaces.find(source.space), source.factor)
    factor = ref.factor
    group = spaces.group(ref.space)
    if ref.factor > 1 and width == group.size and (attribute is not None or group.heads):
        # an attribute counting heads (num_heads), not their head_dim outputs (attn_dim); a table
        # with one entry per head (Swin's relative position bias)
        factor = 1
    elif attribute is not None and group.heads and width % group.size == 0 and width != group.size * ref.factor:
        # a head count over KV groups (Phi-3's config.num_attention_heads: g query heads per channel)
        factor = width // group.size
    else:
        expect_width(key, width, spaces, source, what)
    spaces.group(ref.space).members.append(Member(layer.name, "out", factor, axis=layer.dim,
                                                  count=attribute is not None))
    return ref


def _cat_ref(cat: tuple[tuple[str, ...], ...], output_of: dict, spaces: Spaces, key: str) -> Cat:
    parts: list[Ref] = []
    for part in cat:
        parts += parts_of(_input_ref(part, output_of, spaces, f"{key}.cat"))
    return Cat(tuple(parts))


def _connect_cat(name: str, module: nn.Module, kind: str, cat: Cat, spaces: Spaces, key: str) -> Ref | Cat:
    """A layer reading a concatenation: one member per part, each at its offset."""
    parts = tuple(Ref(spaces.find(p.space), p.factor) for p in cat.parts)
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
        return Cat(parts)  # a norm over a concatenation: its output is the same concatenation
    own = spaces.new(L.out_width(module))
    spaces.group(own).members.append(Member(name, "out", 1, scored=True))
    return Ref(own)


def _input_ref(prev: tuple[str, ...], output_of: dict[str, Ref], spaces: Spaces, key: str,
               reader_width: int | None = None) -> Ref | Cat:
    """The layers of one residual sum: all addends must be equally wide; their spaces merge.
    Attention heads meet with the same count but may span different widths (grouped-query
    attention: a query projection's KV group is g heads wide, a key's one): the reader then
    takes the layout of the addend as wide as its input (``reader_width``)."""
    refs = [output_of[name] for name in prev]
    if len(refs) == 1 and isinstance(refs[0], Cat):
        return refs[0]
    if any(isinstance(ref, Cat) for ref in refs):
        raise SpecError(f"{key}: adding concatenations to other tensors is not supported")
    grouped = _grouped_heads(refs, spaces, reader_width)
    if grouped is not None:
        return grouped
    widths = {name: spaces.group(ref.space).size * ref.factor for name, ref in zip(prev, refs)}
    if len(set(widths.values())) > 1:
        shown = ", ".join(f"{name!r} has {width}" for name, width in widths.items())
        raise SpecError(f"{key}.prev: layers added together must have equal widths, but {shown}")
    first = refs[0]
    for ref in refs[1:]:
        if ref.factor != first.factor:
            raise SpecError(f"{key}.prev: addends with different channel layouts cannot be coupled")
        spaces.union(first.space, ref.space)
    return Ref(spaces.find(first.space), first.factor)


def _grouped_heads(refs: list[Ref], spaces: Spaces, reader_width: int | None) -> Ref | None:
    """The merged heads of grouped-query attention read by a layer ``reader_width`` wide (None: not such heads)."""
    groups = [spaces.group(ref.space) for ref in refs]
    if reader_width is None or not all(group.heads for group in groups) or len({g.size for g in groups}) != 1 \
            or len({ref.factor for ref in refs}) == 1:
        return None
    layouts = [ref for ref, group in zip(refs, groups) if group.size * ref.factor == reader_width]
    if not layouts:
        return None
    for ref in refs[1:]:
        spaces.union(refs[0].space, ref.space)
    return Ref(spaces.find(refs[0].space), layouts[0].factor)


def _connect_producer(name: str, module: nn.Module, kind: str, source: Ref | None,
                      spaces: Spaces, key: str) -> Ref:
    """Attach a conv/linear's input side to ``source`` and return its output reference."""
    if source is not None:
        source = Ref(spaces.find(source.space), source.factor)
        group = spaces.group(source.space)
        width = L.in_width(module)
        if group.heads and source.factor > 1 and width == group.size:
            source = Ref(source.space, 1)  # reads the heads still split off head_dim: one input each
        channels = group.size * source.factor
        factor = source.factor
        if kind == "linear" and width != channels:
            if width % channels:
                raise SpecError(f"{key}: Linear takes {width} input features, not a multiple of the "
                                f"{channels} channels of its input; check the layer order or 'prev'")
            factor *= width // channels  # flatten: each channel spans H*W features
        elif kind == "conv":
            expect_width(key, width, spaces, source, "input channels")
        if L.is_depthwise(module):
            multiplier = module.out_channels // module.in_channels
            group.members.append(Member(name, "in", factor))
            group.members.append(Member(name, "out", factor * multiplier, scored=True))
            return Ref(source.space, factor * multiplier)
        group.members.append(Member(name, "in", factor))
        if kind == "conv" and module.groups > 1:
            constrain_blocks(group, module.groups, factor, name)
    elif kind == "conv" and L.is_depthwise(module):
        own = spaces.new(L.out_width(module))
        spaces.group(own).pinned_by.append(f"{name}: depthwise conv on the model input")
        spaces.group(own).members.append(Member(name, "out", 1, scored=True))
        return Ref(own)
    own = spaces.new(L.out_width(module))
    spaces.group(own).members.append(Member(name, "out", 1, scored=True))
    if kind == "conv" and module.groups > 1:
        spaces.group(own).blocks = lcm(spaces.group(own).blocks, module.groups)
    return Ref(own)


