"""manifest.json (version 1): how to rebuild a pruned model without pickle, and proof of what was done.

The typed, strictly validated document and its canonical, sealed bytes. Reading a bundle back
(checksums, rebuild, strict weights) is ``prunectl.loading.bundle``; the fields are docs/formats.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from .seal import SEAL_KEY, sealed_bytes
from .spec import DTYPES, InputSpec
from .strict_json import read_json

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"
_REQUIRED = ("prunectl_manifest", "rebuild", "resize", "kept", "input", "files", "versions")
_OPTIONAL = ("criterion", "rate", "round_to", "min_channels", "group_reduce", "verify", "onnx", "source",
             "spec_sha256", SEAL_KEY)  # the seal is rewritten by write_manifest (seal.py)
# recorded by the selection stage: how channels were chosen, the target reached, unstructured sparsity, --data
_OPTIONAL += ("selection", "target", "sparsity", "data")
_OPTIONAL += ("module",)  # prune --module: the submodule the input goes to (models/submodule.py)
_OPTIONAL += ("round_mode",)  # only when not "up": older bundles and default runs have none
_OPTIONAL += ("structure_rates",)  # --rate-heads/-mlp/-hidden, when given
_OPTIONAL += ("dtype",)  # prune --dtype, only when not float32: the weights' dtype, rebuilt in it (models/dtype.py)
_OPTIONAL += ("drop_layers",)  # prune --drop-layers: the decoder layers removed, their block influence, the proof
_OPTIONAL += ("device",)  # --device, only when not cpu: where data-driven scores and the proof were computed
_OPTIONAL += ("calibration",)  # --data text.txt: how the text became windows of token ids (loading/text_data.py)
_FILE_NAMES = ("model.safetensors", "model.pt", "model.onnx", "report.json", "history.json", "history.png")
HF_DIR = "hf"  # the folder stock from_pretrained loads (bundle/hf_folder.py)
_OPTIONAL += (HF_DIR,)  # the manifest's facts about it: written, or why not
# hf/<file>: what save_pretrained and a tokenizer write; one level, plain names (no path can escape)
HF_FILE = re.compile(HF_DIR + r"/[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Manifest:
    rebuild: dict[str, Any]
    resize: dict[str, dict[str, int]]
    kept: dict[str, list[int]]
    input: dict[str, Any]
    files: dict[str, str]
    versions: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # criterion, rate, verify, onnx, source, ...

    @property
    def input_spec(self) -> InputSpec:
        """The input the bundle was checked on (``verify`` and ``export`` replay it)."""
        return InputSpec(tuple(self.input["shape"]), self.input["dtype"])

    @property
    def seed(self) -> int:
        """The seed of the verification inputs (validated an integer by ``from_json``)."""
        return self.extra.get("verify", {}).get("seed", 0)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prunectl_manifest": MANIFEST_VERSION, "rebuild": self.rebuild,
                               "resize": self.resize, "kept": self.kept}
        out.update({key: self.extra[key] for key in _OPTIONAL if key in self.extra})
        out.update({"input": self.input, "files": self.files, "versions": self.versions})
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = MANIFEST_NAME) -> Manifest:
        def bad(key: str, problem: str) -> CheckpointError:
            return CheckpointError(f"{source}: {key}: {problem}")

        if not isinstance(data, dict):
            raise bad("(top level)", "expected a JSON object")
        for key in _REQUIRED:
            if key not in data:
                raise bad(key, "missing")
        unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
        if unknown:
            raise bad(unknown[0], "unknown key")
        if data["prunectl_manifest"] != MANIFEST_VERSION or isinstance(data["prunectl_manifest"], bool):
            raise bad("prunectl_manifest", f"unsupported version {data['prunectl_manifest']!r}")
        rebuild = data["rebuild"]
        if (not isinstance(rebuild, dict) or set(rebuild) != {"factory", "args"}
                or not isinstance(rebuild["factory"], str) or not isinstance(rebuild["args"], dict)):
            raise bad("rebuild", "expected {\"factory\": \"module:Class\", \"args\": {...}}")
        if not isinstance(data["resize"], dict) or not all(
                isinstance(v, dict) and all(isinstance(n, int) and not isinstance(n, bool) for n in v.values())
                for v in data["resize"].values()):
            raise bad("resize", "expected an object of module -> {attribute: integer}")
        if not isinstance(data["kept"], dict) or not all(
                isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
                for v in data["kept"].values()):
            raise bad("kept", "expected an object of layer -> list of channel indices")
        inp = data["input"]
        if (not isinstance(inp, dict) or not isinstance(inp.get("shape"), list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in inp["shape"])
                or not 0 < len(inp["shape"]) <= 8 or inp.get("dtype") not in DTYPES):
            raise bad("input", "expected {\"shape\": [positive ints], \"dtype\": \"float32\"}")
        files = data["files"]
        if not isinstance(files, dict) or WEIGHTS_NAME not in files or not all(
                (name in _FILE_NAMES or HF_FILE.fullmatch(name)) and isinstance(digest, str) and len(digest) == 64
                for name, digest in files.items()):
            raise bad("files", f"expected sha256 digests of known files ({', '.join(_FILE_NAMES)}, hf/*), "
                      f"including {WEIGHTS_NAME}")
        if not isinstance(data["versions"], dict):
            raise bad("versions", "expected an object")
        module = data.get("module")
        if module is not None and (not isinstance(module, str) or not all(
                part.isidentifier() or part.isdigit() for part in module.split("."))):
            raise bad("module", f"expected a submodule path such as \"backbone\", got {module!r}")
        verify = data.get("verify", {})
        seed = verify.get("seed", 0) if isinstance(verify, dict) else None
        if not isinstance(seed, int) or isinstance(seed, bool):  # seeds the inputs verify/export replay
            raise bad("verify", "expected an object whose \"seed\" is an integer")
        return cls(rebuild=rebuild, resize=data["resize"], kept=data["kept"], input=inp, files=files,
                   versions=data["versions"], extra={k: data[k] for k in _OPTIONAL if k in data})


def read_manifest(bundle: str | Path) -> Manifest:
    path = Path(bundle) / MANIFEST_NAME
    if not path.is_file():
        raise CheckpointError(f"{bundle}: not a prunectl bundle (no {MANIFEST_NAME})")
    return Manifest.from_json(read_json(path, CheckpointError), source=str(path))


def write_manifest(manifest: Manifest, bundle: Path) -> None:
    (bundle / MANIFEST_NAME).write_bytes(sealed_bytes(manifest.to_json()))
