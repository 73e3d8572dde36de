"""S3FD: published layer names and shapes, raw output maps, the reference's preprocessing, box decoding and NMS."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from lipsync import s3fd, s3fdboxes

PUBLISHED_PARAMETERS = 22_459_110  # face_alignment's net_s3fd.s3fd, counted on the PyTorch module
PUBLISHED_TENSORS = 65
HEIGHT, WIDTH = 88, 152  # non-square, and odd after 3 and 4 poolings
# Per scale (h, w): floor-halving pools for strides 4..16; fc6's padding of 3 adds 4 cells (2 + 4, 4 + 4),
# then two stride-2 convs with padding 1.
EXPECTED_SIZES = [(22, 38), (11, 19), (5, 9), (6, 8), (3, 4), (2, 2)]


@pytest.fixture(scope="module")
def model() -> s3fd.S3FD:
    paddle.seed(0)
    net = s3fd.S3FD()
    net.eval()
    return net


def _forward(model: s3fd.S3FD, x: np.ndarray):
    with paddle.no_grad():
        return [o.numpy() for o in model(paddle.to_tensor(x))]


def test_parameters_have_the_published_names_shapes_and_count(model):
    state = model.state_dict()
    assert len(state) == PUBLISHED_TENSORS
    assert sum(int(np.prod(t.shape)) for t in state.values()) == PUBLISHED_PARAMETERS
    assert list(state)[:2] == ["conv1_1.weight", "conv1_1.bias"]
    assert list(state)[-1] == "conv7_2_mbox_loc.bias"
    assert list(state["fc6.weight"].shape) == [1024, 512, 3, 3]
    assert list(state["conv3_3_norm_mbox_conf.weight"].shape) == [4, 256, 3, 3]
    assert list(state["fc7_mbox_loc.weight"].shape) == [4, 1024, 3, 3]
    norms = {name: state[f"{name}_norm.weight"].numpy() for name in ("conv3_3", "conv4_3", "conv5_3")}
    assert {name: (len(w), float(w.min()), float(w.max())) for name, w in norms.items()} == {
        "conv3_3": (256, 10.0, 10.0),
        "conv4_3": (512, 8.0, 8.0),
        "conv5_3": (512, 5.0, 5.0),
    }


def test_forward_gives_cls_and_reg_maps_per_scale_for_a_non_square_input(model):
    rng = np.random.default_rng(0)
    outputs = _forward(model, rng.normal(0, 50, (1, 3, HEIGHT, WIDTH)).astype(np.float32))
    assert len(outputs) == 12
    assert [o.shape for o in outputs[0::2]] == [(1, 2, h, w) for h, w in EXPECTED_SIZES]
    assert [o.shape for o in outputs[1::2]] == [(1, 4, h, w) for h, w in EXPECTED_SIZES]


def test_first_scale_maxes_out_three_background_logits(model):
    head = model.conv3_3_norm_mbox_conf
    saved = head.weight.numpy(), head.bias.numpy()
    head.weight.set_value(np.zeros_like(saved[0]))
    head.bias.set_value(np.array([1.0, 3.0, 2.0, 0.5], dtype=np.float32))
    try:
        cls1 = _forward(model, np.zeros((1, 3, 32, 48), dtype=np.float32))[0]
    finally:
        head.weight.set_value(saved[0])
        head.bias.set_value(saved[1])
    np.testing.assert_array_equal(cls1[0, :, 0, 0], [3.0, 0.5])


def test_l2norm_rescales_each_pixel_to_its_weight():
    layer = s3fd.L2Norm(8, scale=10.0)
    x = paddle.to_tensor(np.random.default_rng(1).normal(size=(2, 8, 3, 5)).astype(np.float32))
    norms = np.linalg.norm(layer(x).numpy(), axis=1)
    np.testing.assert_allclose(norms, 10.0, rtol=1e-5)


def test_preprocess_flips_to_rgb_and_subtracts_the_reference_mean():
    frame = np.zeros((4, 6, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 20, 250  # B, G, R
    batch = s3fdboxes.preprocess([frame, frame])
    assert batch.shape == (2, 3, 4, 6) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1, :, 2, 3], [250 - 104, 20 - 117, 10 - 123])


def test_preprocess_rejects_frames_of_different_sizes():
    with pytest.raises(ValueError, match="one size"):
        s3fdboxes.preprocess([np.zeros((4, 6, 3), np.uint8), np.zeros((6, 4, 3), np.uint8)])


def _empty_outputs(batch: int, height: int, width: int):
    """Raw maps whose every anchor is confidently background (face probability ~ 2e-9)."""
    outputs = []
    for stride in s3fdboxes.STRIDES:
        h, w = max(1, height // stride), max(1, width // stride)
        cls = np.zeros((batch, 2, h, w), np.float32)
        cls[:, 0] = 20.0
        outputs += [cls, np.zeros((batch, 4, h, w), np.float32)]
    return outputs


def _plant(outputs, scale: int, y: int, x: int, face_logit: float, loc=(0.0, 0.0, 0.0, 0.0), image: int = 0):
    cls, reg = outputs[2 * scale], outputs[2 * scale + 1]
    cls[image, :, y, x] = (0.0, face_logit)
    reg[image, :, y, x] = loc


def test_decode_recovers_a_planted_box_and_drops_weak_and_overlapping_ones():
    outputs = _empty_outputs(batch=2, height=256, width=320)
    loc = (0.5, -0.25, 0.1, -0.2)
    _plant(outputs, scale=2, y=5, x=7, face_logit=3.0, loc=loc)  # stride 16: anchor centre (120, 88), side 64
    _plant(outputs, scale=2, y=5, x=8, face_logit=2.0)  # 16 px to the right: IoU ~0.6, suppressed
    _plant(outputs, scale=1, y=3, x=30, face_logit=1.0)  # far away, weaker: kept second
    _plant(outputs, scale=0, y=50, x=5, face_logit=-1.0)  # candidate (p 0.27) but below 0.5: dropped
    found = s3fdboxes.decode(outputs)
    assert len(found) == 2 and found[1].shape == (0, 5)
    boxes = found[0]
    assert boxes.shape == (2, 5) and boxes.dtype == np.float32
    w, h = 64 * np.exp(0.1 * 0.2), 64 * np.exp(-0.2 * 0.2)
    cx, cy = 120 + 0.5 * 0.1 * 64, 88 - 0.25 * 0.1 * 64
    np.testing.assert_allclose(boxes[0, :4], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-3)
    np.testing.assert_allclose(boxes[0, 4], 1 / (1 + np.exp(-3.0)), rtol=1e-6)
    np.testing.assert_allclose(boxes[1, :4], [228, 12, 260, 44], atol=1e-4)  # stride 8 anchor at (244, 28)
    assert boxes[0, 4] > boxes[1, 4] > 0.5


def test_nms_uses_inclusive_pixel_areas_and_keeps_best_first():
    boxes = np.array(
        [
            [5, 0, 14, 9, 0.8],  # IoU with the best = 50 / 150 with +1 areas (0.29 without): suppressed
            [0, 0, 9, 9, 0.9],
            [0, 7, 9, 16, 0.7],  # IoU 30 / 170 with the best: kept
            [100, 100, 120, 120, 0.6],
        ],
        dtype=np.float32,
    )
    assert s3fdboxes.nms(boxes, 0.3).tolist() == [1, 2, 3]
    assert s3fdboxes.nms(boxes[:0], 0.3).tolist() == []


def test_detect_runs_frames_end_to_end(model):
    frames = [np.full((64, 96, 3), value, np.uint8) for value in (0, 128)]
    found = s3fd.detect(model, frames)
    assert len(found) == 2
    assert all(f.ndim == 2 and f.shape[1] == 5 for f in found)


def test_load_s3fd_reads_paddle_weights_into_an_eval_model(model, tmp_path):
    path = tmp_path / "s3fd.pdparams"
    paddle.save(model.state_dict(), str(path))
    loaded = s3fd.load_s3fd(path)
    assert not loaded.training
    x = np.random.default_rng(3).normal(0, 50, (1, 3, 32, 40)).astype(np.float32)
    for ours, theirs in zip(_forward(loaded, x), _forward(model, x)):
        np.testing.assert_array_equal(ours, theirs)
