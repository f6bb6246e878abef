"""Necks by name (`none`, `dappm`, `pappm`); a neck reads the backbone's final map."""

from pretrainlab.models.necks.base import NECKS, Neck, NeckConfig, NoNeckConfig, build_neck
from pretrainlab.models.necks.ppm import DAPPM, PAPPM, DAPPMConfig, PAPPMConfig

__all__ = ["DAPPM", "NECKS", "PAPPM", "DAPPMConfig", "Neck", "NeckConfig", "NoNeckConfig", "PAPPMConfig", "build_neck"]
