"""Typed configuration schema: one class per component, checked at load.

A YAML file holds only what differs from these defaults. Components are chosen by
`name` (a discriminated union), so a misspelled name or key fails at load with the
dotted path and the closest valid name (see `config/loading.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def name_discriminator(default: str):
    """Discriminator choosing a union member by `name`, `default` when the mapping has none."""

    def pick(value: Any) -> str:
        if isinstance(value, dict):
            return value.get("name", default)
        return getattr(value, "name", default)

    return Discriminator(pick)


class Strict(BaseModel):
    """Base of every config class: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- data


class SyntheticDataConfig(Strict):
    """Parameters of `pretrainlab data synth`, used when the data root is missing."""

    seed: int = 0
    num_classes: int = Field(8, ge=2, le=10)
    image_size: int = Field(32, ge=16)
    num_train: int = Field(20000, ge=10)
    num_val: int = Field(2000, ge=10)
    seg_image_size: int = Field(64, ge=32)
    num_seg_train: int = Field(1000, ge=1)
    num_seg_val: int = Field(200, ge=1)


class DataConfig(Strict):
    root: Path = Path("data/synthetic")
    synthetic: SyntheticDataConfig | None = Field(
        default_factory=SyntheticDataConfig,
        description="generate the synthetic dataset at `root` if it is missing; null for real data",
    )
    train_dir: str = "classification/train"
    val_dir: str = "classification/val"
    image_size: int = Field(32, ge=8, description="evaluation image size (kNN features)")
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    in_memory: bool = Field(True, description="decode all images once (small images only)")
    num_workers: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=2, description="per-device training batch size")
    eval_batch_size: int = Field(512, ge=1)


# ------------------------------------------------------------------------ backbones


class TimmBackboneConfig(Strict):
    """Any timm model by name (`vit_*`, `convnext_*`, `resnet*`, ...)."""

    name: Literal["timm"] = "timm"
    arch: str = "resnet18"
    pretrained: Literal[False] = Field(False, description="weights are never downloaded; use `checkpoint`")
    checkpoint: Path | None = None
    in_chans: int = Field(3, ge=1)
    img_size: int | None = Field(None, description="ViTs: input size the position embeddings are built for")
    patch_size: int | None = Field(None, description="ViTs: patch size override")
    small_input_stem: bool = Field(
        False, description="ResNets: 3x3 stride-1 stem without max-pool (CIFAR-style, for 32-px images)"
    )
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra timm.create_model keyword arguments")


class SEBNetConfig(Strict):
    """Dual-resolution real-time segmentation CNN (DDRNet / PIDNet family), `models/backbones/sebnet.py`."""

    name: Literal["sebnet"] = "sebnet"
    size: Literal["s", "m", "l"] = "s"
    in_chans: int = Field(3, ge=1)
    checkpoint: Path | None = None


BackboneConfig = Annotated[
    Annotated[TimmBackboneConfig, Tag("timm")] | Annotated[SEBNetConfig, Tag("sebnet")],
    name_discriminator("timm"),
]


# -------------------------------------------------------------------------- methods


class MultiCropConfig(Strict):
    """DINO multi-crop views (Caron et al. 2021): arguments of `data.transforms.views.MultiCropViews`."""

    num_global: int = Field(2, ge=2, le=2, description="DINO uses exactly two global crops")
    global_size: int = Field(32, ge=8)
    global_scale: tuple[float, float] = (0.4, 1.0)
    num_local: int = Field(4, ge=0)
    local_size: int = Field(16, ge=4)
    local_scale: tuple[float, float] = (0.05, 0.4)
    brightness: float = Field(0.4, ge=0.0, le=1.0)
    contrast: float = Field(0.4, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.1, ge=0.0, le=0.5)
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.2, ge=0.0, le=1.0)
    global_blur_p: tuple[float, float] = (1.0, 0.1)
    local_blur_p: float = Field(0.5, ge=0.0, le=1.0)
    solarize_p: float = Field(0.2, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)


class TwoViewConfig(Strict):
    """SimCLR views (Chen et al. 2020): arguments of `data.transforms.views.TwoViews`."""

    size: int = Field(32, ge=8)
    scale: tuple[float, float] = (0.2, 1.0)
    color_strength: float = Field(0.5, ge=0.0, le=1.25, description="jitter (0.8s, 0.8s, 0.8s, 0.2s)")
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.3, ge=0.0, le=1.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)


class DINOHeadConfig(Strict):
    hidden_dim: int = Field(2048, ge=1)
    bottleneck_dim: int = Field(256, ge=1)
    out_dim: int = Field(65536, ge=2)
    num_layers: int = Field(3, ge=1)
    use_bn: bool = False
    norm_last_layer: bool = True


class DINOConfig(Strict):
    """DINO self-distillation (Caron et al. 2021, arXiv:2104.14294)."""

    name: Literal["dino"] = "dino"
    head: DINOHeadConfig = Field(default_factory=DINOHeadConfig)
    crops: MultiCropConfig = Field(default_factory=MultiCropConfig)
    student_temp: float = Field(0.1, gt=0.0)
    teacher_temp: float = Field(0.04, gt=0.0, description="final teacher temperature")
    warmup_teacher_temp: float = Field(0.04, gt=0.0)
    warmup_teacher_temp_epochs: int = Field(0, ge=0)
    momentum_teacher: float = Field(0.996, ge=0.0, le=1.0, description="base EMA momentum, cosine to 1")
    center_momentum: float = Field(0.9, ge=0.0, lt=1.0)
    freeze_last_layer_epochs: int = Field(1, ge=0)


class SimCLRConfig(Strict):
    """SimCLR with NT-Xent (Chen et al. 2020, arXiv:2002.05709)."""

    name: Literal["simclr"] = "simclr"
    views: TwoViewConfig = Field(default_factory=TwoViewConfig)
    temperature: float = Field(0.2, gt=0.0)
    proj_hidden_dim: int = Field(512, ge=1)
    proj_out_dim: int = Field(128, ge=1)


MethodConfig = Annotated[
    Annotated[DINOConfig, Tag("dino")] | Annotated[SimCLRConfig, Tag("simclr")], name_discriminator("dino")
]


# ------------------------------------------------------------------ optimisation


class OptimConfig(Strict):
    name: Literal["adamw", "sgd", "lars"] = "adamw"
    lr: float = Field(5e-4, gt=0.0, description="peak lr for a batch of 256; scaled linearly by batch/256")
    min_lr: float = Field(1e-6, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0)
    weight_decay: float = Field(0.04, ge=0.0)
    weight_decay_end: float = Field(0.4, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD / LARS momentum")
    clip_grad: float | None = Field(3.0, gt=0.0, description="per-parameter grad-norm clip (DINO); null = off")
    scale_lr_with_batch: bool = True


class EngineConfig(Strict):
    max_epochs: int = Field(10, ge=1)
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "bf16-mixed"
    accelerator: Literal["cpu", "gpu", "auto"] = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; null = torch default")
    channels_last: bool = Field(False, description="NHWC memory format (faster convolutions on CPU)")
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True
    limit_train_batches: int | float | None = Field(None, description="for smoke tests")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value  # YAML reads `precision: 32` as an int


class KNNConfig(Strict):
    ks: list[int] = Field(default_factory=lambda: [10, 20, 100, 200])
    temperature: float = Field(0.07, gt=0.0)
    every_n_epochs: int = Field(0, ge=0, description="evaluate during pretraining every K epochs; 0 = end only")
    max_train_samples: int | None = Field(None, ge=1, description="train bank subset for periodic evaluations")


class LinearProbeConfig(Strict):
    """Linear probe on frozen, standardised pooled features (`eval/linear_probe.py`), after pretraining."""

    enabled: bool = False
    max_iter: int = Field(100, ge=1, description="L-BFGS iterations (full batch)")
    weight_decay: float = Field(1e-4, ge=0.0, description="L2 penalty on the weights, added to the mean loss")


class EvalConfig(Strict):
    knn: KNNConfig = Field(default_factory=KNNConfig)
    linear: LinearProbeConfig = Field(default_factory=LinearProbeConfig)
    random_init_baseline: bool = True


# ------------------------------------------------------------------------ top level


class Config(Strict):
    """A whole run: what to pretrain, on what, how, and how to evaluate it."""

    name: str = Field("run", pattern=r"^[\w.\-]+$")
    output_root: Path = Path("runs")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=TimmBackboneConfig)
    method: MethodConfig = Field(default_factory=DINOConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> Config:
        if isinstance(self.method, DINOConfig):
            if self.method.warmup_teacher_temp_epochs > self.engine.max_epochs:
                raise ValueError(
                    f"method.warmup_teacher_temp_epochs={self.method.warmup_teacher_temp_epochs} exceeds "
                    f"engine.max_epochs={self.engine.max_epochs}"
                )
        if self.optim.warmup_epochs > self.engine.max_epochs:
            raise ValueError(
                f"optim.warmup_epochs={self.optim.warmup_epochs} exceeds engine.max_epochs={self.engine.max_epochs}"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_root / self.name
