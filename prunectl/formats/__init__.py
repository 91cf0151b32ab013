"""Formats: what people write or ship, typed and strictly validated: the spec, the manifest and its
seal, strict canonical JSON, checksums, and the history of an auto run (docs/formats.md)."""
