"""``hf:CLASS_OR_CONFIG``: Hugging Face transformers models built from a config, never downloaded.

    hf:BertModel                    the class; factory args are its config's fields
    hf:BertConfig                   a config class: the library's base model for it (AutoModel)
    hf:bert                         a model type (``transformers.CONFIG_MAPPING``): same as its config

    prunectl prune ckpt.pt --model hf:BertModel ...   # spec "model": {"factory": "hf:BertModel",
                                                      #   "args": {"hidden_size": 64, "num_hidden_layers": 2}}

Only names that the installed transformers defines locally are accepted. A Hub checkpoint name
(``bert-base-uncased``, ``google/vit-base``) would need a download to know its config, and
prunectl never downloads: it is refused with a hint to write the config fields as factory args.
The factory string may come from someone else's manifest, so it resolves to a transformers
``PreTrainedModel``/``PretrainedConfig`` subclass or nothing. A whole ``config.json`` may be the
args (its ``architectures``/``transformers_version`` are dropped, ``model_type`` must match). A
field that is close to a real one (``hidden_szie``) is an error naming the real one, and
``trust_remote_code`` is refused; any other unknown field (one a newer transformers dropped, such as
BERT's ``position_embedding_type``) is kept as an attribute, as ``from_pretrained`` does, with a warning.

transformers is imported inside the factory (extra ``hf``); without it the error says what to install.
"""
from __future__ import annotations

import difflib
import inspect
import warnings
from typing import Any

import torch.nn as nn

from ..errors import SpecError

# accepted by every PretrainedConfig without being one of its serialised fields
_CONFIG_KEYWORDS = {"attn_implementation"}
_REFUSED_KEYS = {"trust_remote_code", "pretrained_model_name_or_path", "cache_dir", "revision", "token"}
# inputs prunectl can synthesise from a spec's input shape and dtype (models/inputs.py)
_INPUT_DTYPES = {"input_ids": "int64", "pixel_values": "float32", "input_values": "float32",
                 "input_features": "float32"}
DEFAULT_TOKEN_SHAPE = (1, 16)
# what save_pretrained writes into config.json besides the fields: a whole config.json may be the args
# (``_model_name_or_path``: a GGUF's general.name, in the config.json of a model loaded from a GGUF)
_SERIALISATION_KEYS = {"architectures", "transformers_version", "model_type", "_name_or_path", "_commit_hash",
                       "_model_name_or_path"}
# fields a config class may lack but its modeling code reads (``getattr(config, "head_dim", ...)``):
# prunectl writes head_dim explicitly so a pruned Qwen2 keeps RoPE's size (verification/arg_probe.py)
_READ_BY_MODELING = {"head_dim"}
# special-token ids older configs and GGUF headers carry for the tokenizer (SmolLM2's GGUF gives
# LlamaConfig an unk_token_id): kept as attributes like any other, but nothing to warn about
_TOKENIZER_IDS = {"unk_token_id", "sep_token_id", "cls_token_id", "mask_token_id"}


def hf_factory(name: str, **args: Any) -> nn.Module:
    """``hf:NAME``: a transformers model class, config class or model type, random init."""
    transformers = _transformers(name)
    model_cls, config_cls = _resolve(transformers, name)
    config = _config(config_cls, name, args)
    if model_cls is None:
        return transformers.AutoModel.from_config(config)
    return model_cls(config)


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers model (without importing transformers)."""
    return any(cls.__module__.startswith("transformers.") and cls.__name__ == "PreTrainedModel"
               for cls in type(model).__mro__)


def main_input_name(model: nn.Module) -> str:
    """The forward argument a transformers model takes its tensor input as (``input_ids``, ...)."""
    return str(getattr(model, "main_input_name", "input_ids"))


def default_input_dtype(model: nn.Module) -> str | None:
    """The dtype of a transformers model's main input (int64 token ids for text models)."""
    return _INPUT_DTYPES.get(main_input_name(model)) if is_hf_model(model) else None


def default_input_shape(model: nn.Module) -> tuple[int, ...] | None:
    """1x16 token ids for text models; 1xCxHxW at the config's image size for vision models."""
    name = main_input_name(model)
    if name == "input_ids":
        return DEFAULT_TOKEN_SHAPE
    config = getattr(model, "config", None)
    size, channels = getattr(config, "image_size", None), getattr(config, "num_channels", None)
    if name == "pixel_values" and isinstance(size, int) and isinstance(channels, int):
        return (1, channels, size, size)
    return None


def _init_keywords(config_cls: type) -> set[str]:
    """Named keyword arguments of the config class and its bases (``num_labels`` is one, not a field)."""
    names: set[str] = set()
    for cls in config_cls.__mro__:
        init = cls.__dict__.get("__init__")
        if init is not None:
            names |= {p.name for p in inspect.signature(init).parameters.values()
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        # transformers 5 configs take settable properties as keywords too (num_labels sets id2label)
        names |= {key for key, value in cls.__dict__.items() if isinstance(value, property) and value.fset}
    return names


def _transformers(name: str) -> Any:
    try:
        import transformers
    except ImportError:
        raise SpecError(f"model factory 'hf:{name}' needs transformers: pip install 'prunectl[hf]'") from None
    return transformers


def _resolve(transformers: Any, name: str) -> tuple[type | None, type]:
    """(model class or None for AutoModel, config class) for a class name or model type."""
    if name.isidentifier() and not name.startswith("_"):
        mapping = transformers.CONFIG_MAPPING
        if name in mapping:
            return None, mapping[name]
        try:
            obj = getattr(transformers, name)
        except Exception:  # transformers' lazy module raises what the backend's import raises (TF, Flax)
            obj = None
        if isinstance(obj, type) and issubclass(obj, transformers.PreTrainedModel) and \
                isinstance(getattr(obj, "config_class", None), type):
            return obj, obj.config_class
        if isinstance(obj, type) and issubclass(obj, transformers.PretrainedConfig) and \
                obj is not transformers.PretrainedConfig:
            return None, obj
    raise SpecError(f"model factory 'hf:{name}': not a transformers model class (hf:BertModel), config class "
                    "(hf:BertConfig) or model type (hf:bert); a Hub checkpoint name would need a download, which "
                    "prunectl never does: name the class and pass its config fields as factory args "
                    "(hidden_size, num_hidden_layers, ...), then load your own weights")


def _config(config_cls: type, name: str, args: dict[str, Any]) -> Any:
    try:
        known = set(config_cls().to_dict()) | _CONFIG_KEYWORDS | _init_keywords(config_cls)
    except Exception as exc:  # composite configs (encoder-decoder) have no defaults to build alone
        raise SpecError(f"model factory 'hf:{name}': {config_cls.__name__} cannot be built from fields alone "
                        f"({exc}); name a model class with a self-contained config (hf:BertModel)") from None
    model_type = args.get("model_type", config_cls.model_type)
    if model_type != config_cls.model_type:
        raise SpecError(f"model factory 'hf:{name}': argument 'model_type' is {model_type!r}, but "
                        f"{config_cls.__name__} is {config_cls.model_type!r}")
    args = {key: value for key, value in args.items() if key not in _SERIALISATION_KEYS}
    stale = []
    for key in sorted(args):
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.85)
        if key in _REFUSED_KEYS or key.startswith("_") or (key not in known and close):
            hint = f"did you mean {close[0]!r}? " if close and key not in _REFUSED_KEYS else ""
            raise SpecError(f"model factory 'hf:{name}': argument {key!r} is not a field of "
                            f"{config_cls.__name__}; {hint}see its documentation for the fields (hidden_size, ...)")
        if key not in known and key not in _READ_BY_MODELING | _TOKENIZER_IDS:
            stale.append(key)
    if stale:
        # a config.json written by another transformers release carries fields this one dropped
        # (BERT's position_embedding_type in 5.x); from_pretrained keeps them as plain attributes
        warnings.warn(f"model factory 'hf:{name}': {', '.join(map(repr, stale))} not a field of "
                      f"{config_cls.__name__} in this transformers; kept as attributes, as from_pretrained does",
                      stacklevel=2)
    try:
        return config_cls(**args)
    except Exception as exc:
        raise SpecError(f"model factory 'hf:{name}' with args {args}: {config_cls.__name__} refused them: "
                        f"{exc}") from None
