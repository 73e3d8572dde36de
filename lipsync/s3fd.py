"""S3FD face detector in paddle (as published, so its weights load), with the reference's pre- and post-processing."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

from .checkpoint import assign_state_dict, read_state_dict
from .types import Frame

# The reference subtracts this from RGB pixels (it is the Caffe BGR mean, applied after the BGR->RGB flip).
MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
STRIDES = (4, 8, 16, 32, 64, 128)  # px per feature cell of each detection scale
ANCHOR_PER_STRIDE = 4  # square anchor side = 4 * stride
VARIANCES = (0.1, 0.2)  # SSD box coding: centre offsets, log sizes
CANDIDATE_THRESHOLD = 0.05  # face probability for an anchor to be decoded at all
NMS_THRESHOLD = 0.3  # IoU above which a lower-scoring box is suppressed
KEEP_THRESHOLD = 0.5  # face probability a box needs to be reported
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


def preprocess(frames: Sequence[Frame]) -> np.ndarray:
    """BGR uint8 frames of one size -> [B, 3, H, W] float32: RGB minus MEAN, as the reference feeds S3FD."""
    if not frames:
        raise ValueError("preprocess needs at least one frame")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"S3FD batches need frames of one size, got {sorted(shapes)}")
    rgb = np.stack(frames)[..., ::-1].astype(np.float32)
    return np.ascontiguousarray((rgb - MEAN).transpose(0, 3, 1, 2))


def detect(model: S3FD, frames: Sequence[Frame], nms_threshold: float = NMS_THRESHOLD) -> List[np.ndarray]:
    """Eager convenience: faces per frame as decode() gives them."""
    with paddle.no_grad():
        outputs = model(paddle.to_tensor(preprocess(frames)))
    return decode([o.numpy() for o in outputs], nms_threshold=nms_threshold)


def decode(
    outputs: Sequence[np.ndarray], score_threshold: float = KEEP_THRESHOLD, nms_threshold: float = NMS_THRESHOLD
) -> List[np.ndarray]:
    """Raw S3FD maps -> per image an (N, 5) float32 array x1, y1, x2, y2, score, best first, after NMS."""
    scales = [_scale_boxes(outputs[2 * i], outputs[2 * i + 1], stride) for i, stride in enumerate(STRIDES)]
    found = []
    for image in range(len(outputs[0])):
        boxes = np.concatenate([per_image[image] for per_image in scales])
        # NMS is greedy by descending score, so boxes at or below the keep threshold can never suppress
        # one above it: dropping them first gives the reference's result with far fewer boxes.
        boxes = boxes[boxes[:, 4] > score_threshold]
        found.append(boxes[nms(boxes, nms_threshold)])
    return found


def _scale_boxes(cls: np.ndarray, reg: np.ndarray, stride: int) -> List[np.ndarray]:
    """Candidate boxes of one scale, per image, as (N, 5) float32 in row-major anchor order."""
    face = _softmax(np.asarray(cls, dtype=np.float32))[:, 1]
    per_image = []
    for image in range(len(cls)):
        ys, xs = np.nonzero(face[image] > CANDIDATE_THRESHOLD)
        loc = np.asarray(reg[image][:, ys, xs], dtype=np.float32)
        centres = np.stack([xs, ys]).astype(np.float32) * stride + stride / 2
        box = _decode_boxes(loc, centres, np.float32(ANCHOR_PER_STRIDE * stride))
        per_image.append(np.concatenate([box, face[image, ys, xs][:, None]], axis=1))
    return per_image


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _decode_boxes(loc: np.ndarray, centres: np.ndarray, anchor: np.float32) -> np.ndarray:
    """SSD decoding of (4, N) offsets around (2, N) anchor centres -> (N, 4) corner boxes, float32."""
    centre = centres + loc[:2] * VARIANCES[0] * anchor
    size = anchor * np.exp(loc[2:] * VARIANCES[1])
    top_left = centre - size / 2
    return np.concatenate([top_left, size + top_left]).T


def nms(boxes: np.ndarray, threshold: float = NMS_THRESHOLD) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best score first (inclusive-pixel areas, as the reference)."""
    x1, y1, x2, y2, scores = boxes[:, :5].T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size > 0:
        best, rest = order[0], order[1:]
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = w * h / (areas[best] + areas[rest] - w * h)
        keep.append(best)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)

