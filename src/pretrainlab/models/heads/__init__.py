"""Heads by name: on a pooled feature (`dino`, `linear`, `cls`, `multi_task`; registry `HEADS`)
and on dense maps for segmentation (`seg_linear`, `segformer`, `segmenter`, `uper`, `mask2former`, `knet`;
`SEG_HEADS`)."""

from pretrainlab.models.heads.base import HEADS, ClassifierHeadConfig, HeadConfig, build_head
from pretrainlab.models.heads.cls import ClsHead, ClsHeadConfig
from pretrainlab.models.heads.dino import DINOHead, DINOHeadConfig
from pretrainlab.models.heads.linear import LinearHead, LinearHeadConfig
from pretrainlab.models.heads.multi_task import MultiTaskHead, MultiTaskHeadConfig
from pretrainlab.models.heads.seg_base import SEG_HEADS, SegHead, SegHeadConfig, build_seg_head
from pretrainlab.models.heads.seg_knet import KNetHead, KNetHeadConfig
from pretrainlab.models.heads.seg_linear import SegLinearHead, SegLinearHeadConfig
from pretrainlab.models.heads.seg_mask2former import Mask2FormerHead, Mask2FormerHeadConfig
from pretrainlab.models.heads.seg_segformer import SegFormerHead, SegFormerHeadConfig
from pretrainlab.models.heads.seg_segmenter import SegmenterHead, SegmenterHeadConfig
from pretrainlab.models.heads.seg_uper import UperHead, UperHeadConfig

__all__ = [
    "HEADS", "SEG_HEADS", "ClassifierHeadConfig", "ClsHead", "ClsHeadConfig", "DINOHead", "DINOHeadConfig",
    "HeadConfig", "KNetHead", "KNetHeadConfig", "LinearHead", "LinearHeadConfig", "Mask2FormerHead",
    "Mask2FormerHeadConfig", "MultiTaskHead", "MultiTaskHeadConfig", "SegFormerHead",
    "SegFormerHeadConfig", "SegHead", "SegHeadConfig", "SegLinearHead", "SegLinearHeadConfig", "SegmenterHead",
    "SegmenterHeadConfig", "UperHead", "UperHeadConfig", "build_head", "build_seg_head",
]  # fmt: skip
