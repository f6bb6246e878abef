"""Colour-jitter settings shared by the view configs of several methods."""

from __future__ import annotations

from pydantic import Field

from pretrainlab.config.component import Strict


class ColourJitterConfig(Strict):
    """DINO's colour distortion (ColorJitter with p `color_jitter_p`, then grayscale), shared by view configs."""

    brightness: float = Field(0.4, ge=0.0, le=1.0)
    contrast: float = Field(0.4, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.1, ge=0.0, le=0.5)
    color_jitter_p: float = Field(0.8, ge=0.0, le=1.0)
    grayscale_p: float = Field(0.2, ge=0.0, le=1.0)
