"""The Wav2Lip generator: published architecture (names, shapes, count), output contract, split encode/decode."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from lipsync.model import (FACE_FEATURE_SHAPES, FaceEncoder, LowerFaceGenerator, StillFaceDecoder, Wav2Lip,
                           decoder_row_starts, fold_conv_biases)

# Trainable parameters of Rudrabha/Wav2Lip models/wav2lip.py (counted on the PyTorch module).
PUBLISHED_PARAMETERS = 36_298_035
PUBLISHED_CONV_TENSORS = 202  # weight/bias tensors in the PyTorch state_dict, BatchNorm stats excluded
BATCHNORM_LAYERS = 50
FEATURE_SHAPES = [(16, 96), (32, 48), (64, 24), (128, 12), (256, 6), (512, 3), (512, 1)]  # (channels, side)


def _randomise(model: Wav2Lip, seed: int) -> None:
    """Random BatchNorm statistics and affine terms, so buffers matter to the output."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        value = tensor.numpy()
        if name.endswith("._variance"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith("._mean") or (".conv_block.1." in name and name.endswith(".bias")):
            value = rng.normal(0.0, 0.1, shape)
        elif ".conv_block.1." in name and name.endswith(".weight"):
            value = rng.uniform(0.8, 1.2, shape)
        state[name] = value.astype(np.float32)
    model.set_state_dict(state)


@pytest.fixture(scope="module")
def model() -> Wav2Lip:
    paddle.seed(0)
    net = Wav2Lip()
    _randomise(net, seed=1)
    net.eval()
    return net


@pytest.fixture(scope="module")
def inputs():
    """Three samples: (audio 0, face 0), (audio 1, face 0), (audio 0, face 1)."""
    rng = np.random.default_rng(2)
    audio = rng.normal(0.0, 2.0, (2, 1, 80, 16)).astype(np.float32)
    face = rng.random((2, 6, 96, 96)).astype(np.float32)
    return paddle.to_tensor(audio[[0, 1, 0]]), paddle.to_tensor(face[[0, 0, 1]])


def _run(model: Wav2Lip, audio, face) -> np.ndarray:
    with paddle.no_grad():
        return model(audio, face).numpy()


@pytest.fixture(scope="module")
def batched(model, inputs) -> np.ndarray:
    return _run(model, *inputs)


@pytest.fixture(scope="module")
def last_alone(model, inputs) -> np.ndarray:
    audio, face = inputs
    return _run(model, audio[2:], face[2:])


def test_parameter_count_matches_published_model(model):
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    assert sum(int(np.prod(p.shape)) for p in trainable) == PUBLISHED_PARAMETERS
    assert len(trainable) == PUBLISHED_CONV_TENSORS


def test_state_dict_uses_torch_names_with_paddle_batchnorm_stats(model):
    state = model.state_dict()
    assert len(state) == PUBLISHED_CONV_TENSORS + 2 * BATCHNORM_LAYERS
    names = list(state)
    assert names[0] == "face_encoder_blocks.0.0.conv_block.0.weight"
    assert names[-1] == "output_block.1.bias"
    assert not [n for n in names if "running_" in n or "num_batches" in n]
    expected = {
        "face_encoder_blocks.0.0.conv_block.0.weight": [16, 6, 7, 7],
        "face_encoder_blocks.6.1.conv_block.0.weight": [512, 512, 1, 1],
        "audio_encoder.3.conv_block.0.weight": [64, 32, 3, 3],
        "audio_encoder.12.conv_block.1._variance": [512],
        "face_decoder_blocks.1.0.conv_block.0.weight": [1024, 512, 3, 3],  # transposed conv: [in, out, kh, kw]
        "face_decoder_blocks.3.0.conv_block.0.weight": [768, 384, 3, 3],
        "face_decoder_blocks.6.2.conv_block.1._mean": [64],
        "output_block.0.conv_block.0.weight": [32, 80, 3, 3],
        "output_block.1.weight": [3, 32, 1, 1],
    }
    assert {name: list(state[name].shape) for name in expected} == expected


def test_forward_gives_faces_in_unit_range_that_depend_on_audio_and_face(batched):
    assert batched.shape == (3, 3, 96, 96) and batched.dtype == np.float32
    assert batched.min() >= 0.0 and batched.max() <= 1.0
    assert np.abs(batched[1] - batched[0]).max() > 1e-4  # other audio, same face
    assert np.abs(batched[2] - batched[0]).max() > 1e-4  # same audio, other face


def test_eval_mode_uses_running_stats_so_samples_are_independent(batched, last_alone):
    np.testing.assert_allclose(last_alone[0], batched[2], atol=1e-5)


def test_encode_then_decode_equals_forward_and_features_are_reusable(model, inputs, last_alone):
    audio, face = inputs
    with paddle.no_grad():
        features = model.encode_face(face[2:])
        assert [tuple(f.shape) for f in features] == [(1, c, s, s) for c, s in FEATURE_SHAPES]
        first = model.decode(audio[2:], features).numpy()
        again = model.decode(audio[2:], features).numpy()
    assert len(features) == len(FEATURE_SHAPES)  # decode must not consume the list
    np.testing.assert_array_equal(first, last_alone)
    np.testing.assert_array_equal(again, first)


def test_saved_state_dict_reloads_to_identical_outputs(model, inputs, last_alone, tmp_path):
    path = tmp_path / "wav2lip.pdparams"
    paddle.save(model.state_dict(), str(path))
    paddle.seed(99)
    other = Wav2Lip()
    other.set_state_dict(paddle.load(str(path)))
    other.eval()
    audio, face = inputs
    np.testing.assert_array_equal(_run(other, audio[2:], face[2:]), last_alone)


def test_still_face_split_equals_forward_over_many_mel_windows(model, inputs):
    """FaceEncoder once + StillFaceDecoder per batch is the generator on one face repeated (as a picture is)."""
    audio, face = inputs
    with paddle.no_grad():
        features = FaceEncoder(model)(face[:1])
        assert [tuple(f.shape[1:]) for f in features] == list(FACE_FEATURE_SHAPES)
        assert list(FACE_FEATURE_SHAPES) == [(c, s, s) for c, s in FEATURE_SHAPES]
        split = StillFaceDecoder(model)(audio[:2], *features).numpy()
        whole = model(audio[:2], paddle.concat([face[:1], face[:1]])).numpy()
    assert split.shape == (2, 3, 96, 96)
    np.testing.assert_allclose(split, whole, atol=1e-6)
    assert np.abs(split[1] - split[0]).max() > 1e-4, "each mel window still gets its own mouth"


@pytest.mark.parametrize("first_row", [0, 1, 10, 35, 50, 95])
def test_lower_rows_are_the_whole_faces_rows(model, inputs, batched, first_row):
    """Drawing rows first_row..95 only gives those rows of the whole face (bit-equal where no map is cut below
    12 px; within float rounding where a cut changes the convolutions' shapes), for the video and still splits."""
    audio, face = inputs
    with paddle.no_grad():
        lower = LowerFaceGenerator(model, first_row)(audio, face).numpy()
        features = FaceEncoder(model)(face[:1])
        still = StillFaceDecoder(model, first_row)(audio[:2], *features).numpy()
        still_whole = StillFaceDecoder(model)(audio[:2], *features).numpy()
    assert lower.shape == (3, 3, 96 - first_row, 96) and still.shape == (2, 3, 96 - first_row, 96)
    np.testing.assert_allclose(lower, batched[:, :, first_row:], atol=2e-5)
    np.testing.assert_allclose(still, still_whole[:, :, first_row:], atol=2e-5)
    if first_row == 35:  # the feathered paste's: cuts at 12, 24 and 48 px
        np.testing.assert_array_equal(lower, batched[:, :, first_row:])


def test_row_starts_cut_every_stage_it_can():
    assert decoder_row_starts(0) == {} and decoder_row_starts(2) == {}
    assert decoder_row_starts(35) == {6: 16, 5: 7, 4: 2}  # 48-, 24- and 12-px maps: a fifth less work
    for first_row in range(96):  # each cut leaves room for the rows its residual convs spoil at the cut
        needed = first_row - 1
        for index in sorted(decoder_row_starts(first_row), reverse=True):
            start = decoder_row_starts(first_row)[index]
            assert 2 * start + 2 <= needed, (first_row, index)
            needed = start


def test_folding_conv_biases_into_batchnorm_keeps_the_function(model, inputs, batched):
    """The exports' generator: no conv followed by BatchNorm keeps a bias (the add oneDNN refuses in bf16 beside a
    bf16 transposed conv), the output conv keeps its own, and the faces are the same up to float rounding."""
    folded = Wav2Lip()
    folded.set_state_dict(model.state_dict())
    folded.eval()
    assert fold_conv_biases(folded) is folded
    names = [name for name, _ in folded.named_parameters()]
    biased = [name for name in names if name.endswith("conv_block.0.bias")]
    assert biased == [] and "output_block.1.bias" in names
    assert sum(1 for name in names if name.endswith(".bias")) == BATCHNORM_LAYERS + 1  # BatchNorm betas, output bias
    np.testing.assert_allclose(_run(folded, *inputs), batched, rtol=0, atol=2e-5)
