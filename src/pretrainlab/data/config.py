"""The data section of a config: where the images are, how they become tensors, batch sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pretrainlab.config.component import Strict
from pretrainlab.data.images import check_channel_policy, default_mean_std


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
    classification_format: Literal["rgb8", "gray16"] = Field(
        "rgb8", description="rgb8: 8-bit RGB PNGs; gray16: 16-bit single-channel PNGs (thermal-like)"
    )


class DataConfig(Strict):
    root: Path = Path("data/synthetic")
    synthetic: SyntheticDataConfig | None = Field(
        default_factory=SyntheticDataConfig,
        description="generate the synthetic dataset at `root` if it is missing; null for real data",
    )
    train_dir: str = "classification/train"
    val_dir: str = "classification/val"
    image_size: int = Field(32, ge=8, description="evaluation image size (kNN features)")
    channels: Literal[1, 3, 4] = Field(3, description="channels the model receives")
    mean: tuple[float, ...] | None = Field(None, description="per channel, of 0..1 pixels; null = default for `channels`")
    std: tuple[float, ...] | None = Field(None, description="per channel; null = default for `channels`")
    channel_policy: str = Field("copy", description="copy (1 -> 3 channels by repetition) | pick:<i> (channel i)")
    uint16_scaling: Literal["full", "minmax", "window"] = Field("full", description="16-bit files to 8 bits")
    intensity_window: tuple[int, int] | None = Field(None, description="with uint16_scaling window: raw (low, high)")
    in_memory: bool = Field(True, description="decode all images once (small images only)")
    num_workers: int = Field(0, ge=0)
    batch_size: int = Field(256, ge=1, description="per-device training batch size")
    eval_batch_size: int = Field(512, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        check_channel_policy(self.channel_policy)
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.channels:
                raise ValueError(f"{key} has {len(value)} values but channels={self.channels}; give one per channel")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.uint16_scaling == "window":
            if self.intensity_window is None or self.intensity_window[0] >= self.intensity_window[1]:
                raise ValueError(f"uint16_scaling window needs intensity_window (low, high), low < high; got "
                                 f"{self.intensity_window}")  # fmt: skip
        return self

    @property
    def mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) of length `channels`: the configured ones or the defaults for the channel count."""
        default_mean, default_std = default_mean_std(self.channels)
        return self.mean or default_mean, self.std or default_std

    def read_options(self) -> dict[str, object]:
        """Keyword arguments of `read_image` / `ImageFolderDataset` for these settings."""
        return {"channels": self.channels, "channel_policy": self.channel_policy,
                "uint16_scaling": self.uint16_scaling, "intensity_window": self.intensity_window}  # fmt: skip
