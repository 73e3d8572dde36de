"""S3FD's input and output as the reference handles them, in numpy (no paddle): frames to the network's input,
its score and offset maps to face boxes."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .types import Frame

# The reference subtracts this from RGB pixels (it is the Caffe BGR mean, applied after the BGR->RGB flip).
MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)
STRIDES = (4, 8, 16, 32, 64, 128)  # px per feature cell of each detection scale
ANCHOR_PER_STRIDE = 4  # square anchor side = 4 * stride
VARIANCES = (0.1, 0.2)  # SSD box coding: centre offsets, log sizes
CANDIDATE_THRESHOLD = 0.05  # face probability for an anchor to be decoded at all
NMS_THRESHOLD = 0.3  # IoU above which a lower-scoring box is suppressed
KEEP_THRESHOLD = 0.5  # face probability a box needs to be reported


def preprocess(frames: Sequence[Frame]) -> np.ndarray:
    """BGR uint8 frames of one size -> [B, 3, H, W] float32: RGB minus MEAN, as the reference feeds S3FD."""
    if not frames:
        raise ValueError("preprocess needs at least one frame")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"S3FD batches need frames of one size, got {sorted(shapes)}")
    rgb = np.stack(frames)[..., ::-1].astype(np.float32)
    return np.ascontiguousarray((rgb - MEAN).transpose(0, 3, 1, 2))


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
