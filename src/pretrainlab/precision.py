"""Which precision a run computes in, and the autocast context of it.

`engine.precision: auto` (the default, and what the shipped configs say) is bf16 autocast where the device
has bf16 kernels and fp32 where it has not:

- a CUDA GPU that supports bf16 (`torch.cuda.is_bf16_supported`);
- a CPU on which oneDNN runs bf16 (AVX-512, natively with AVX512-BF16 or AMX).

On a CPU without them (AVX2 only) torch falls back to a generic GEMM for bf16 and a bf16 step is many
times slower than fp32, not faster. Measured on an idle 2-core AVX2 EPYC VM, torch 2.14.1: a 1024² matmul
178 GFLOP/s in fp32 and 1.0 in bf16; a small conv net's training step 0.11 s in fp32 and 1.95 s under
bf16 autocast. An explicit `bf16-mixed` is kept there, with a warning that says so.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")


@functools.cache
def has_fast_bf16(device_type: str) -> bool:
    """True when `device_type` ("cpu" or "cuda") runs bf16 matmuls and convolutions in hardware kernels."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def device_type_of(accelerator: str) -> str:
    """The torch device type an `engine.accelerator` trains on: cuda for gpu (or auto with a GPU), else cpu."""
    uses_gpu = accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())
    return "cuda" if uses_gpu else "cpu"


def resolve_precision(precision: str, device_type: str) -> str:
    """`precision` as run on `device_type`: `auto` becomes bf16-mixed where bf16 is fast, else 32; an
    explicit bf16-mixed without bf16 kernels is kept and warned about; 32 and 16-mixed are kept."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    is_fast = has_fast_bf16(device_type)
    if precision == "auto":
        _log_auto_choice(device_type, is_fast)
        return "bf16-mixed" if is_fast else "32"
    if precision == "bf16-mixed" and not is_fast:
        _warn_slow_bf16(device_type)
    return precision


def _kernels(device_type: str) -> str:
    return f"CPU capability {torch.backends.cpu.get_cpu_capability()}" if device_type == "cpu" else device_type


@functools.cache
def _log_auto_choice(device_type: str, is_fast: bool) -> None:
    log.info("precision auto: %s (%s %s bf16 kernels)", "bf16-mixed" if is_fast else "32", _kernels(device_type),
             "with" if is_fast else "without")  # fmt: skip


@functools.cache
def _warn_slow_bf16(device_type: str) -> None:
    log.warning("precision bf16-mixed without bf16 kernels (%s): bf16 is emulated and slower than fp32; "
                "`engine.precision: auto` would compute in fp32 here", _kernels(device_type))


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """bf16 autocast when `precision` resolves to bf16-mixed on `device`, a disabled context otherwise."""
    is_bf16 = resolve_precision(precision, device.type) == "bf16-mixed"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=is_bf16)
