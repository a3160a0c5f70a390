"""`vit_finetune.precision`: what `auto` resolves to per hardware, and the names each library gets."""

import subprocess
import sys

import pytest
import torch
from accelerate.utils import PrecisionType

from vit_finetune import precision
from vit_finetune.precision import (PRECISIONS, accelerate_mixed_precision, autocast_dtype, resolve_precision,
                                    trainer_precision_flags)
from vit_finetune.typed import ConfigError

# (CUDA present, bf16 fast on the device) -> what `auto` picks
AUTO = {(False, False): "fp32", (False, True): "bf16", (True, False): "fp16", (True, True): "bf16"}


@pytest.mark.parametrize("cuda, fast_bf16", AUTO)
def test_auto_picks_by_hardware(monkeypatch, cuda, fast_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: fast_bf16)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert resolve_precision("auto") == AUTO[cuda, fast_bf16]
    assert precision.compute_device().type == ("cuda" if cuda else "cpu")


def test_explicit_names_pass_through_and_bad_ones_name_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert [resolve_precision(name) for name in ("bf16", "fp32")] == ["bf16", "fp32"]
    with pytest.raises(ConfigError, match=r"^training.precision fp16: needs a CUDA GPU"):
        resolve_precision("fp16", "training.precision")
    with pytest.raises(ConfigError, match=r"^--precision: must be one of auto, bf16, fp16, fp32, got 'fp64'"):
        resolve_precision("fp64", "--precision")


def test_library_names_of_each_precision():
    resolved = [name for name in PRECISIONS if name != "auto"]
    assert [autocast_dtype(name) for name in resolved] == [torch.bfloat16, torch.float16, None]
    assert all(accelerate_mixed_precision(name) in PrecisionType.list() for name in resolved)
    assert [accelerate_mixed_precision(name) for name in resolved] == ["bf16", "fp16", "no"]
    assert [trainer_precision_flags(name) for name in resolved] == [
        {"bf16": True, "fp16": False}, {"bf16": False, "fp16": True}, {"bf16": False, "fp16": False}]


def test_importing_the_names_does_not_import_torch():
    """The command lines offer `--precision` choices from here and must print --help without torch."""
    code = "import sys, vit_finetune.precision; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr
