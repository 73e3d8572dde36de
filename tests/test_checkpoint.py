"""Tests for lipsync.checkpoint: torch (zip, legacy, TorchScript) and paddle files read safely, loaded strictly."""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import paddle
import pytest
from paddle import nn

from lipsync.checkpoint import assign_state_dict, read_state_dict, to_paddle_names
from lipsync.errors import LipSyncError
from torchfile_writer import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    LEGACY_SYS_INFO,
    ScriptModule,
    Storage,
    Tensor,
    pickle_torch,
    save_torch,
    torch_names,
    training_checkpoint,
)

TORCH_FIXTURES = Path(__file__).parents[2] / "shared" / "fixtures" / "torch_checkpoints"
ZIP_FIXTURE = TORCH_FIXTURES / "tiny_zip.pth"
LEGACY_FIXTURE = TORCH_FIXTURES / "tiny_legacy.pth"
FIXTURE_STORAGE_DTYPES = ["float32"] * 6 + ["int64", "float32", "float16", "float32"]
# The legacy fixture names storages by memory address; these are its keys, in the order tensors use them.
LEGACY_FIXTURE_KEYS = [
    "94744505580864", "94744422534112", "94744419113792", "94744422535088", "94744422495728",
    "94744505593488", "94744422496176", "94744422493168", "94744422505136", "94744422504880",
]  # fmt: skip


@pytest.fixture(scope="module")
def expected() -> Dict[str, np.ndarray]:
    with np.load(TORCH_FIXTURES / "expected.npz") as data:
        return {name: data[name] for name in data.files}


def assert_same_arrays(got: Dict[str, np.ndarray], want: Dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert got[name].shape == want[name].shape, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --- the real files torch wrote -------------------------------------------------------------------


@pytest.mark.parametrize("fixture", [ZIP_FIXTURE, LEGACY_FIXTURE], ids=["zip", "legacy"])
def test_torch_files_read_exactly_as_saved(fixture: Path, expected: Dict[str, np.ndarray]) -> None:
    state = read_state_dict(fixture)
    assert_same_arrays(state, expected)  # strided views of a shared storage, float16 and int64 included
    assert state["head.weight"].flags.c_contiguous and state["head.weight"].flags.writeable


@pytest.mark.parametrize("fixture", [ZIP_FIXTURE, LEGACY_FIXTURE], ids=["zip", "legacy"])
def test_optimizer_and_counters_are_left_out(fixture: Path) -> None:
    state = read_state_dict(fixture)
    assert not any(name.startswith("module.") for name in state)
    assert not {"optimizer", "global_step", "global_epoch", "exp_avg", "state"} & set(state)


def _fixture_storages() -> List[np.ndarray]:
    with zipfile.ZipFile(ZIP_FIXTURE) as archive:
        return [np.frombuffer(archive.read(f"tiny_zip/data/{i}"), dtype) for i, dtype in enumerate(FIXTURE_STORAGE_DTYPES)]


def _fixture_object(keys: List[Any]) -> Dict[str, Any]:
    """The object torch saved into the fixtures, rebuilt with the test writer's Storage/Tensor."""
    storages = [Storage(data, key) for data, key in zip(_fixture_storages(), keys)]

    def dense(storage: Storage, shape: tuple) -> Tensor:
        return Tensor(storage, 0, shape, tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape))))

    block = "module.block.0.conv_block."
    state: Dict[str, Any] = collections.OrderedDict()
    state[block + "0.weight"] = dense(storages[0], (4, 3, 3, 3))
    state[block + "0.bias"] = dense(storages[1], (4,))
    for i, name in enumerate(["weight", "bias", "running_mean", "running_var"]):
        state[f"{block}1.{name}"] = dense(storages[2 + i], (4,))
    state[block + "1.num_batches_tracked"] = dense(storages[6], ())
    state["module.head.weight"] = Tensor(storages[7], 7, (3, 3), (5, 1))
    state["module.head.bias"] = Tensor(storages[7], 0, (5,), (1,))
    state["module.half"] = dense(storages[8], (3,))
    optimizer = {"state": {0: {"exp_avg": dense(storages[9], (4, 3, 3, 3)), "step": 10}}, "param_groups": [{"lr": 0.0001, "params": [0]}]}
    return {"state_dict": state, "optimizer": optimizer, "global_step": 123, "global_epoch": 4}


def test_writer_reproduces_torchs_zip_pickle_byte_for_byte(tmp_path: Path, expected: Dict[str, np.ndarray]) -> None:
    data_pkl, _ = pickle_torch(_fixture_object([None] * len(FIXTURE_STORAGE_DTYPES)))
    with zipfile.ZipFile(ZIP_FIXTURE) as archive:
        assert data_pkl == archive.read("tiny_zip/data.pkl")
    save_torch(_fixture_object([None] * len(FIXTURE_STORAGE_DTYPES)), tmp_path / "tiny_zip.pth")
    with zipfile.ZipFile(tmp_path / "tiny_zip.pth") as ours, zipfile.ZipFile(ZIP_FIXTURE) as theirs:
        for name in theirs.namelist():
            if not name.endswith("serialization_id"):
                assert ours.read(name) == theirs.read(name), name
    assert_same_arrays(read_state_dict(tmp_path / "tiny_zip.pth"), expected)


def test_writer_reproduces_torchs_legacy_file_byte_for_byte(tmp_path: Path) -> None:
    save_torch(_fixture_object(LEGACY_FIXTURE_KEYS), tmp_path / "legacy.pth", legacy=True)
    assert (tmp_path / "legacy.pth").read_bytes() == LEGACY_FIXTURE.read_bytes()


# --- tensors the writer builds --------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_into_one_storage_come_out_right(tmp_path: Path, legacy: bool) -> None:
    grid = Storage(np.arange(30, dtype=np.float32))
    full = np.arange(30, dtype=np.float32).reshape(6, 5)
    state = {
        "window": Tensor(grid, 7, (3, 3), (5, 1)),
        "transposed": Tensor(grid, 0, (5, 6), (1, 5)),
        "every_other_row": Tensor(grid, 5, (3, 5), (10, 1)),
        "broadcast": Tensor(grid, 2, (2, 3), (0, 1)),
        "scalar": Tensor(grid, 29, (), ()),
        "empty": Tensor(grid, 0, (0, 4), (4, 1)),
    }
    save_torch(state, tmp_path / "views.pth", legacy=legacy)
    got = read_state_dict(tmp_path / "views.pth")
    np.testing.assert_array_equal(got["window"], full[1:4, 2:5])
    np.testing.assert_array_equal(got["transposed"], full.T)
    np.testing.assert_array_equal(got["every_other_row"], full[1::2])
    np.testing.assert_array_equal(got["broadcast"], np.tile(np.arange(2, 5, dtype=np.float32), (2, 1)))
    assert got["scalar"].shape == () and got["scalar"] == 29
    assert got["empty"].shape == (0, 4)


def test_bfloat16_tensors_become_float32(tmp_path: Path) -> None:
    values = np.array([1.5, -2.0, 0.15625, 3.0e38], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    save_torch({"w": Tensor(Storage(bits, type_name="BFloat16Storage"), 0, (4,), (1,))}, tmp_path / "bf16.pth")
    got = read_state_dict(tmp_path / "bf16.pth")["w"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, (bits.astype(np.uint32) << 16).view(np.float32))
    np.testing.assert_array_equal(got[:3], values[:3])


def test_a_tensor_running_past_its_storage_is_damage(tmp_path: Path) -> None:
    save_torch({"w": Tensor(Storage(np.arange(4, dtype=np.float32)), 2, (3,), (1,))}, tmp_path / "short.pth")
    with pytest.raises(LipSyncError, match="short.pth is damaged"):
        read_state_dict(tmp_path / "short.pth")


def _nest(state: Dict[str, np.ndarray], qualified_name: str) -> ScriptModule:
    """A flat state as a TorchScript module tree: one object per dotted prefix."""
    children: Dict[str, Dict[str, np.ndarray]] = collections.OrderedDict()
    attributes: Dict[str, Any] = {"training": False}
    for name, value in state.items():
        head, _, rest = name.partition(".")
        if rest:
            children.setdefault(head, collections.OrderedDict())[rest] = value
        else:
            attributes[head] = value
    for head, sub in children.items():
        attributes[head] = _nest(sub, "__torch__.torch.nn.modules.container.Sequential")
    return ScriptModule(qualified_name, attributes)


def test_torchscript_style_module_archive_gives_its_state_dict(tmp_path: Path) -> None:
    source = _random_layer(seed=3)
    torch_state = torch_names(source.state_dict())
    save_torch(_nest(torch_state, "__torch__.models.Tiny"), tmp_path / "scripted.pth")
    got = read_state_dict(tmp_path / "scripted.pth")
    assert_same_arrays(got, dict(torch_state))
    target = _random_layer(seed=4)
    assign_state_dict(target, got, source="scripted.pth")
    np.testing.assert_array_equal(_run(target), _run(source))


# --- paddle files ---------------------------------------------------------------------------------


class Tiny(nn.Layer):
    """Conv + BatchNorm + transposed conv: the layer kinds Wav2Lip is made of."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2D(3, 4, 3, padding=1), nn.BatchNorm2D(4))
        self.up = nn.Conv2DTranspose(4, 2, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.up(nn.functional.relu(self.conv_block(x)))


def _random_layer(seed: int) -> Tiny:
    """A Tiny with every parameter and BatchNorm statistic random, in eval mode."""
    layer = Tiny()
    rng = np.random.default_rng(seed)
    for name, tensor in layer.state_dict().items():
        values = rng.standard_normal(tensor.shape).astype(np.float32)
        tensor.set_value(np.abs(values) + 0.5 if name.endswith("_variance") else values)
    layer.eval()
    return layer


def _run(layer: nn.Layer) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    return layer(paddle.to_tensor(x)).numpy()


def _numpy_state(layer: nn.Layer) -> Dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in layer.state_dict().items()}


@pytest.mark.parametrize("protocol", [2, 3, 4])
def test_pdparams_round_trip(tmp_path: Path, protocol: int) -> None:
    source = _random_layer(seed=1)
    paddle.save(source.state_dict(), str(tmp_path / "tiny.pdparams"), protocol=protocol)
    got = read_state_dict(tmp_path / "tiny.pdparams")
    assert_same_arrays(got, _numpy_state(source))  # and no StructuredToParameterName@@ entry
    target = _random_layer(seed=2)
    assign_state_dict(target, got, source="tiny.pdparams")
    np.testing.assert_array_equal(_run(target), _run(source))


def test_paddle_trainer_file_with_tensors_as_records_is_unwrapped(tmp_path: Path) -> None:
    source = _random_layer(seed=1)
    paddle.save({"netG": source.state_dict(), "epoch": 7}, str(tmp_path / "weight.pdparams"))
    assert_same_arrays(read_state_dict(tmp_path / "weight.pdparams"), _numpy_state(source))


def test_paddle_split_big_arrays_are_joined(tmp_path: Path) -> None:
    whole = np.arange(12, dtype=np.float32).reshape(3, 4)
    saved = {
        "w@@.0": whole.reshape(-1)[:5],
        "w@@.1": whole.reshape(-1)[5:],
        "b": np.ones(2, np.float32),
        "UnpackBigParamInfor@@": {"w": {"OriginShape": (3, 4), "slices": ["w@@.0", "w@@.1"]}},
    }
    (tmp_path / "big.pdparams").write_bytes(pickle.dumps(saved, protocol=2))
    got = read_state_dict(tmp_path / "big.pdparams")
    assert set(got) == {"w", "b"}
    np.testing.assert_array_equal(got["w"], whole)


# --- torch files of a paddle layer, end to end ----------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_training_checkpoint_in_torch_format_loads_into_paddle(tmp_path: Path, legacy: bool) -> None:
    source = _random_layer(seed=5)
    torch_state = torch_names(source.state_dict())
    save_torch(training_checkpoint(torch_state), tmp_path / "ckpt.pth", legacy=legacy)
    got = read_state_dict(tmp_path / "ckpt.pth")
    assert list(got) == list(torch_state)  # module. stripped, optimizer left out
    assert got["conv_block.1.num_batches_tracked"].dtype == np.int64
    target = _random_layer(seed=6)
    assign_state_dict(target, got, source="ckpt.pth")
    np.testing.assert_array_equal(_run(target), _run(source))


def test_values_are_cast_to_the_parameter_dtype() -> None:
    source = _random_layer(seed=7)
    state = {name: value.astype(np.float16) for name, value in _numpy_state(source).items()}
    target = _random_layer(seed=8)
    assign_state_dict(target, state, source="half.pth")
    for name, tensor in target.state_dict().items():
        assert tensor.dtype == paddle.float32
        np.testing.assert_array_equal(tensor.numpy(), state[name].astype(np.float32))


def test_torch_names_map_to_paddle_names() -> None:
    renamed = to_paddle_names({"a.running_mean": 1, "a.running_var": 2, "a.num_batches_tracked": 3, "a.weight": 4})
    assert renamed == {"a._mean": 1, "a._variance": 2, "a.weight": 4}


# --- strict loading -------------------------------------------------------------------------------


def test_mismatched_state_lists_every_problem_and_changes_nothing() -> None:
    target = _random_layer(seed=9)
    before = _numpy_state(target)
    state = dict(torch_names(_random_layer(seed=10).state_dict()))
    del state["conv_block.1.running_mean"]
    state["extra.weight"] = np.zeros(3, np.float32)
    state["up.bias"] = np.zeros(5, np.float32)
    with pytest.raises(LipSyncError) as caught:
        assign_state_dict(target, state, source="odd.pth", hint="Is this a Wav2Lip generator checkpoint?")
    message = str(caught.value)
    assert message == (
        "odd.pth does not match the Tiny model: 1 missing (conv_block.1._mean), 1 unexpected (extra.weight), "
        "1 with the wrong shape (up.bias (file [5], model [2])). Is this a Wav2Lip generator checkpoint?"
    )
    assert_same_arrays(_numpy_state(target), before)


def test_long_lists_are_cut_with_a_count_and_stay_on_one_line() -> None:
    """The CLI prints errors as one line: hundreds of names are counted, a few shown."""
    target = _random_layer(seed=12)
    state = {f"junk.{i}.weight": np.zeros(1, np.float32) for i in range(25)}
    with pytest.raises(LipSyncError) as caught:
        assign_state_dict(target, state, source="junk.pth")
    message = str(caught.value)
    assert "\n" not in message
    names = list(target.state_dict())
    assert message == (
        f"junk.pth does not match the Tiny model: {len(names)} missing ({', '.join(names[:3])}, … and "
        f"{len(names) - 3} more), 25 unexpected (junk.0.weight, junk.1.weight, junk.2.weight, … and 22 more)."
    )


# --- files that must not load ---------------------------------------------------------------------


def _reduce_pickle(module: str, name: str, argument: str) -> bytes:
    """A protocol-2 pickle that calls module.name(argument) when loaded by a trusting unpickler."""
    text = argument.encode()
    return b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"(X" + len(text).to_bytes(4, "little") + text + b"tR."


def _in_container(payload: bytes, container: str, path: Path) -> Path:
    if container == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    elif container == "legacy":
        headers = b"".join(pickle.dumps(h, protocol=2) for h in (LEGACY_MAGIC, LEGACY_PROTOCOL, LEGACY_SYS_INFO))
        path.write_bytes(headers + payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("container", ["pickle", "zip", "legacy"])
@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("subprocess", "getoutput")])
def test_code_running_pickles_are_refused(tmp_path: Path, container: str, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    path = _in_container(_reduce_pickle(module, name, f"touch {marker}"), container, tmp_path / "evil.pth")
    with pytest.raises(LipSyncError) as caught:
        read_state_dict(path)
    assert f"refuses to load {path}: it asks for {module}.{name}, which a weights file never needs" in str(caught.value)
    assert not marker.exists()


def test_eval_in_a_pickle_evaluates_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code = f"__import__('os').system('touch {marker}')"
    payload = b"\x80\x02cbuiltins\neval\n(X" + len(code).to_bytes(4, "little") + code.encode() + b"}tR."
    path = _in_container(payload, "pickle", tmp_path / "evil.pdparams")
    with pytest.raises(LipSyncError, match="is damaged or is not a weights file"):
        read_state_dict(path)
    assert not marker.exists()


def test_unsupported_torch_tensor_kinds_are_named(tmp_path: Path) -> None:
    path = _in_container(_reduce_pickle("torch._utils", "_rebuild_qtensor", "x"), "zip", tmp_path / "q.pth")
    with pytest.raises(LipSyncError, match=r"torch\._utils\._rebuild_qtensor, a kind of tensor lipsync cannot read"):
        read_state_dict(path)


@pytest.mark.parametrize("fixture", [ZIP_FIXTURE, LEGACY_FIXTURE], ids=["zip", "legacy"])
@pytest.mark.parametrize("keep", [1, 16, 0.25, 0.5, 0.9, -1])
def test_truncated_torch_files_are_reported_as_damaged(tmp_path: Path, fixture: Path, keep: float) -> None:
    data = fixture.read_bytes()
    cut = int(keep) if isinstance(keep, int) and keep > 0 else (len(data) - 1 if keep == -1 else int(len(data) * keep))
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:cut])
    with pytest.raises(LipSyncError, match=r"cut\.pth is (damaged|not a weights file)"):
        read_state_dict(path)


def test_truncated_pdparams_is_reported_as_damaged(tmp_path: Path) -> None:
    paddle.save(_random_layer(seed=1).state_dict(), str(tmp_path / "full.pdparams"))
    data = (tmp_path / "full.pdparams").read_bytes()
    (tmp_path / "cut.pdparams").write_bytes(data[: len(data) // 2])
    with pytest.raises(LipSyncError, match=r"cut\.pdparams is damaged"):
        read_state_dict(tmp_path / "cut.pdparams")


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "is empty"),
        (b"<html>404 Not Found</html>", "is not a weights file"),
        (b"\x80" + bytes(range(256)) * 4, "is damaged or is not a weights file"),
        (pickle.dumps([1, 2, 3], protocol=2), "holds a list, not a dict of weights"),
        (pickle.dumps({"epoch": 3}, protocol=2), "holds no weights"),
    ],
    ids=["empty", "html", "garbage", "list", "no-tensors"],
)
def test_files_that_are_not_weights_say_so(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(LipSyncError, match=f"{path} {reason}"):
        read_state_dict(path)


def test_a_zip_that_is_not_a_checkpoint_says_so(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as archive:
        archive.writestr("photos/readme.txt", "hello")
    with pytest.raises(LipSyncError, match="is a zip file but not a torch checkpoint"):
        read_state_dict(tmp_path / "photos.zip")


def test_missing_path_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(LipSyncError, match="nope.pth does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(LipSyncError, match="is not a file"):
        read_state_dict(tmp_path)
