"""StyleGAN2 building blocks in paddle, named and shaped as PaddleGAN's, for GPEN (lipsync.enhance).

Equalized learning rate: weights are stored raw and scaled at run time by 1/sqrt(fan_in) (times lr_mul in
the mapping network), so published weights load unchanged. Every operation is a plain paddle op (conv2d,
conv2d_transpose, matmul, elementwise), so the network traces into a static program with a free batch size
and runs under Paddle Inference with oneDNN.

Modulated convolutions scale the input by the style and the output by the demodulation coefficients
around one ordinary convolution (StyleGAN2's "fused_modconv=False" form). It equals scaling the weights
per sample and folding the batch into a grouped convolution, but the group count would then depend on the
batch size, which a static program with a free batch dimension cannot have.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)  # restores the activations' variance after the leaky ReLU
PIXEL_NORM_EPS = 1e-8
DEMOD_EPS = 1e-8
BLUR_TAPS = (1, 3, 3, 1)  # StyleGAN2's separable FIR low-pass around every resampling
FACTOR = 2  # of every upsampling and downsampling
RGB = 3
CONST_SIDE = 4  # the synthesis network starts from a learned 4x4 map
MODULATION_BIAS_INIT = 1.0  # styles start at 1, so modulation starts as the identity
# Feature channels per resolution; from 64 px on, times the channel multiplier.
BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512}
MULTIPLIED_CHANNELS = {64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def channels_at(resolution: int, multiplier: int) -> int:
    """Channels of the feature maps at `resolution` px (PaddleGAN's / rosinality's table)."""
    if resolution in BASE_CHANNELS:
        return BASE_CHANNELS[resolution]
    return MULTIPLIED_CHANNELS[resolution] * multiplier


def fir_kernel(taps: Sequence[float] = BLUR_TAPS, gain: float = 1.0) -> np.ndarray:
    """The 2-D kernel (outer product of the taps) normalised to sum to `gain`, float32."""
    row = np.asarray(taps, dtype=np.float64)
    kernel = np.outer(row, row)
    return (kernel * gain / kernel.sum()).astype(np.float32)


def fused_leaky_relu(x: paddle.Tensor, bias: paddle.Tensor) -> paddle.Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2), the bias on axis 1 of a 2-D or 4-D x."""
    shape = [1, -1] + [1] * (len(x.shape) - 2)
    return F.leaky_relu(x + bias.reshape(shape), LEAKY_SLOPE) * LEAKY_GAIN


class FusedLeakyReLU(nn.Layer):
    """Per-channel bias, then the scaled leaky ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = self.create_parameter([channels], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualLinear(nn.Layer):
    """Linear layer with equalized learning rate; weight stored [in, out]; optional fused leaky ReLU."""

    def __init__(self, cin: int, cout: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = self.create_parameter([cin, cout], default_initializer=nn.initializer.Normal(std=1 / lr_mul))
        self.bias = self.create_parameter([cout], default_initializer=nn.initializer.Constant(bias_init))
        self.scale = lr_mul / math.sqrt(cin)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = paddle.matmul(x, self.weight * self.scale)
        bias = self.bias * self.lr_mul
        return fused_leaky_relu(out, bias) if self.activate else out + bias


class EqualConv2D(nn.Layer):
    """Bias-free convolution with equalized learning rate (the encoder's; its bias is in the activation)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int):
        super().__init__()
        self.weight = self.create_parameter([cout, cin, kernel, kernel], default_initializer=nn.initializer.Normal())
        self.scale = 1 / math.sqrt(cin * kernel * kernel)
        self.stride = stride
        self.padding = padding

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.conv2d(x, self.weight * self.scale, stride=self.stride, padding=self.padding)


class Blur(nn.Layer):
    """Depthwise FIR filter with zero padding (upfirdn2d without resampling); the kernel is not a weight."""

    def __init__(self, channels: int, pad: Tuple[int, int], gain: float = 1.0):
        super().__init__()
        kernel = fir_kernel(gain=gain)[::-1, ::-1]  # a true convolution, as upfirdn2d computes
        depthwise = np.ascontiguousarray(np.broadcast_to(kernel, (channels, 1, *kernel.shape)))
        self.register_buffer("kernel", paddle.to_tensor(depthwise), persistable=False)
        self.padding = [pad[0], pad[1], pad[0], pad[1]]
        self.channels = channels

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return F.conv2d(x, self.kernel, padding=self.padding, groups=self.channels)


class Upsample(nn.Layer):
    """2x upsampling of an RGB skip: zeros inserted, then the FIR kernel (a saved buffer in PaddleGAN's
    weights files), as one depthwise transposed convolution."""

    def __init__(self, channels: int = RGB):
        super().__init__()
        kernel = fir_kernel(gain=FACTOR * FACTOR)
        self.register_buffer("kernel", paddle.to_tensor(kernel))
        taps = kernel.shape[0]
        # upfirdn2d pads the zero-stuffed map by `lead` px before filtering; a transposed convolution's full
        # output starts taps - 1 px before the map, so cropping the difference gives the same samples.
        lead = (taps - FACTOR + 1) // 2 + FACTOR - 1
        self.padding = taps - 1 - lead
        self.channels = channels

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        taps = self.kernel.shape[0]
        weight = self.kernel.reshape([1, 1, taps, taps]).tile([self.channels, 1, 1, 1])
        return F.conv2d_transpose(x, weight, stride=FACTOR, padding=self.padding, groups=self.channels)


class ModulatedConv2D(nn.Layer):
    """StyleGAN2's style-modulated (optionally demodulated) convolution, optionally upsampling 2x."""

    def __init__(self, cin: int, cout: int, kernel: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False):  # fmt: skip
        super().__init__()
        self.weight = self.create_parameter([1, cout, cin, kernel, kernel], default_initializer=nn.initializer.Normal())
        if upsample:
            # the transposed conv's output is (2n + kernel - 2) px; the blur trims it back to 2n
            excess = len(BLUR_TAPS) - FACTOR - (kernel - 1)
            pad = ((excess + 1) // 2 + FACTOR - 1, excess // 2 + 1)
            self.blur = Blur(cout, pad, gain=FACTOR * FACTOR)
        self.modulation = EqualLinear(style_dim, cin, bias_init=MODULATION_BIAS_INIT)
        self.shape = [cout, cin, kernel, kernel]
        self.scale = 1 / math.sqrt(cin * kernel * kernel)
        self.demodulate = demodulate
        self.upsample = upsample

    def forward(self, x: paddle.Tensor, latent: paddle.Tensor) -> paddle.Tensor:
        """x [B or 1, cin, H, W], latent w [B, style_dim] -> [B, cout, H', W']."""
        style = self.modulation(latent)
        weight = self.weight.reshape(self.shape) * self.scale
        x = x * style.unsqueeze([2, 3])
        if self.upsample:
            out = self.blur(F.conv2d_transpose(x, weight.transpose([1, 0, 2, 3]), stride=FACTOR))
        else:
            out = F.conv2d(x, weight, padding=self.shape[-1] // 2)
        if not self.demodulate:
            return out
        energy = paddle.matmul(style * style, (weight * weight).sum(axis=[2, 3]), transpose_y=True)
        return out * paddle.rsqrt(energy + DEMOD_EPS).unsqueeze([2, 3])


class NoiseInjection(nn.Layer):
    """Concatenates the scaled noise (in GPEN, an encoder feature map) to the features."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = self.create_parameter([1], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor, noise: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([x, noise * self.weight], axis=1)


class StyledConv(nn.Layer):
    """Modulated conv, concatenated noise (doubling the channels), biased leaky ReLU."""

    def __init__(self, cin: int, cout: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2D(cin, cout, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(2 * cout)

    def forward(self, x: paddle.Tensor, latent: paddle.Tensor, noise: paddle.Tensor) -> paddle.Tensor:
        return self.activate(self.noise(self.conv(x, latent), noise))


class ToRGB(nn.Layer):
    """1x1 modulated conv to RGB plus bias, added to the upsampled RGB of the previous resolution."""

    def __init__(self, cin: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2D(cin, RGB, 1, style_dim, demodulate=False)
        self.bias = self.create_parameter([1, RGB, 1, 1], default_initializer=nn.initializer.Constant(0.0))

    def forward(self, x: paddle.Tensor, latent: paddle.Tensor, skip: Optional[paddle.Tensor] = None) -> paddle.Tensor:
        out = self.conv(x, latent) + self.bias
        return out if skip is None else out + self.upsample(skip)


class PixelNorm(nn.Layer):
    """Scales each latent vector to unit root-mean-square."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return x * paddle.rsqrt(paddle.mean(x * x, axis=1, keepdim=True) + PIXEL_NORM_EPS)


class ConstantInput(nn.Layer):
    """The learned 4x4 map the synthesis starts from (broadcast over the batch by the first modulation)."""

    def __init__(self, channels: int):
        super().__init__()
        shape = [1, channels, CONST_SIDE, CONST_SIDE]
        self.input = self.create_parameter(shape, default_initializer=nn.initializer.Normal())

    def forward(self) -> paddle.Tensor:
        return self.input


class ConvLayer(nn.Sequential):
    """The encoder block: [blur,] equalized conv (stride 2 when downsampling), biased leaky ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, downsample: bool = False):
        layers: List[nn.Layer] = []
        if downsample:
            excess = len(BLUR_TAPS) - FACTOR + (kernel - 1)
            layers.append(Blur(cin, ((excess + 1) // 2, excess // 2)))
            layers.append(EqualConv2D(cin, cout, kernel, stride=FACTOR, padding=0))
        else:
            layers.append(EqualConv2D(cin, cout, kernel, stride=1, padding=kernel // 2))
        layers.append(FusedLeakyReLU(cout))
        super().__init__(*layers)


def noise_sides(log_size: int) -> List[int]:
    """Sides of the generator's noise buffers: one 4x4, then two per resolution 8 .. 2**log_size."""
    return [2 ** ((index + 5) // 2) for index in range((log_size - 2) * 2 + 1)]


class StyleGAN2Generator(nn.Layer):
    """Mapping network and synthesis network, with every styled conv's noise concatenated (GPEN's variant).

    forward(z, noises) takes the noise maps deepest (4x4) first, one per resolution, each used by both styled
    convs of its resolution. The `noises` buffers are kept for the weights file's layout and never read.
    """

    def __init__(self, size: int, style_dim: int, n_mlp: int, channel_multiplier: int, lr_mlp: float):
        super().__init__()
        log_size = int(math.log2(size))
        mapping = [EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)]
        self.style = nn.Sequential(PixelNorm(), *mapping)
        first = channels_at(CONST_SIDE, channel_multiplier)
        self.input = ConstantInput(first)
        self.conv1 = StyledConv(first, first, style_dim)
        self.to_rgb1 = ToRGB(2 * first, style_dim, upsample=False)
        self.convs = nn.LayerList()
        self.to_rgbs = nn.LayerList()
        self.noises = nn.Layer()
        for index, side in enumerate(noise_sides(log_size)):
            self.noises.register_buffer(f"noise_{index}", paddle.zeros([1, 1, side, side]))
        cin = first
        for level in range(3, log_size + 1):
            cout = channels_at(2**level, channel_multiplier)
            self.convs.append(StyledConv(2 * cin, cout, style_dim, upsample=True))
            self.convs.append(StyledConv(2 * cout, cout, style_dim))
            self.to_rgbs.append(ToRGB(2 * cout, style_dim))
            cin = cout

    def forward(self, z: paddle.Tensor, noises: Sequence[paddle.Tensor]) -> paddle.Tensor:
        """z [B, style_dim], noises [B, C_r, r, r] for r = 4, 8, ... -> RGB [B, 3, size, size]."""
        latent = self.style(z)
        out = self.conv1(self.input(), latent, noises[0])
        skip = self.to_rgb1(out, latent)
        for index, to_rgb in enumerate(self.to_rgbs):
            noise = noises[index + 1]
            out = self.convs[2 * index](out, latent, noise)
            out = self.convs[2 * index + 1](out, latent, noise)
            skip = to_rgb(out, latent, skip)
        return skip
