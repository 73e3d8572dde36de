"""benchmarks/reference.py without torch or the reference: weight names, command lines, the measuring helper, table."""

from __future__ import annotations

import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import reference  # noqa: E402
from torchfile_writer import save_torch  # noqa: E402

from lipsync import checkpoint, cli, testing  # noqa: E402

ALLOCATED_MB = 300  # a child touching this much must report at least this peak
SMALL_PEAK_MB = 150  # a bare Python stays well under this
BOX = (66, 171, 177, 272)


def _child(code: str) -> list:
    return [sys.executable, "-c", code]


ALLOCATE = f"import numpy; a = numpy.ones({ALLOCATED_MB} * 2**20, numpy.uint8); print(a.sum())"


def test_torch_names_rename_batchnorm_statistics_and_add_the_counter():
    state = {"conv.weight": np.ones((2, 1, 3, 3), np.float32), "bn._mean": np.zeros(2, np.float32),
             "bn._variance": np.ones(2, np.float32), "bn.weight": np.ones(2, np.float32)}  # fmt: skip
    named = reference.torch_names(state, "module.")
    assert sorted(named) == ["module.bn.num_batches_tracked", "module.bn.running_mean", "module.bn.running_var",
                             "module.bn.weight", "module.conv.weight"]  # fmt: skip
    assert named["module.bn.num_batches_tracked"].dtype == np.int64
    np.testing.assert_array_equal(named["module.bn.running_var"], state["bn._variance"])


@pytest.mark.parametrize("kind", ["wav2lip", "s3fd"])
def test_exported_names_load_strictly_as_torch_checkpoints(tmp_path, kind):
    """The names written for the reference are the ones a torch checkpoint of the real network has: lipsync's
    strict torch-file loader (checked against Rudrabha's and face_alignment's files) takes them back unchanged."""
    from lipsync.model import Wav2Lip
    from lipsync.s3fd import S3FD

    if kind == "wav2lip":
        state, layer, wrap = testing.random_wav2lip_state(3), Wav2Lip(), True
    else:
        state, layer, wrap = testing.planted_s3fd_state(3, reference.PLANTED_HEAD), S3FD(), False
    named = reference.torch_names(state, reference.DATA_PARALLEL_PREFIX if wrap else "")
    path = tmp_path / f"{kind}.pth"
    save_torch({"state_dict": named} if wrap else named, path)
    checkpoint.assign_state_dict(layer, checkpoint.read_state_dict(path), source=str(path))
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[name], err_msg=name)


@pytest.mark.parametrize("loc", [reference.PLANTED_LOC, testing.PLANTED_LOC], ids=["benchmark", "tests-default"])
def test_every_planted_face_overlaps_the_frame_whichever_the_reference_takes(loc):
    """The reference takes the first of the planted head's equal-scored boxes in its unstable argsort's order,
    which differs by CPU: each candidate must overlap the frame, or its face crop is empty and inference.py fails
    (as it did on an AVX2-only CPU, taking the last anchor). The head's anchors reach past the frame's right and
    bottom edges at any size: a small frame shows it. lipsync.testing's default offsets are the counter-example."""
    import paddle

    from lipsync import s3fd

    height, width = 136, 200
    model = s3fd.S3FD()
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in
                          testing.planted_s3fd_state(3, reference.PLANTED_HEAD, loc).items()})  # fmt: skip
    model.eval()
    boxes = s3fd.detect(model, [np.zeros((height, width, 3), np.uint8)], nms_threshold=1.0)[0]  # none suppressed
    assert len(boxes) > 4 and (boxes[:, 2] > width).any(), "anchors beyond the frame, as on a 720p one"
    inside = (boxes[:, 0] < width) & (boxes[:, 1] < height) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    assert inside.all() == (loc == reference.PLANTED_LOC)


def test_command_lines_give_both_tools_the_same_box_and_files(tmp_path):
    face, speech, out = tmp_path / "face.png", tmp_path / "speech.wav", tmp_path / "out.mp4"
    ckpt, s3fd = tmp_path / "w.pth", tmp_path / "s.pth"
    ours = reference.lipsync_command(face, speech, out, ckpt, s3fd, BOX)
    theirs = reference.reference_command(Path("/py"), "picture.png", "picture.wav", "results/p.mp4", ckpt, BOX)
    assert ours[:3] == [sys.executable, "-m", "lipsync"]
    assert ours[ours.index("--box") + 1:][:4] == theirs[theirs.index("--box") + 1:][:4] == [str(v) for v in BOX]
    assert ours[ours.index("--checkpoint_path") + 1] == theirs[theirs.index("--checkpoint_path") + 1] == str(ckpt)
    assert theirs[:2] == ["/py", "inference.py"] and "/" not in theirs[theirs.index("--face") + 1]
    args = cli.build_parser().parse_args(ours[3:])  # lipsync's own parser takes the command as built
    assert (args.box, Path(args.detector_weights)) == (list(BOX), s3fd)
    assert "--box" not in reference.lipsync_command(face, speech, out, ckpt, s3fd, None)
    video = reference.reference_command(Path("/py"), "v.mp4", "v.wav", "o.mp4", ckpt, None, detect_batch=4)
    assert "--box" not in video and video[video.index("--face_det_batch_size") + 1] == "4"
    assert "--face_det_batch_size" not in theirs, "the reference's own default unless a batch is given"


def test_lipsync_commands_run_wherever_the_benchmark_is_started(tmp_path, monkeypatch):
    """`python -m lipsync` finds the checkout without an install or PYTHONPATH, from any working directory."""
    monkeypatch.chdir(tmp_path)
    env = {name: value for name, value in reference.thread_env(1).items() if name != "PYTHONPATH"}
    command = reference.lipsync_command(Path("f.png"), Path("s.wav"), Path("o.mp4"), Path("w"), Path("d"))[:3]
    run = reference.measure([*command, "--help"], reference.LIPSYNC_CWD, env)
    assert run.returncode == 0, run.stderr
    assert not list(tmp_path.iterdir()), "nothing written to the working directory"


def test_measure_reports_the_childs_peak_rss_exit_status_and_cpu(tmp_path):
    big = reference.measure(_child(ALLOCATE), tmp_path, {})
    assert big.returncode == 0 and big.peak_mb >= ALLOCATED_MB and big.cpu_seconds > 0
    # spawned straight from this process (paddle loaded), the child's ru_maxrss would be at least ours
    small = reference.measure(_child("import sys; sys.stderr.write('oops'); sys.exit(3)"), tmp_path, {})
    assert (small.returncode, small.stderr) == (3, "oops") and small.peak_mb < SMALL_PEAK_MB


def test_measure_peak_covers_a_waited_for_grandchild_as_time_does(tmp_path):
    """wait4's peak is the largest single process of the tree (as /usr/bin/time -f %M), e.g. a child's ffmpeg."""
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {ALLOCATE!r}], check=True)"
    run = reference.measure(_child(code), tmp_path, {})
    assert run.returncode == 0 and run.peak_mb >= ALLOCATED_MB


def test_reference_copy_has_the_weights_where_it_looks_and_no_git(tmp_path):
    tree = tmp_path / "Wav2Lip"
    (tree / reference.REFERENCE_S3FD).parent.mkdir(parents=True)
    (tree / ".git").mkdir()
    (tree / "inference.py").write_text("print(1)\n")
    s3fd = tmp_path / "planted.pth"
    s3fd.write_bytes(b"weights")
    copy = reference.reference_copy(tree, tmp_path / "scratch", s3fd)
    assert (copy / reference.REFERENCE_S3FD).read_bytes() == b"weights" and (copy / "temp").is_dir()
    assert not (copy / ".git").exists() and not (tree / "temp").exists(), "the checkout itself is left alone"


def test_summary_takes_each_tools_best_and_the_table_shows_it():
    job = reference.Job("picture", "picture case", [], [], Path("."), 342)
    job.runs["lipsync"] = [reference.Run(20.0, 30.0, 1000.0, 0), reference.Run(10.0, 25.0, 1100.0, 0)]
    job.runs["reference"] = [reference.Run(40.0, 70.0, 2000.0, 0), reference.Run(50.0, 75.0, 2100.0, 0)]
    found = reference.summary(job)
    assert (found["lipsync_seconds"], found["reference_seconds"], found["speedup"]) == (10.0, 40.0, 4.0)
    assert (found["cpu_ratio"], found["lipsync_peak_mb"], found["reference_peak_mb"]) == (70 / 25, 1100.0, 2100.0)
    results = {"cpu": "a CPU", "torch": "torch 2", "commit": "abc", "threads": 2, "reference_detect_batch": 4,
               "cases": {"picture": found}}  # fmt: skip
    printed = io.StringIO()
    with redirect_stdout(printed):
        reference.print_comparison(results)
    row = [line for line in printed.getvalue().splitlines() if line.startswith("| picture case")]
    assert row == ["| picture case | 342 | 10.0 | 40.0 | 4.0x | 25.0 | 70.0 | 2.8x | 1100 | 2100 |"]


def test_without_a_reference_the_table_says_how_to_get_one():
    printed = io.StringIO()
    with redirect_stdout(printed):
        reference.print_comparison(None)
    assert reference.NOT_MEASURED in printed.getvalue()


def test_the_command_line_refuses_to_run_without_a_reference():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "reference.py")], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--reference" in done.stderr
