"""`engine.compile: true`: the method's networks compiled in place with torch.compile before training
(`fit` calls `compile_networks`), and a probe that says in one line when this machine cannot compile.

Where it wins is measured by `benchmarks/compile.py` (README, Results).
"""

from __future__ import annotations

import torch
from torch import nn

from pretrainlab.models.model import Model

RECOMPILES_PER_NETWORK = 8  # graphs one compiled network may need: crop sizes x grad modes x eval / train


class CompileUnavailableError(ValueError):
    """`engine.compile: true` on a machine where torch.compile does not work: a setting this machine cannot
    honour (a ValueError, so the CLI prints its one-line message like any bad setting)."""


def compile_networks(method: nn.Module) -> list[str]:
    """Compile the networks of `method` in place with `nn.Module.compile`; returns their dotted names.

    Which modules: every child of the method that owns parameters (trainable or not: an EMA teacher's
    networks too), entering containers whose `forward` a step does not call as a whole: a `Model`
    (DINO runs `student.forward_views`, a plain method that groups crops by size and calls backbone,
    neck and heads one by one), `nn.ModuleDict` and `nn.ModuleList`. So DINO compiles the student's and
    the teacher's backbone and head, SimCLR its backbone and projection head, a segmentation method its
    segmentor. Why per network and not the whole step: a step has Python control flow and side effects
    (crop grouping, DINO's center update, tap losses, DACS's mixing and detector) that would break the
    graph or be traced into it, while the networks are pure tensor functions, called the same way by every
    method. Parameter-free modules (losses) stay eager: little compute, nothing to fuse worth the compile.
    A network a method uses through its parts (MAE's encoder: patch embedding, then blocks) is compiled but
    never called as a whole, so it runs eager. Evaluation during training (the kNN callback) calls the compiled
    backbone too: its eval graphs (no grad, eval batch sizes) are compiled at the first evaluation.

    `nn.Module.compile` keeps the module object (no `_orig_mod.` wrapper), so parameter names, `state_dict`
    keys and checkpoints are those of an eager run, and either run loads the other's checkpoints; a
    `deepcopy` or pickle of a compiled module is an eager one. Shapes are static (`dynamic=False`): crop
    sizes and the batch size are fixed during training (the last partial batch is dropped), so each crop
    size gets its own specialised graph instead of a slower shape-generic one.

    Raises:
        CompileUnavailableError: in one line, when torch.compile cannot compile on this machine (no C++ compiler
            for inductor's CPU code, an unsupported Python).
    """
    check_compile_works()
    compiled: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if next(child.parameters(), None) is None:
                continue
            if isinstance(child, Model | nn.ModuleDict | nn.ModuleList):
                visit(child, f"{prefix}{name}.")
            else:
                child.compile(dynamic=False)
                compiled.append(f"{prefix}{name}")

    visit(method, "")
    if not compiled:
        raise ValueError(f"engine.compile: {type(method).__name__} has no network to compile")
    # every compiled module shares the frame dynamo compiles (`Module._call_impl`), so all networks, crop sizes and
    # grad modes count towards one recompile limit (8), past which dynamo silently runs eager: 8 per network
    limit = RECOMPILES_PER_NETWORK * len(compiled)
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    return compiled


def check_compile_works() -> None:
    """Compile and run a two-op function on a CPU tensor: exercises dynamo, inductor and the C++ toolchain.

    Raises:
        CompileUnavailableError: one line naming the cause and the setting to turn off.
    """
    try:
        torch.compile(_probe, dynamic=False)(torch.ones(4))
    except Exception as error:  # noqa: BLE001 -- any failure means compile is unusable here; say why in one line
        cause = " ".join(str(error).split()).split(" Set TORCHDYNAMO_VERBOSE")[0][:300] or "no message"
        raise CompileUnavailableError(
            f"engine.compile: torch.compile is unavailable here ({type(error).__name__}: {cause}); "
            "set engine.compile: false"
        ) from None


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x * 2.0 - 1.0)
