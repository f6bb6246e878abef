"""Backbones by name; every one implements the Backbone API of `base.py`.

Each backbone registers its config and builder in its own file; importing this package
registers the built-in ones.
"""

from pretrainlab.models.backbones.base import BACKBONES, Backbone, BackboneConfig, Features, build_backbone
from pretrainlab.models.backbones.sebnet import SEBNet, SEBNetConfig
from pretrainlab.models.backbones.timm_backbone import TimmBackbone, TimmBackboneConfig

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneConfig",
    "Features",
    "SEBNet",
    "SEBNetConfig",
    "TimmBackbone",
    "TimmBackboneConfig",
    "build_backbone",
]
