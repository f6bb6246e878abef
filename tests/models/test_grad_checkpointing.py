"""`backbone.grad_checkpointing`: the same gradients with the blocks recomputed in backward, on every path that
runs a timm ViT's blocks (forward, DINO's multi-crop step, MAE's masked encoder, `last_blocks_tokens`, frozen
blocks, bf16 autocast); eval and `no_grad` forwards untouched; refused on a CNN."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import timm.layers
import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from pretrainlab.config import load_config
from pretrainlab.config.loading import ConfigError
from pretrainlab.engine.schedules import StepValues
from pretrainlab.methods.base import build_method
from pretrainlab.methods.dino import DINO
from pretrainlab.methods.mae import MAE
from pretrainlab.models.backbones import timm_backbone
from pretrainlab.models.backbones.base import build_backbone
from pretrainlab.models.backbones.timm_backbone import TimmBackbone, TimmBackboneConfig
from pretrainlab.models.heads.dino import DINOHead

ARCH = "vit_tiny_patch16_224"
DEPTH, WIDTH, SIZE, PATCH = 3, 32, 32, 8
TINY_VIT = {"img_size": SIZE, "patch_size": PATCH, "embed_dim": WIDTH, "depth": DEPTH, "num_heads": 2}
STEP = StepValues(iteration=0, epoch=0, lr=0.0, weight_decay=0.0, values={"teacher_temp": 0.04})


def tiny_vit(grad_checkpointing: bool, drop_path_rate: float = 0.0) -> TimmBackbone:
    """The same weights for both settings (seeded), built through the config as a run builds it."""
    torch.manual_seed(0)
    config = TimmBackboneConfig(arch=ARCH, grad_checkpointing=grad_checkpointing, drop_path_rate=drop_path_rate,
                                **TINY_VIT)  # fmt: skip
    backbone = build_backbone(config)
    assert isinstance(backbone, TimmBackbone) and backbone.use_grad_checkpointing == grad_checkpointing
    return backbone


def record_block_calls(blocks: nn.Module) -> list[int]:
    """Appends a block's index on each of its forward calls (a recompute in backward is a second call). A pre-hook:
    the recompute stops as soon as it has rebuilt what backward needs, before the block's forward hooks."""
    calls: list[int] = []
    for index, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda _module, _args, index=index: calls.append(index))
    return calls


def gradients(module: nn.Module, loss: Tensor) -> dict[str, Tensor]:
    loss.backward()
    return {name: param.grad for name, param in module.named_parameters() if param.grad is not None}


def assert_same_gradients(checkpointed: dict[str, Tensor], plain: dict[str, Tensor]) -> None:
    assert checkpointed.keys() == plain.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-6, atol=1e-7, msg=name)


def compare(run: Callable[[bool], tuple[dict[str, Tensor], list[int]]], forwards: int, recomputed: int = DEPTH) -> None:
    """`run(grad_checkpointing)` -> (gradients, block calls) of one forward + backward over `forwards` batches:
    equal gradients, and with checkpointing `recomputed` blocks per forward run a second time in backward."""
    plain, plain_calls = run(False)
    checkpointed, checkpointed_calls = run(True)
    assert_same_gradients(checkpointed, plain)
    assert len(plain_calls) == forwards * DEPTH
    assert len(checkpointed_calls) == forwards * (DEPTH + recomputed)


def test_normal_forward_gives_the_same_gradients_with_drop_path() -> None:
    images = torch.randn(4, 3, SIZE, SIZE)

    def run(grad_checkpointing: bool) -> tuple[dict[str, Tensor], list[int]]:
        backbone = tiny_vit(grad_checkpointing, drop_path_rate=0.2).train()
        calls = record_block_calls(backbone.model.blocks)
        torch.manual_seed(1)  # the same drop-path draws; the recompute replays them
        features = backbone(images)
        loss = features.pooled.square().sum() + features.maps[0].sin().mean()
        return gradients(backbone, loss), calls

    compare(run, forwards=1)


def test_blocks_keep_only_their_inputs_for_backward() -> None:
    """What autograd stores during the forward: with checkpointing only what lies outside the blocks."""
    images = torch.randn(4, 3, SIZE, SIZE)

    def saved_bytes(grad_checkpointing: bool) -> int:
        backbone = tiny_vit(grad_checkpointing).train()
        total = [0]

        def pack(tensor: Tensor) -> Tensor:
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            backbone(images).pooled.sum().backward()
        return total[0]

    assert saved_bytes(True) < saved_bytes(False) / 4


def test_dino_multi_crop_step_gives_the_same_gradients() -> None:
    """Two 32-px global and two 16-px local crops (two sizes: `dynamic_img_size`, one forward per size);
    the teacher runs in eval mode under no_grad and is not checkpointed."""
    generator = torch.Generator().manual_seed(2)
    views = [torch.randn(3, 3, size, size, generator=generator) for size in (SIZE, SIZE, SIZE // 2, SIZE // 2)]

    def run(grad_checkpointing: bool) -> tuple[dict[str, Tensor], list[int]]:
        backbone = tiny_vit(grad_checkpointing)
        method = DINO(backbone, DINOHead(WIDTH, 64, hidden_dim=32, bottleneck_dim=16), num_global=2).train()
        calls = record_block_calls(method.student.backbone.model.blocks)
        teacher_calls = record_block_calls(method.teacher.backbone.model.blocks)
        loss = method.training_step((views, torch.zeros(3)), STEP)["loss"]
        grads = gradients(method, loss)
        assert len(teacher_calls) == DEPTH  # one forward of the global crops, nothing recomputed
        return grads, calls

    compare(run, forwards=2)  # one student forward per crop size


@pytest.mark.parametrize("mask_method", ["patches", "segments"])
def test_mae_masked_encoder_gives_the_same_gradients(mask_method: str) -> None:
    """MAE embeds the kept patches itself and runs the blocks through `run_blocks`."""
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, SIZE, SIZE, generator=generator)
    hidden = torch.zeros(2, 1, SIZE, SIZE)
    hidden[:, :, : SIZE // 2] = 1.0
    noise = torch.rand(2, (SIZE // PATCH) ** 2, generator=generator)
    batch = (images, hidden, torch.tensor([True, False]), noise)

    def run(grad_checkpointing: bool) -> tuple[dict[str, Tensor], list[int]]:
        overrides = {"backbone.arch": ARCH, **{f"backbone.{key}": value for key, value in TINY_VIT.items()},
                     "backbone.grad_checkpointing": grad_checkpointing, "method.name": "mae",
                     "method.mask_method": mask_method, "method.masks.root": "masks", "method.decoder.preset": "tiny",
                     "study.phases": [{"name": "pretrain"}]}  # fmt: skip
        torch.manual_seed(0)
        method = build_method(load_config(None, [f"{key}={value}" for key, value in overrides.items()])).train()
        assert isinstance(method, MAE) and method.encoder.use_grad_checkpointing == grad_checkpointing
        calls = record_block_calls(method.encoder.model.blocks)
        return gradients(method, method.training_step(batch, STEP)["loss"]), calls

    compare(run, forwards=1)


def test_last_blocks_tokens_give_the_same_gradients() -> None:
    images = torch.randn(2, 3, SIZE, SIZE)

    def run(grad_checkpointing: bool) -> tuple[dict[str, Tensor], list[int]]:
        backbone = tiny_vit(grad_checkpointing).train()
        calls = record_block_calls(backbone.model.blocks)
        cls, patch_tokens = backbone.last_blocks_tokens(images, 2)  # (B, 2, D), (B, N, D)
        return gradients(backbone, cls.square().sum() + patch_tokens.mean()), calls

    compare(run, forwards=1)


def test_frozen_embedding_and_first_block_still_give_the_later_blocks_gradients() -> None:
    """Behind a frozen embedding and block 0 the checkpointed blocks' inputs need no gradient; the
    non-reentrant checkpoints still give their parameters one. Block 0 saves nothing, so it is not recomputed."""
    images = torch.randn(2, 3, SIZE, SIZE)
    frozen = ("model.patch_embed.", "model.pos_embed", "model.cls_token", "model.blocks.0.")

    def run(grad_checkpointing: bool) -> tuple[dict[str, Tensor], list[int]]:
        backbone = tiny_vit(grad_checkpointing).train()
        for name, param in backbone.named_parameters():
            param.requires_grad_(not name.startswith(frozen))
        calls = record_block_calls(backbone.model.blocks)
        grads = gradients(backbone, backbone(images).pooled.square().sum())
        assert {name.split(".")[2] for name in grads if name.startswith("model.blocks.")} == {"1", "2"}
        return grads, calls

    compare(run, forwards=1, recomputed=DEPTH - 1)


def test_bf16_autocast_gives_the_same_gradients() -> None:
    """The recompute runs under the forward's autocast state, so it repeats the same bf16 operations."""
    images = torch.randn(4, 3, SIZE, SIZE)

    def run(grad_checkpointing: bool) -> tuple[dict[str, Tensor], list[int]]:
        backbone = tiny_vit(grad_checkpointing).train()
        calls = record_block_calls(backbone.model.blocks)
        dtypes: list[torch.dtype] = []
        backbone.model.blocks[0].mlp.fc1.register_forward_hook(lambda _module, _args, out: dtypes.append(out.dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = backbone(images)
        assert dtypes == [torch.bfloat16]  # the blocks' matmuls run in bf16 (the final norm returns fp32)
        return gradients(backbone, features.pooled.float().square().sum()), calls

    compare(run, forwards=1)


@contextmanager
def count_checkpoints(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts every `torch.utils.checkpoint.checkpoint` entered, by timm or by `run_blocks`."""
    entered: list[int] = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args: object, **kwargs: object) -> object:
        entered.append(1)
        return original(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(torch.utils.checkpoint, "checkpoint", counting)
        patch.setattr(timm_backbone, "checkpoint", counting)
        yield entered


def test_eval_and_no_grad_forwards_are_not_checkpointed(monkeypatch: pytest.MonkeyPatch) -> None:
    images = torch.randn(2, 3, SIZE, SIZE)
    plain, checkpointed = tiny_vit(False), tiny_vit(True)
    tokens = torch.randn(2, 1 + (SIZE // PATCH) ** 2, WIDTH)
    with count_checkpoints(monkeypatch) as entered:
        checkpointed.train()
        checkpointed(images).pooled.sum().backward()
        assert len(entered) == DEPTH  # the counter sees the armed path
        entered.clear()
        for mode in ("eval", "no_grad"):
            plain.train(mode == "no_grad")
            checkpointed.train(mode == "no_grad")
            with torch.set_grad_enabled(mode == "eval"):
                expected, features = plain(images), checkpointed(images)
                run_blocks = checkpointed.run_blocks(tokens)
                cls, _ = checkpointed.last_blocks_tokens(images, 2)
            torch.testing.assert_close(features.pooled, expected.pooled, rtol=0, atol=0)
            torch.testing.assert_close(run_blocks, plain.run_blocks(tokens), rtol=0, atol=0)
            torch.testing.assert_close(cls, plain.last_blocks_tokens(images, 2)[0], rtol=0, atol=0)
            assert entered == [], mode


def test_config_refuses_a_cnn_and_names_it() -> None:
    overrides = ["backbone.name=timm", "backbone.arch=resnet18", "backbone.grad_checkpointing=true"]
    with pytest.raises(ConfigError, match=r"grad_checkpointing.*'resnet18' \(resnet\) is not a ViT"):
        load_config(None, overrides)
    with pytest.raises(ValueError, match=r"'convnext_atto' \(convnext\) is not a ViT"):
        TimmBackbone("convnext_atto", grad_checkpointing=True)


def test_reentrant_checkpoints_are_refused() -> None:
    was_reentrant = timm.layers.use_reentrant_ckpt()
    timm.layers.set_reentrant_ckpt(True)
    try:
        with pytest.raises(ValueError, match="TIMM_REENTRANT_CKPT"):
            TimmBackbone(ARCH, grad_checkpointing=True, **TINY_VIT)
    finally:
        timm.layers.set_reentrant_ckpt(was_reentrant)
