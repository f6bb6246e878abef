"""Typed configuration schema: one class per component, checked at load.

A YAML file holds only what differs from these defaults. Components are chosen by
`name` (a discriminated union), so a misspelled name or key fails at load with the
dotted path and the closest valid name (see `config/loading.py`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

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
    zero_init_residual: bool = Field(True, description="each residual block starts as its shortcut")
    checkpoint: Path | None = None


BackboneConfig = Annotated[
    Annotated[TimmBackboneConfig, Tag("timm")] | Annotated[SEBNetConfig, Tag("sebnet")],
    name_discriminator("timm"),
]


# ---------------------------------------------------------------------------- necks


class _NeckBase(Strict):
    restore_stride: int | None = Field(
        None,
        ge=1,
        description="bilinearly resize the pooled map to this stride (of the input) before pooling and the heads: "
        "the neck output, or with `name: none` the backbone's final map; null = keep its size",
    )


class NoNeckConfig(_NeckBase):
    """No neck: the heads read the backbone's pooled vector (its final map's average with `restore_stride`)."""

    name: Literal["none"] = "none"


class _PyramidPoolingConfig(_NeckBase):
    branch_channels: int = Field(96, ge=1, description="channels of each pooling branch (DDRNet 128, PIDNet-S 96)")
    out_channels: int | None = Field(
        None, ge=1, description="null = channels of the backbone's finest map (DDRNet: 4p, that of its 1/8 map)"
    )
    count_include_pad: bool = True


class DAPPMConfig(_PyramidPoolingConfig):
    """Deep Aggregation Pyramid Pooling (DDRNet) on the backbone's final map, `models/necks/ppm.py`."""

    name: Literal["dappm"] = "dappm"


class PAPPMConfig(_PyramidPoolingConfig):
    """Parallel Aggregation Pyramid Pooling (PIDNet-S / M) on the backbone's final map, `models/necks/ppm.py`."""

    name: Literal["pappm"] = "pappm"


NeckConfig = Annotated[
    Annotated[NoNeckConfig, Tag("none")] | Annotated[DAPPMConfig, Tag("dappm")] | Annotated[PAPPMConfig, Tag("pappm")],
    name_discriminator("none"),
]


# ---------------------------------------------------------------------------- heads


class LinearHeadConfig(Strict):
    """Classification head: optional BatchNorm, then one linear layer (`models/heads/linear.py`)."""

    name: Literal["linear"] = "linear"
    num_classes: int | None = Field(None, ge=2, description="null = the number of classes of the training set")
    use_bn: bool = False


class ClsHeadConfig(Strict):
    """Classification head with a hidden layer: Linear-BN-activation-dropout-Linear (`models/heads/cls.py`)."""

    name: Literal["cls"] = "cls"
    num_classes: int | None = Field(None, ge=2, description="null = the number of classes of the training set")
    hidden_dim: int = Field(512, ge=1)
    activation: Literal["relu", "gelu"] = "relu"
    use_bn: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


ClassifierHeadConfig = Annotated[
    Annotated[LinearHeadConfig, Tag("linear")] | Annotated[ClsHeadConfig, Tag("cls")], name_discriminator("linear")
]


class MultiTaskHeadConfig(Strict):
    """Several named classification heads on one feature; their losses are summed with `weights`."""

    name: Literal["multi_task"] = "multi_task"
    tasks: dict[str, ClassifierHeadConfig] = Field(min_length=1, description="task name -> head; taps head:<task>")
    weights: dict[str, float] = Field(default_factory=dict, description="task name -> loss weight (default 1)")

    @model_validator(mode="after")
    def _check_task_names(self) -> MultiTaskHeadConfig:
        bad = [task for task in self.tasks if not re.fullmatch(r"\w+", task)]
        if bad:
            raise ValueError(f"task names must be letters, digits or '_', got {bad}")
        unknown = sorted(set(self.weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"weights for unknown tasks {unknown}; tasks: {', '.join(self.tasks)}")
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError(f"task weights must be >= 0, got {self.weights}")
        return self


SupervisedHeadConfig = Annotated[
    Annotated[LinearHeadConfig, Tag("linear")]
    | Annotated[ClsHeadConfig, Tag("cls")]
    | Annotated[MultiTaskHeadConfig, Tag("multi_task")],
    name_discriminator("linear"),
]


# ------------------------------------------------------------------- losses on taps

TAP_PATTERN = r"^(backbone|neck|head:\w+)$"


class KoLeoLossConfig(Strict):
    """KoLeo regulariser (DINOv2) on a tap, computed per global crop (`losses/koleo.py`)."""

    name: Literal["koleo"] = "koleo"
    tap: str = Field("backbone", pattern=TAP_PATTERN, description="backbone | neck | head:<name>")
    weight: float = Field(0.1, ge=0.0)
    eps: float = Field(1e-8, gt=0.0)


class CrossEntropyLossConfig(Strict):
    """Classification cross-entropy on a head tap against the image labels (`method: supervised` only)."""

    name: Literal["cross_entropy"] = "cross_entropy"
    tap: str = Field(pattern=r"^head:\w+$", description="head:<name>: class logits")
    weight: float = Field(1.0, ge=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


TapLossConfig = Annotated[
    Annotated[KoLeoLossConfig, Tag("koleo")] | Annotated[CrossEntropyLossConfig, Tag("cross_entropy")],
    name_discriminator("koleo"),
]
LABELLED_LOSSES = frozenset({"cross_entropy"})


# -------------------------------------------------------------------------- methods


class ColourJitterConfig(Strict):
    """DINO's colour distortion (ColorJitter with p `color_jitter_p`, then grayscale), shared by view configs."""

    brightness: float = Field(0.4, ge=0.0, le=1.0)
    contrast: float = Field(0.4, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.1, ge=0.0, le=0.5)
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.2, ge=0.0, le=1.0)


class MultiCropConfig(ColourJitterConfig):
    """DINO multi-crop views (Caron et al. 2021): arguments of `data.transforms.views.MultiCropViews`."""

    num_global: int = Field(2, ge=2, le=2, description="DINO uses exactly two global crops")
    global_size: int = Field(32, ge=8)
    global_scale: tuple[float, float] = (0.4, 1.0)
    num_local: int = Field(4, ge=0)
    local_size: int = Field(16, ge=4)
    local_scale: tuple[float, float] = (0.05, 0.4)
    global_blur_p: tuple[float, float] = (1.0, 0.1)
    local_blur_p: float = Field(0.5, ge=0.0, le=1.0)
    solarize_p: float = Field(0.2, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotation_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of a random rotation of each crop")
    rotation_degrees: float = Field(180.0, ge=0.0, le=180.0, description="rotation angle ~ U(-d, d)")
    invert_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of the negative image (1 - x)")


class TwoViewConfig(Strict):
    """SimCLR views (Chen et al. 2020): arguments of `data.transforms.views.TwoViews`."""

    size: int = Field(32, ge=8)
    scale: tuple[float, float] = (0.2, 1.0)
    color_strength: float = Field(0.5, ge=0.0, le=1.25, description="jitter (0.8s, 0.8s, 0.8s, 0.2s)")
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    hue: float | None = Field(None, ge=0.0, le=0.5, description="hue jitter; null = 0.2 * color_strength")
    grayscale_p: float = Field(0.3, ge=0.0, le=1.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotation_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of a random rotation of each view")
    rotation_degrees: float = Field(180.0, ge=0.0, le=180.0, description="rotation angle ~ U(-d, d)")
    invert_p: float = Field(0.0, ge=0.0, le=1.0, description="probability of the negative image (1 - x)")


class DINOHeadConfig(Strict):
    """DINO projection head (`models/heads/dino.py`); it reads the neck's pooled output when there is a neck."""

    name: Literal["dino"] = "dino"
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
    losses: list[TapLossConfig] = Field(
        default_factory=list, description="extra losses on taps of the student's global crops, e.g. koleo at neck"
    )


class SimCLRConfig(Strict):
    """SimCLR with NT-Xent (Chen et al. 2020, arXiv:2002.05709)."""

    name: Literal["simclr"] = "simclr"
    views: TwoViewConfig = Field(default_factory=TwoViewConfig)
    temperature: float = Field(0.2, gt=0.0)
    proj_hidden_dim: int = Field(512, ge=1)
    proj_out_dim: int = Field(128, ge=1)


class SupervisedViewConfig(ColourJitterConfig):
    """One augmented view per image: a DINO global crop (`MultiCropViews` with one crop, no solarize)."""

    size: int = Field(32, ge=8)
    scale: tuple[float, float] = (0.2, 1.0)
    blur_p: float = Field(0.0, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)


class SupervisedConfig(Strict):
    """Supervised pretraining: backbone -> neck -> classification head, cross-entropy with label smoothing."""

    name: Literal["supervised"] = "supervised"
    head: SupervisedHeadConfig = Field(default_factory=LinearHeadConfig)
    view: SupervisedViewConfig = Field(default_factory=SupervisedViewConfig)
    label_smoothing: float = Field(0.1, ge=0.0, lt=1.0)
    losses: list[TapLossConfig] = Field(default_factory=list, description="extra losses on taps")


MethodConfig = Annotated[
    Annotated[DINOConfig, Tag("dino")]
    | Annotated[SimCLRConfig, Tag("simclr")]
    | Annotated[SupervisedConfig, Tag("supervised")],
    name_discriminator("dino"),
]


def head_taps(method: DINOConfig | SimCLRConfig | SupervisedConfig) -> list[str]:
    """The `head:<name>` taps a method's model has (a multi-task head has one per task)."""
    if isinstance(method, DINOConfig):
        return ["head:dino"]
    if isinstance(method, SupervisedConfig):
        if isinstance(method.head, MultiTaskHeadConfig):
            return [f"head:{task}" for task in method.head.tasks]
        return [f"head:{method.head.name}"]
    return []


def check_taps(config: Config) -> None:
    """Every loss sits on a tap the model has; label losses only where labels are read; necks only where used."""
    method = config.method
    if isinstance(method, SimCLRConfig):
        if config.neck.name != "none" or config.neck.restore_stride is not None:
            raise ValueError(f"neck: method simclr has no neck; got neck.name={config.neck.name!r}")
        return
    taps = ["backbone", *(["neck"] if config.neck.name != "none" else []), *head_taps(method)]
    for index, loss in enumerate(method.losses):
        key = f"method.losses.{index}"
        if loss.tap not in taps:
            hint = " (neck.name is 'none')" if loss.tap == "neck" else ""
            raise ValueError(f"{key}.tap: no tap '{loss.tap}'{hint}; known taps: {', '.join(taps)}")
        if loss.name in LABELLED_LOSSES and not isinstance(method, SupervisedConfig):
            raise ValueError(f"{key}.name: '{loss.name}' needs labels; method {method.name} has none")


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


# ------------------------------------------------------------------- segmentation


class SegLinearHeadConfig(Strict):
    """DINOv2 linear head: BN + 1×1 conv on the last map or the last `num_maps` maps (`models/heads/seg_linear.py`)."""

    name: Literal["seg_linear"] = "seg_linear"
    num_maps: int = Field(1, ge=1, description="concatenate the last n maps, resized to the first of them")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class SegFormerHeadConfig(Strict):
    """SegFormer all-MLP decoder over all maps (`models/heads/seg_segformer.py`)."""

    name: Literal["segformer"] = "segformer"
    embed_dim: int = Field(256, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


class SegmenterHeadConfig(Strict):
    """Segmenter mask transformer on the last map (`models/heads/seg_segmenter.py`)."""

    name: Literal["segmenter"] = "segmenter"
    embed_dim: int = Field(192, ge=1)
    depth: int = Field(2, ge=1)
    num_heads: int = Field(3, ge=1)
    mlp_ratio: float = Field(4.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class UperHeadConfig(Strict):
    """UPerNet: PPM on the last map + FPN over all maps (`models/heads/seg_uper.py`)."""

    name: Literal["uper"] = "uper"
    channels: int = Field(256, ge=1)
    pool_scales: tuple[int, ...] = (1, 2, 3, 6)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)


SegHeadConfig = Annotated[
    Annotated[SegLinearHeadConfig, Tag("seg_linear")]
    | Annotated[SegFormerHeadConfig, Tag("segformer")]
    | Annotated[SegmenterHeadConfig, Tag("segmenter")]
    | Annotated[UperHeadConfig, Tag("uper")],
    name_discriminator("seg_linear"),
]


class SegFinetuneConfig(Strict):
    """Semantic-segmentation finetuning with MMSegmentation semantics (`eval/segmentation.py`, W5).

    Train pipeline: random resize of `scale` × `ratio_range` → random crop `crop_size`
    (`cat_max_ratio`) → flip → photometric distortion, or with `augment: false` the
    validation resize only. With `mode: frozen` and `augment: false` the backbone maps of
    every training image are computed once and the head trains on them (same result as
    recomputing them, much faster).
    """

    enabled: bool = Field(False, description="run this evaluation as a stage of `pretrainlab study`")
    head: SegHeadConfig = Field(default_factory=SegLinearHeadConfig)
    mode: Literal["frozen", "full"] = Field("frozen", description="frozen: only the head trains; full: everything")
    freeze: list[str] = Field(default_factory=list, description="parameter patterns frozen in any mode")
    root: Path | None = Field(None, description="dataset root; null = <data.root>/segmentation")
    layout: Literal["ade20k", "cityscapes"] = "ade20k"
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    min_lr: float = Field(0.0, ge=0.0)
    poly_power: float = Field(0.9, ge=0.0)
    warmup_iters: int = Field(0, ge=0)
    lr_multipliers: dict[str, float] = Field(
        default_factory=dict, description="lr factor per parameter pattern, e.g. {head: 10.0}; longest match wins"
    )
    weight_decay: float = Field(0.01, ge=0.0, description="not applied to norms, biases, position embeddings")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    iterations: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    crop_size: int = Field(512, ge=1)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = Field(0.75, gt=0.0, le=1.0)
    augment: bool = Field(True, description="random resize / crop / flip / photometric; false = val resize only")
    avg_non_ignore: bool = Field(False, description="loss mean over non-ignored pixels (true) or all pixels (MMSeg)")
    inference: Literal["whole", "slide"] = "whole"
    slide_crop: int = Field(512, ge=1)
    slide_stride: int = Field(341, ge=1)
    size_divisor: int | None = Field(None, ge=1, description="pad validation images to a multiple (14 for ViT/14)")
    eval_batch_size: int = Field(16, ge=1)
    num_examples: int = Field(4, ge=0, description="image / label / prediction triptychs in plots/seg_examples.png")

    @model_validator(mode="after")
    def _check(self) -> SegFinetuneConfig:
        if self.slide_stride > self.slide_crop:
            raise ValueError(f"slide_stride={self.slide_stride} exceeds slide_crop={self.slide_crop} (gaps)")
        if self.ratio_range[0] > self.ratio_range[1] or self.ratio_range[0] <= 0:
            raise ValueError(f"ratio_range must satisfy 0 < min <= max, got {self.ratio_range}")
        if self.warmup_iters >= self.iterations:
            raise ValueError(f"warmup_iters={self.warmup_iters} must be below iterations={self.iterations}")
        return self


class EvalConfig(Strict):
    knn: KNNConfig = Field(default_factory=KNNConfig)
    linear: LinearProbeConfig = Field(default_factory=LinearProbeConfig)
    seg: SegFinetuneConfig = Field(default_factory=SegFinetuneConfig)
    random_init_baseline: bool = True


# ------------------------------------------------------------------------ top level


class Config(Strict):
    """A whole run: what to pretrain, on what, how, and how to evaluate it."""

    name: str = Field("run", pattern=r"^[\w.\-]+$")
    output_root: Path = Path("runs")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    backbone: BackboneConfig = Field(default_factory=TimmBackboneConfig)
    neck: NeckConfig = Field(default_factory=NoNeckConfig)
    method: MethodConfig = Field(default_factory=DINOConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check_consistency(self) -> Config:
        if isinstance(self.method, DINOConfig) and self.method.warmup_teacher_temp_epochs > self.engine.max_epochs:
            raise ValueError(
                f"method.warmup_teacher_temp_epochs={self.method.warmup_teacher_temp_epochs} exceeds "
                f"engine.max_epochs={self.engine.max_epochs}"
            )
        if self.optim.warmup_epochs > self.engine.max_epochs:
            raise ValueError(
                f"optim.warmup_epochs={self.optim.warmup_epochs} exceeds engine.max_epochs={self.engine.max_epochs}"
            )
        check_taps(self)
        return self

    @property
    def run_dir(self) -> Path:
        return self.output_root / self.name
