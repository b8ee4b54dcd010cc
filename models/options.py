"""The model settings' closed vocabularies, importable without torch.

The command line lists them in `clipsearch serve --help`, which must not wait
for torch and open_clip to import (about ten seconds on a small machine).
"""

from __future__ import annotations

from enum import StrEnum


class Pipeline(StrEnum):
    FAST = "fast"
    REFERENCE = "reference"


class Precision(StrEnum):
    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"
