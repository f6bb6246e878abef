"""Importing this module registers every built-in component (one import line per component file).

A new backbone, neck, head, loss, method or phase is one new file that registers itself,
plus one line here (or an import anywhere before the config is loaded, e.g. in a test or a
plugin module).
"""

import pretrainlab.methods.dino
import pretrainlab.methods.mae
import pretrainlab.methods.simclr
import pretrainlab.methods.supcon
import pretrainlab.methods.supervised
import pretrainlab.methods.tap_losses
import pretrainlab.models.backbones.mit
import pretrainlab.models.backbones.sebnet
import pretrainlab.models.backbones.timm_backbone
import pretrainlab.models.heads.cls
import pretrainlab.models.heads.dino
import pretrainlab.models.heads.linear
import pretrainlab.models.heads.multi_task
import pretrainlab.models.heads.seg_linear
import pretrainlab.models.heads.seg_segformer
import pretrainlab.models.heads.seg_segmenter
import pretrainlab.models.heads.seg_uper
import pretrainlab.models.necks.ppm
import pretrainlab.study.adapt_phase
import pretrainlab.study.knn_phase
import pretrainlab.study.linear_phase
import pretrainlab.study.pretrain_phase
import pretrainlab.study.reconstruct_phase
import pretrainlab.study.robustness_phase
import pretrainlab.study.seg_phase  # noqa: F401
