"""GPEN face restoration in paddle, layer for layer as PaddleGAN publishes it, so GPEN-512.pdparams loads unchanged.

GPEN is a StyleGAN2 generator (lipsync.stylegan) driven by an encoder of the degraded face: the encoder's
deepest map becomes the style vector and every encoder map is concatenated, as "noise", into the styled
convolutions of its resolution. Input and output are RGB (not BGR) NCHW batches in [-1, 1].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import paddle
from paddle import nn

from .checkpoint import assign_state_dict, read_state_dict
from .errors import LipSyncError
from .stylegan import CONST_SIDE, RGB, ConvLayer, EqualLinear, StyleGAN2Generator, channels_at

GPEN_SIZE = 512  # side of the published network's input and output, px
STYLE_DIM = 512
MAPPING_LAYERS = 8
CHANNEL_MULTIPLIER = 2
MAPPING_LR_MUL = 0.01
SIZES = tuple(2**level for level in range(3, 11))  # 8 .. 1024 px: the channel table's range
# CPU speed assumed for the estimate a run prints: GPEN-512 fp32 under Paddle Inference + oneDNN measured
# 51 GMAC/s on 2 threads of an AMX Xeon (2.7 s per face); 20 per thread leaves room for older CPUs.
CPU_GMAC_PER_THREAD_S = 20.0
GIGA = 1e9
ENCODER_PREFIX = "ecd"  # ecd0 (1x1) then one halving block per level down to 4 px: log2(size) - 1 in all
WEIGHTS_NAME = "gpen512"  # in the weights table (lipsync.weights)
WEIGHTS_KIND = "gpen"
WEIGHTS_HINT = (
    "GPEN face-enhancement weights are PaddleGAN's GPEN-512.pdparams "
    "(https://paddlegan.bj.bcebos.com/models/GPEN-512.pdparams)."
)

PathLike = Union[str, Path]


class GPEN(nn.Layer):
    """PaddleGAN's GPEN(size, 512, 8, channel_multiplier=2, is_concat=True), inference only.

    forward(image [B, 3, size, size], RGB in [-1, 1]) -> the restored image, same shape, about [-1, 1]
    (PaddleGAN returns a tuple whose first item this is). Deterministic: the encoder's maps are the noise.
    """

    def __init__(self, size: int = GPEN_SIZE):
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"GPEN size must be one of {SIZES}, got {size}")
        self.size = size
        log_size = int(math.log2(size))
        # Registration order is PaddleGAN's, so state_dict() lists the weights file's keys in its order.
        self.generator = StyleGAN2Generator(size, STYLE_DIM, MAPPING_LAYERS, CHANNEL_MULTIPLIER, MAPPING_LR_MUL)
        self.ecd0 = nn.Sequential(ConvLayer(RGB, channels_at(size, CHANNEL_MULTIPLIER), 1))
        self.encoder_names = ["ecd0"]
        for level in range(log_size, 2, -1):  # each block halves the side: size -> 4 px
            cin = channels_at(2**level, CHANNEL_MULTIPLIER)
            cout = channels_at(2 ** (level - 1), CHANNEL_MULTIPLIER)
            name = f"ecd{len(self.encoder_names)}"
            self.add_sublayer(name, nn.Sequential(ConvLayer(cin, cout, 3, downsample=True)))
            self.encoder_names.append(name)
        deepest = channels_at(CONST_SIDE, CHANNEL_MULTIPLIER) * CONST_SIDE * CONST_SIDE
        self.final_linear = nn.Sequential(EqualLinear(deepest, STYLE_DIM, activate=True))
        self.eval()

    def forward(self, image: paddle.Tensor) -> paddle.Tensor:
        features = []
        x = image
        for name in self.encoder_names:
            x = getattr(self, name)(x)
            features.append(x)
        style = self.final_linear(paddle.flatten(x, start_axis=1))
        return self.generator(style, features[::-1])


def build_gpen(state: Mapping[str, Any], size: int = GPEN_SIZE, source: str = "the GPEN weights") -> GPEN:
    """A GPEN in eval mode holding `state` (numpy arrays or paddle tensors by PaddleGAN's names).

    A state dict of another network raises LipSyncError naming the missing and unexpected keys.
    """
    model = GPEN(size)
    assign_state_dict(model, _as_arrays(state), source=source, hint=WEIGHTS_HINT)
    return model


def _as_arrays(state: Mapping[str, Any]) -> Dict[str, Any]:
    return {name: value.numpy() if isinstance(value, paddle.Tensor) else np.asarray(value)
            for name, value in state.items()}  # fmt: skip


def size_of(state: Mapping[str, Any], source: str = "the GPEN weights") -> int:
    """The side (px) of the GPEN a state dict belongs to, from its encoder's depth: 8 blocks (ecd0..ecd7) = 512.

    A state dict without GPEN's encoder raises the same one-line mismatch error build_gpen gives."""
    blocks = {name.split(".", 1)[0] for name in state if name.startswith(ENCODER_PREFIX)}
    size = 2 ** (len(blocks) + 1)
    if size not in SIZES:
        build_gpen(state, GPEN_SIZE, source)  # raises the mismatch error naming what is missing
        raise LipSyncError(f"{source} does not hold a GPEN of a known size. {WEIGHTS_HINT}")
    return size


def face_gmac(size: int = GPEN_SIZE) -> float:
    """Multiply-adds (G) of one face through GPEN(size), counted from its convolutions and linears: 137 at 512 px,
    35 at 64 (the 512-channel layers up to 32 px cost the same at every size)."""
    side = lambda level: channels_at(level, CHANNEL_MULTIPLIER)  # noqa: E731
    concat = 2  # every styled conv's output is concatenated with the encoder map of its size
    macs = RGB * side(size) * size**2  # ecd0, 1x1
    level = size
    while level > CONST_SIDE:  # the encoder: stride-2 3x3 convolutions
        macs += 9 * side(level) * side(level // 2) * (level // 2) ** 2
        level //= 2
    macs += side(CONST_SIDE) * CONST_SIDE**2 * STYLE_DIM + MAPPING_LAYERS * STYLE_DIM**2  # final_linear, mapping
    macs += (9 * side(CONST_SIDE) ** 2 + concat * side(CONST_SIDE) * RGB) * CONST_SIDE**2  # conv1, to_rgb1
    level = 2 * CONST_SIDE
    while level <= size:  # upsampling conv (on its input pixels), conv, to_rgb
        macs += 9 * concat * side(level // 2) * side(level) * (level // 2) ** 2
        macs += (9 * concat * side(level) ** 2 + concat * side(level) * RGB) * level**2
        level *= 2
    return macs / GIGA


def cpu_seconds(frames: int, size: int, threads: int) -> float:
    """A conservative estimate of the CPU time GPEN adds to `frames` faces (from its cost, not a timing)."""
    return frames * face_gmac(size) / (CPU_GMAC_PER_THREAD_S * max(1, threads))


def load_gpen_file(path: PathLike, size: Optional[int] = GPEN_SIZE) -> GPEN:
    """A GPEN from a weights file (paddle .pdparams or torch .pth, told by content); size None: the file's."""
    state = read_state_dict(path)
    return build_gpen(state, size or size_of(state, str(path)), source=str(path))


def load_gpen(path: Optional[PathLike] = None, size: Optional[int] = GPEN_SIZE) -> GPEN:
    """A GPEN from `path`, or when None from the weights table's GPEN-512 (found locally or downloaded)."""
    if path is None:
        from . import weights  # at call time: weights is the heavier module and may import this one

        path = weights.resolve_weights(WEIGHTS_NAME, WEIGHTS_KIND)
    return load_gpen_file(path, size)
