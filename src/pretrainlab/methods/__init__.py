"""Methods on the engine: pretraining (dino, simclr, supcon, supervised; registry `METHODS`) and
segmentation finetuning (`segmentation.SegFinetune`, run by the study's `seg` phase)."""

from pretrainlab.methods.base import METHODS, Method, MethodConfig, build_method
from pretrainlab.methods.dino import DINO, DINOConfig
from pretrainlab.methods.simclr import SimCLR, SimCLRConfig
from pretrainlab.methods.supcon import SupCon, SupConConfig
from pretrainlab.methods.supervised import Supervised, SupervisedConfig

__all__ = ["DINO", "METHODS", "DINOConfig", "Method", "MethodConfig", "SimCLR", "SimCLRConfig", "SupCon",
           "SupConConfig", "Supervised", "SupervisedConfig", "build_method"]  # fmt: skip
