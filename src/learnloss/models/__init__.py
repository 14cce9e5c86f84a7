"""Bundled target models: CIFAR-style ResNets (He et al. 2016), a small CNN and an MLP for vector inputs, with
tapping metadata for the loss prediction module of Yoo & Kweon (CVPR 2019)."""

from __future__ import annotations

from learnloss.models.mlp import MLP
from learnloss.models.registry import (
    available_models, build_model, default_taps, embedding_layer, input_dims, model_builder,
)
from learnloss.models.resnet import RESNET_DEPTHS, BasicBlock, Bottleneck, ResNet, resnet
from learnloss.models.small_cnn import SmallCNN

__all__ = [
    "RESNET_DEPTHS",
    "BasicBlock",
    "Bottleneck",
    "MLP",
    "ResNet",
    "SmallCNN",
    "available_models",
    "build_model",
    "default_taps",
    "embedding_layer",
    "input_dims",
    "model_builder",
    "resnet",
]
