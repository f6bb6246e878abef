"""Small reusable building blocks shared by the model zoo (one block per file)."""

from pretrainlab.models.layers.conv_bn_act import BnActConv, ConvBnAct
from pretrainlab.models.layers.residual import BasicBlock, Bottleneck

__all__ = ["BasicBlock", "BnActConv", "Bottleneck", "ConvBnAct"]
