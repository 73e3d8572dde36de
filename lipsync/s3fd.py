"""S3FD face detector in paddle (as published, so its weights load); its input and output: lipsync.s3fdboxes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .checkpoint import assign_state_dict, read_state_dict
from .s3fdboxes import NMS_THRESHOLD, decode, preprocess
from .types import Frame

L2NORM_EPS = 1e-10

# VGG16 trunk and extra layers as (name, in, out, kernel, stride, padding), in forward order.
TRUNK = (
    ("conv1_1", 3, 64, 3, 1, 1),
    ("conv1_2", 64, 64, 3, 1, 1),
    ("conv2_1", 64, 128, 3, 1, 1),
    ("conv2_2", 128, 128, 3, 1, 1),
    ("conv3_1", 128, 256, 3, 1, 1),
    ("conv3_2", 256, 256, 3, 1, 1),
    ("conv3_3", 256, 256, 3, 1, 1),
    ("conv4_1", 256, 512, 3, 1, 1),
    ("conv4_2", 512, 512, 3, 1, 1),
    ("conv4_3", 512, 512, 3, 1, 1),
    ("conv5_1", 512, 512, 3, 1, 1),
    ("conv5_2", 512, 512, 3, 1, 1),
    ("conv5_3", 512, 512, 3, 1, 1),
    ("fc6", 512, 1024, 3, 1, 3),
    ("fc7", 1024, 1024, 1, 1, 0),
    ("conv6_1", 1024, 256, 1, 1, 0),
    ("conv6_2", 256, 512, 3, 2, 1),
    ("conv7_1", 512, 128, 1, 1, 0),
    ("conv7_2", 128, 256, 3, 2, 1),
)
POOLED_AFTER = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")  # 2x2 max-pool follows these
# L2-normalised sources as (layer, channels, initial scale).
NORMS = (("conv3_3", 256, 10.0), ("conv4_3", 512, 8.0), ("conv5_3", 512, 5.0))
# Detection sources, one per stride, as (trunk layer, head name prefix, channels).
SOURCES = (
    ("conv3_3", "conv3_3_norm", 256),
    ("conv4_3", "conv4_3_norm", 512),
    ("conv5_3", "conv5_3_norm", 512),
    ("fc7", "fc7", 1024),
    ("conv6_2", "conv6_2", 512),
    ("conv7_2", "conv7_2", 256),
)
CLASSES = 2  # background, face
FIRST_CONF_CHANNELS = 4  # the stride-4 head predicts 3 background logits, max-ed out into one
BOX_CHANNELS = 4

PathLike = Union[str, Path]
WEIGHTS_HINT = "S3FD weights are s3fd-619a316812.pth (face_alignment) or PaddleGAN's s3fd_paddle.pdparams."


class L2Norm(nn.Layer):
    """Scales each pixel's channel vector to unit length, then by a learned per-channel weight."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.weight = self.create_parameter([channels], default_initializer=nn.initializer.Constant(scale))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        norm = x.pow(2).sum(axis=1, keepdim=True).sqrt() + L2NORM_EPS
        return x / norm * self.weight.reshape([1, -1, 1, 1])


class S3FD(nn.Layer):
    """S3FD; forward gives the 12 raw maps [cls, reg] x 6 strides, cls with 2 logits (background, face)."""

    def __init__(self) -> None:
        super().__init__()
        for name, cin, cout, kernel, stride, padding in TRUNK:
            self.add_sublayer(name, nn.Conv2D(cin, cout, kernel, stride, padding))
        for name, channels, scale in NORMS:
            self.add_sublayer(f"{name}_norm", L2Norm(channels, scale))
        for index, (_, head, channels) in enumerate(SOURCES):
            conf = FIRST_CONF_CHANNELS if index == 0 else CLASSES
            self.add_sublayer(f"{head}_mbox_conf", nn.Conv2D(channels, conf, 3, 1, 1))
            self.add_sublayer(f"{head}_mbox_loc", nn.Conv2D(channels, BOX_CHANNELS, 3, 1, 1))

    def forward(self, x: paddle.Tensor) -> List[paddle.Tensor]:
        """x: [B, 3, H, W] from preprocess() -> [cls1, reg1, ..., cls6, reg6]."""
        features = {}
        for name, *_ in TRUNK:
            x = F.relu(getattr(self, name)(x))
            features[name] = x
            if name in POOLED_AFTER:
                x = F.max_pool2d(x, 2, 2)
        for name, _, _ in NORMS:
            features[name] = getattr(self, f"{name}_norm")(features[name])
        outputs = []
        for source, head, _ in SOURCES:
            outputs.append(getattr(self, f"{head}_mbox_conf")(features[source]))
            outputs.append(getattr(self, f"{head}_mbox_loc")(features[source]))
        first = outputs[0]
        background = paddle.max(first[:, : FIRST_CONF_CHANNELS - 1], axis=1, keepdim=True)
        outputs[0] = paddle.concat([background, first[:, FIRST_CONF_CHANNELS - 1 :]], axis=1)
        return outputs


def load_s3fd(path: PathLike) -> S3FD:
    """An S3FD in eval mode with weights from a torch .pth (bare state_dict) or a paddle .pdparams."""
    model = S3FD()
    assign_state_dict(model, read_state_dict(path), source=str(path), hint=WEIGHTS_HINT)
    model.eval()
    return model


def detect(model: S3FD, frames: Sequence[Frame], nms_threshold: float = NMS_THRESHOLD) -> List[np.ndarray]:
    """Eager convenience: faces per frame as decode() gives them."""
    with paddle.no_grad():
        outputs = model(paddle.to_tensor(preprocess(frames)))
    return decode([o.numpy() for o in outputs], nms_threshold=nms_threshold)
