"""The Wav2Lip generator in paddle, layer for layer as published, so its weights load unchanged."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, Union

import paddle
from paddle import nn

FACE_SIZE = 96  # generator input/output side, px
FACE_CHANNELS = 6  # masked face (BGR) + reference face (BGR)
OUTPUT_CHANNELS = 3  # BGR in [0, 1]
EMBEDDING = 512  # channels of the audio embedding and of the deepest face feature

Stride = Union[int, Tuple[int, int]]

# Down-sampling stages after the 7x7 stem, as (in, out, residual blocks): 96 -> 48 -> 24 -> 12 -> 6 -> 3.
FACE_STEM = (FACE_CHANNELS, 16, 7)  # in, out, kernel
FACE_STAGES = ((16, 32, 2), (32, 64, 3), (64, 128, 2), (128, 256, 2), (256, 512, 1))
# Audio stages on the (80, 16) mel window, as (in, out, stride, residual blocks): -> 80x16, 27x16, 9x6, 3x3.
AUDIO_STAGES = ((1, 32, 1, 2), (32, 64, (3, 1), 2), (64, 128, 3, 2), (128, 256, (3, 2), 1))
# Up-sampling stages as (in, out, residual blocks); `in` counts the skip features concatenated to the input.
DECODER_FIRST = (1024, 512, 1)  # 1 -> 3, transposed conv without padding
DECODER_STAGES = ((1024, 512, 2), (768, 384, 2), (512, 256, 2), (320, 128, 2), (160, 64, 2))  # each doubles the side
DECODER_BLOCKS = ((EMBEDDING, EMBEDDING, 0), DECODER_FIRST, *DECODER_STAGES)  # every decoder block, in order
OUTPUT_HIDDEN = (80, 32)  # last decoder output + first face feature -> hidden channels
OUTPUT_HALO = 1  # rows the output block's 3x3 conv reads above each row it writes
UPSAMPLE = 2  # each decoder stage's transposed conv doubles the side
# Per face, the skip features encode_face returns (channels, side, side), shallow to deep.
FACE_FEATURE_SHAPES = (
    (FACE_STEM[1], FACE_SIZE, FACE_SIZE),
    *((out, FACE_SIZE >> (i + 1), FACE_SIZE >> (i + 1)) for i, (_, out, _) in enumerate(FACE_STAGES)),
    (EMBEDDING, 1, 1),
)


class ConvBNReLU(nn.Layer):
    """Conv, BatchNorm, optional identity shortcut, ReLU (the reference's `Conv2d` block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: Stride, padding: int, residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2D(cin, cout, kernel, stride, padding), nn.BatchNorm2D(cout))
        self.act = nn.ReLU()
        self.residual = residual

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class ConvTransposeBNReLU(nn.Layer):
    """Transposed conv, BatchNorm, ReLU (the reference's `Conv2dTranspose` block)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int, output_padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2DTranspose(cin, cout, kernel, stride, padding, output_padding), nn.BatchNorm2D(cout)
        )
        self.act = nn.ReLU()

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.act(self.conv_block(x))


def fold_conv_biases(generator: "Wav2Lip") -> "Wav2Lip":
    """The same function with each conv's bias moved into the BatchNorm after it (its running mean less the bias),
    for export: paddle's passes then fuse conv and BatchNorm into one kernel with no broadcast bias add left
    between them (which oneDNN refuses in bf16 beside a bf16 transposed conv). Changes the model in place."""
    with paddle.no_grad():
        for layer in generator.sublayers():
            if isinstance(layer, (ConvBNReLU, ConvTransposeBNReLU)):
                conv, norm = layer.conv_block[0], layer.conv_block[1]
                if conv.bias is not None:
                    norm._mean.set_value(norm._mean - conv.bias)
                    conv.bias = None
    return generator


def _residuals(channels: int, count: int) -> List[nn.Layer]:
    return [ConvBNReLU(channels, channels, 3, 1, 1, residual=True) for _ in range(count)]


def _down(cin: int, cout: int, stride: Stride, residuals: int) -> List[nn.Layer]:
    return [ConvBNReLU(cin, cout, 3, stride, 1), *_residuals(cout, residuals)]


def _squeeze(channels: int) -> List[nn.Layer]:
    """3x3 valid conv then 1x1: the last 3x3 map becomes the 1x1 embedding."""
    return [ConvBNReLU(channels, EMBEDDING, 3, 1, 0), ConvBNReLU(EMBEDDING, EMBEDDING, 1, 1, 0)]


def _face_encoder() -> nn.LayerList:
    cin, cout, kernel = FACE_STEM
    blocks = [nn.Sequential(ConvBNReLU(cin, cout, kernel, 1, kernel // 2))]
    blocks += [nn.Sequential(*_down(i, o, 2, n)) for i, o, n in FACE_STAGES]
    blocks.append(nn.Sequential(*_squeeze(EMBEDDING)))
    return nn.LayerList(blocks)


def _audio_encoder() -> nn.Sequential:
    layers: List[nn.Layer] = []
    for cin, cout, stride, residuals in AUDIO_STAGES:
        layers += _down(cin, cout, stride, residuals)
    return nn.Sequential(*layers, *_squeeze(AUDIO_STAGES[-1][1]))


def _face_decoder() -> nn.LayerList:
    cin, cout, residuals = DECODER_FIRST
    blocks = [
        nn.Sequential(ConvBNReLU(EMBEDDING, EMBEDDING, 1, 1, 0)),
        nn.Sequential(ConvTransposeBNReLU(cin, cout, 3, 1, 0), *_residuals(cout, residuals)),
    ]
    for cin, cout, residuals in DECODER_STAGES:
        up = ConvTransposeBNReLU(cin, cout, 3, 2, 1, output_padding=1)
        blocks.append(nn.Sequential(up, *_residuals(cout, residuals)))
    return nn.LayerList(blocks)


def _output_block() -> nn.Sequential:
    cin, hidden = OUTPUT_HIDDEN
    return nn.Sequential(ConvBNReLU(cin, hidden, 3, 1, 1), nn.Conv2D(hidden, OUTPUT_CHANNELS, 1, 1, 0), nn.Sigmoid())


def decoder_row_starts(first_row: int) -> Dict[int, int]:
    """For an output computed only from row `first_row` down: decoder block index -> the row (at that block's input
    side) its input is cut at. Each stage's transposed conv (stride 2, padding 1) maps input rows from s to output
    rows from 2s exactly; its residual 3x3 convs, zero-padded at the cut, spoil one more top row each, so every
    stage starts early enough for those spoiled rows to fall above the rows the next one needs."""
    starts: Dict[int, int] = {}
    needed = first_row - OUTPUT_HALO  # rows the output block needs correct, at full side
    first_stage = len(DECODER_BLOCKS) - len(DECODER_STAGES)
    for index in range(len(DECODER_BLOCKS) - 1, first_stage - 1, -1):
        start = max(0, (needed - DECODER_BLOCKS[index][2]) // UPSAMPLE)
        if start == 0:
            break
        starts[index] = start
        needed = start
    return starts


class Wav2Lip(nn.Layer):
    """The 96x96 Wav2Lip generator; parameter names match the PyTorch module's (BatchNorm stats aside).

    Only the inference path: 4-D batches. The reference also accepts 5-D (B, C, T, H, W) training
    batches, which we do not need.
    """

    def __init__(self) -> None:
        super().__init__()
        # Registration order matches the reference, so state_dict() lists keys in the same order.
        self.face_encoder_blocks = _face_encoder()
        self.audio_encoder = _audio_encoder()
        self.face_decoder_blocks = _face_decoder()
        self.output_block = _output_block()

    def forward(self, audio_sequences: paddle.Tensor, face_sequences: paddle.Tensor) -> paddle.Tensor:
        """audio [B, 1, 80, 16] mel windows, face [B, 6, 96, 96] in [0, 1] -> [B, 3, 96, 96] in [0, 1]."""
        return self.decode(audio_sequences, self.encode_face(face_sequences))

    def encode_face(self, face_sequences: paddle.Tensor) -> List[paddle.Tensor]:
        """Skip features of each encoder stage, shallow to deep (96x96 ... 1x1); reusable for a still face."""
        features = []
        x = face_sequences
        for block in self.face_encoder_blocks:
            x = block(x)
            features.append(x)
        return features

    def decode(self, audio_sequences: paddle.Tensor, face_features: Sequence[paddle.Tensor],
               first_row: int = 0) -> paddle.Tensor:  # fmt: skip
        """Encode the audio and decode it with the face's skip features (same batch size) into faces: rows
        `first_row`..95 of them only, computing what those rows need (the same numbers as the whole face's rows)."""
        starts = decoder_row_starts(first_row)
        x = self.audio_encoder(audio_sequences)
        row = 0  # the row of the full-size map that x's first row is, at x's side
        for index, (block, skip) in enumerate(zip(self.face_decoder_blocks, reversed(face_features))):
            if index in starts:
                x, row = x[:, :, starts[index] - row :], starts[index]
            x = block(x)
            row *= UPSAMPLE  # only stages (stride 2) are ever cut, and every block after a cut is one
            x = paddle.concat([x, skip[:, :, row:] if row else skip], axis=1)
        x = self.output_block(x)
        return x[:, :, first_row - row :] if first_row > row else x


class FaceEncoder(nn.Layer):
    """The generator's face-encoder half alone: a still face's skip features, computed once per run."""

    def __init__(self, generator: Wav2Lip) -> None:
        super().__init__()
        self.generator = generator
        self.eval()

    def forward(self, face_sequences: paddle.Tensor) -> List[paddle.Tensor]:
        """face [B, 6, 96, 96] -> the 7 skip features, [B, *FACE_FEATURE_SHAPES[i]] each."""
        return self.generator.encode_face(face_sequences)


class LowerFaceGenerator(nn.Layer):
    """The generator drawing rows `first_row`..95 of each face only: what a paste that keeps the original face
    above them reads (the feathered blend), for about a fifth less work."""

    def __init__(self, generator: Wav2Lip, first_row: int) -> None:
        super().__init__()
        self.generator = generator
        self.first_row = first_row
        self.eval()

    def forward(self, audio_sequences: paddle.Tensor, face_sequences: paddle.Tensor) -> paddle.Tensor:
        """audio [B, 1, 80, 16], face [B, 6, 96, 96] -> [B, 3, 96 - first_row, 96] in [0, 1]."""
        return self.generator.decode(audio_sequences, self.generator.encode_face(face_sequences), self.first_row)


class StillFaceDecoder(nn.Layer):
    """The rest of the generator for one still face: its skip features (batch 1) serve every mel window,
    so a picture skips the face encoder (about a tenth of the generator's time) on every frame.
    With `first_row`, it draws rows first_row..95 only (see LowerFaceGenerator)."""

    def __init__(self, generator: Wav2Lip, first_row: int = 0) -> None:
        super().__init__()
        self.generator = generator
        self.first_row = first_row
        self.eval()

    def forward(self, audio_sequences: paddle.Tensor, f96: paddle.Tensor, f48: paddle.Tensor, f24: paddle.Tensor,
                f12: paddle.Tensor, f6: paddle.Tensor, f3: paddle.Tensor, f1: paddle.Tensor) -> paddle.Tensor:
        """audio [B, 1, 80, 16] and one face's features [1, C, S, S] -> [B, 3, 96 - first_row, 96] in [0, 1]."""
        batch = paddle.shape(audio_sequences)[0]
        features = [paddle.expand(f, [batch, -1, -1, -1]) for f in (f96, f48, f24, f12, f6, f3, f1)]
        return self.generator.decode(audio_sequences, features, self.first_row)
