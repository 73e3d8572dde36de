"""GPEN (lipsync.enhance): PaddleGAN's weights layout, its forward pass (formula fixture), colour order,
static export under Paddle Inference, and loading weights files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from lipsync.enhance import (CPU_GMAC_PER_THREAD_S, GPEN, build_gpen, cpu_seconds, face_gmac, load_gpen,
                             load_gpen_file, size_of)
from lipsync.errors import LipSyncError
from lipsync.s3fd import S3FD

FIXTURES = Path(__file__).parents[2] / "shared" / "fixtures"
FORMULA = FIXTURES / "formula"
SMALL = 64  # the formula fixture's network size
# GPEN-512: 164 tensors, 142 of them parameters; the buffers are 15 noise maps (4x4, then two per side
# 8 .. 512: 699,024 values) and the 7 ToRGB upsampling kernels (4x4).
GPEN512_TENSORS = 164
GPEN512_PARAMETER_TENSORS = 142
GPEN512_NOISE_BUFFERS = 15
GPEN512_VALUES = 71_704_359
GPEN512_PARAMETERS = 71_005_223
FIXTURE_ATOL = 1e-5  # PaddleGAN's output vs ours, float32 on CPU (measured 1.6e-7)
INFERENCE_ATOL = 1e-4  # Paddle Inference (oneDNN) vs dygraph (measured 4e-7)
BGR_MIN_CHANGE = 1e-3  # a BGR-fed input moves the output by 1.6e-3 (max abs), 100x the fixture tolerance
BATCH_SEED = 3


def _formula_state(keys) -> dict:
    """The fixture's weights: the i-th tensor from a sine hash, scaled by its kind (fixtures/README.md)."""
    state = {}
    for i, (name, shape, kind) in enumerate(keys):
        x = np.sin(12.9898 * np.arange(int(np.prod(shape))) + 78.233 * (i + 1)) * 43758.5453
        base = (2 * (x - np.floor(x)) - 1).reshape(shape)
        state[name] = (base if kind == "raw" else 0.1 * base).astype(np.float32)
    return state


@pytest.fixture(scope="module")
def formula_keys() -> list:
    return json.loads((FORMULA / "gpen64_formula_keys.json").read_text())["keys"]


@pytest.fixture(scope="module")
def formula_state(formula_keys) -> dict:
    return _formula_state(formula_keys)


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(FORMULA / "gpen64_formula.npz") as data:
        return {"input": data["input"], "output": data["output"]}


@pytest.fixture(scope="module")
def model(formula_state) -> GPEN:
    return build_gpen(formula_state, SMALL)


def _forward(model: GPEN, image: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return model(paddle.to_tensor(image)).numpy()


@pytest.fixture(scope="module")
def batch(reference) -> np.ndarray:
    """The fixture's RGB input, the same image as BGR, and a random image."""
    rgb = reference["input"][0]
    other = np.random.default_rng(BATCH_SEED).uniform(-1, 1, rgb.shape)
    return np.stack([rgb, rgb[::-1], other]).astype(np.float32)


@pytest.fixture(scope="module")
def batch_output(model, batch) -> np.ndarray:
    return _forward(model, batch)


@pytest.fixture(scope="module")
def single_output(model, reference) -> np.ndarray:
    return _forward(model, reference["input"])


def test_gpen512_has_paddlegans_names_order_and_shapes():
    expected = json.loads((FIXTURES / "gpen512_keys.json").read_text())["parameters"]
    net = GPEN(512)
    state = net.state_dict()
    assert [[name, list(tensor.shape)] for name, tensor in state.items()] == expected
    assert len(state) == GPEN512_TENSORS
    assert sum(int(np.prod(t.shape)) for t in state.values()) == GPEN512_VALUES
    assert len(net.parameters()) == GPEN512_PARAMETER_TENSORS
    assert sum(int(np.prod(p.shape)) for p in net.parameters()) == GPEN512_PARAMETERS
    noises = [name for name in state if name.startswith("generator.noises.")]
    assert noises == [f"generator.noises.noise_{i}" for i in range(GPEN512_NOISE_BUFFERS)]


def test_small_gpen_has_the_formula_fixtures_layout(formula_keys):
    state = GPEN(SMALL).state_dict()
    assert [[name, list(tensor.shape)] for name, tensor in state.items()] == [[n, s] for n, s, _ in formula_keys]


def test_forward_equals_paddlegans_output_for_the_formula_weights(single_output, reference):
    assert single_output.shape == reference["output"].shape == (1, 3, SMALL, SMALL)
    assert single_output.dtype == np.float32
    np.testing.assert_allclose(single_output, reference["output"], rtol=0, atol=FIXTURE_ATOL)


def test_batch_items_are_independent(batch_output, single_output):
    np.testing.assert_allclose(batch_output[:1], single_output, rtol=0, atol=FIXTURE_ATOL)
    assert np.abs(batch_output[2] - batch_output[0]).max() > BGR_MIN_CHANGE


def test_colour_order_is_rgb_a_bgr_input_gives_another_face(batch_output, reference):
    np.testing.assert_allclose(batch_output[0], reference["output"][0], rtol=0, atol=FIXTURE_ATOL)
    assert np.abs(batch_output[1] - reference["output"][0]).max() > BGR_MIN_CHANGE


def test_two_calls_give_identical_outputs(model, reference, single_output):
    np.testing.assert_array_equal(_forward(model, reference["input"]), single_output)


def test_noise_buffers_are_not_used_the_encoder_supplies_the_noise(model, reference, single_output):
    buffers = {name: t for name, t in model.state_dict().items() if name.startswith("generator.noises.")}
    saved = {name: t.numpy() for name, t in buffers.items()}
    try:
        for tensor in buffers.values():
            tensor.set_value(np.ones(tensor.shape, dtype=np.float32))
        np.testing.assert_array_equal(_forward(model, reference["input"]), single_output)
    finally:
        for name, tensor in buffers.items():
            tensor.set_value(saved[name])


@pytest.mark.skipif(int(paddle.__version__.split(".")[0]) >= 3,
                    reason="paddle 3.3.1's Paddle Inference crashes (segfault) now and then creating GPEN's predictor; "
                           "lipsync refuses face enhancement on paddle 3 (tests/test_end_to_end.py)")  # fmt: skip
def test_static_export_runs_under_paddle_inference_like_dygraph(formula_state, batch, batch_output, reference,
                                                                 single_output, tmp_path):  # fmt: skip
    """Through the project's own export and predictor (oneDNN on CPU), as the engine runs GPEN."""
    from lipsync import runtime

    prefix = runtime.export_static(lambda: build_gpen(formula_state, SMALL), [((None, 3, SMALL, SMALL), "float32")],
                                   tmp_path / "export")  # fmt: skip
    predictor = runtime.Predictor(prefix, runtime.Device("cpu", "requested"), threads=2)
    # two batch sizes in turn: a free batch dimension, and no input-dependent weights cached between runs
    np.testing.assert_allclose(predictor.run(batch)[0], batch_output, rtol=0, atol=INFERENCE_ATOL)
    np.testing.assert_allclose(predictor.run(reference["input"])[0], single_output, rtol=0, atol=INFERENCE_ATOL)
    predictor.close()


def _assert_holds(model: GPEN, state: dict) -> None:
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for name, value in state.items():
        np.testing.assert_array_equal(loaded[name].numpy(), value, err_msg=name)


def test_weights_load_from_pdparams_and_torch_files(formula_state, tmp_path):
    from torchfile_writer import save_torch

    pdparams, pth = tmp_path / "GPEN-64.pdparams", tmp_path / "gpen64.pth"
    paddle.save({name: paddle.to_tensor(value) for name, value in formula_state.items()}, str(pdparams))
    save_torch(formula_state, pth)
    _assert_holds(load_gpen_file(pdparams, size=SMALL), formula_state)
    _assert_holds(load_gpen(str(pth), size=SMALL), formula_state)


def test_build_accepts_paddle_tensors(formula_state):
    tensors = {name: paddle.to_tensor(value) for name, value in formula_state.items()}
    _assert_holds(build_gpen(tensors, SMALL), formula_state)


def test_a_truncated_weights_file_is_a_one_line_error(formula_state, tmp_path):
    path = tmp_path / "GPEN-64.pdparams"
    paddle.save(formula_state, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LipSyncError) as caught:
        load_gpen_file(path, size=SMALL)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "damaged" in message


def test_an_s3fd_state_dict_is_a_one_line_mismatch_naming_the_gpen_file():
    state = {name: tensor.numpy() for name, tensor in S3FD().state_dict().items()}
    with pytest.raises(LipSyncError) as caught:
        build_gpen(state, SMALL, source="s3fd.pth")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("s3fd.pth does not match the GPEN model: 107 missing (generator.style.1.weight, ")
    assert "65 unexpected (conv1_1.weight, " in message
    assert message.endswith("PaddleGAN's GPEN-512.pdparams (https://paddlegan.bj.bcebos.com/models/GPEN-512.pdparams).")


def test_sizes_outside_the_channel_table_are_refused():
    with pytest.raises(ValueError, match="GPEN size"):
        GPEN(96)


def test_the_network_size_is_read_from_the_weights(formula_keys, formula_state, tmp_path):
    published = json.loads((FIXTURES / "gpen512_keys.json").read_text())["parameters"]
    assert size_of({name: None for name, _ in published}) == 512  # names are enough: no 287 MB of values
    assert size_of(formula_state) == SMALL
    path = tmp_path / "GPEN-64.pdparams"
    paddle.save(formula_state, str(path))
    model = load_gpen_file(path, size=None)
    assert model.size == SMALL
    _assert_holds(model, formula_state)


def test_a_state_dict_without_gpens_encoder_has_no_size_but_a_mismatch_error():
    state = {name: tensor.numpy() for name, tensor in S3FD().state_dict().items()}
    with pytest.raises(LipSyncError) as caught:
        size_of(state, "s3fd.pth")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("s3fd.pth does not match the GPEN model: ")
    assert "GPEN-512.pdparams" in message


def test_the_cost_count_matches_the_measured_one_and_the_cpu_estimate_follows_it():
    assert face_gmac(512) == pytest.approx(138.1, rel=0.01)  # the port's earlier count, blurs and modulation in
    assert 0.2 < face_gmac(64) / face_gmac(512) < 0.3, "the 512-channel layers up to 32 px dominate small sizes"
    assert cpu_seconds(250, 512, 2) == pytest.approx(250 * face_gmac(512) / (2 * CPU_GMAC_PER_THREAD_S))
    assert cpu_seconds(250, 512, 4) == pytest.approx(cpu_seconds(250, 512, 2) / 2)
