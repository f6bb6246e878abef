"""`engine.precision: auto` and the shared autocast: bf16 only where the device has bf16 kernels."""

from __future__ import annotations

import logging

import pytest
import torch

from pretrainlab import precision
from pretrainlab.engine.trainer import EngineConfig


@pytest.mark.parametrize("is_fast", [True, False])
def test_auto_is_bf16_only_with_bf16_kernels(monkeypatch: pytest.MonkeyPatch, is_fast: bool) -> None:
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device_type: is_fast)
    assert precision.resolve_precision("auto", "cpu") == ("bf16-mixed" if is_fast else "32")
    with precision.autocast("auto", torch.device("cpu")):
        assert torch.is_autocast_enabled("cpu") is is_fast
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if is_fast else torch.float32)
    with precision.autocast("32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_auto_says_once_what_it_chose(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device_type: False)
    precision._log_auto_choice.cache_clear()
    with caplog.at_level(logging.INFO, logger="pretrainlab.precision"):
        assert EngineConfig(accelerator="cpu").resolved_precision() == "32"
        assert EngineConfig(accelerator="cpu").resolved_precision() == "32"
    assert [record.getMessage() for record in caplog.records] == [
        f"precision auto: 32 (CPU capability {torch.backends.cpu.get_cpu_capability()} without bf16 kernels)"
    ]
    assert EngineConfig(accelerator="cpu", precision="32").resolved_precision() == "32"


def test_explicit_choices_are_kept_and_slow_bf16_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device_type: False)
    precision._warn_slow_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="pretrainlab.precision"):
        assert precision.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
        assert precision.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    assert len(caplog.records) == 1 and "without bf16 kernels (CPU capability" in caplog.text and "auto" in caplog.text
    assert precision.resolve_precision("32", "cpu") == "32"
    assert precision.resolve_precision("16-mixed", "cuda") == "16-mixed"
    with pytest.raises(ValueError, match=r"precision must be one of auto, 32, bf16-mixed, 16-mixed; got 'fp8'"):
        precision.resolve_precision("fp8", "cpu")


def test_the_kernel_check_and_the_config_default() -> None:
    assert precision.has_fast_bf16("cpu") is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.has_fast_bf16("mps") is False
    assert precision.device_type_of("cpu") == "cpu"
    assert precision.device_type_of("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert EngineConfig().precision == "auto" and EngineConfig(precision=32).precision == "32"
