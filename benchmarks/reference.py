"""lipsync's CLI against Rudrabha/Wav2Lip's inference.py: same inputs, same weights, same threads, fresh processes.

    python benchmarks/reference.py --reference /tmp/ref-work/Wav2Lip --reference-python /tmp/ref-work/venv/bin/python

The reference is never shipped: it is a checkout of REFERENCE_URL at REFERENCE_COMMIT that the user
fetches, run as a subprocess with its own Python (torch CPU; benchmarks/README.md, "Against the
reference", sets it up). Both tools load the same torch checkpoints: a random Wav2Lip and an S3FD
whose stride-64 head is planted (lipsync.testing), written by torch.save in the reference's Python
from arrays this process exports. lipsync runs as `python -m lipsync` with its export cache warm;
inference.py runs in a scratch copy of its tree (it writes temp/result.avi into its working
directory and calls ffmpeg through a shell). fresh_process.measure times each run and reads its
peak RSS and CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from fresh_process import Run, measure
from workload import FPS, PLANTED_HEAD, PLANTED_LOC, ROOT, SEED, cpu_model, make_photo, make_speech, make_video, note

REFERENCE_URL = "https://github.com/Rudrabha/Wav2Lip"
REFERENCE_COMMIT = "5c90fa9b4a2c2a37d0b4ebf7633ac41534eb9941"
REFERENCE_S3FD = Path("face_detection/detection/sfd/s3fd.pth")  # where inference.py's S3FD looks for weights
DATA_PARALLEL_PREFIX = "module."  # Rudrabha's checkpoints were saved from nn.DataParallel
PAIRS = ((".running_mean", "._mean"), (".running_var", "._variance"))  # torch ↔ paddle BatchNorm statistics
BATCHES_TRACKED = ".num_batches_tracked"  # torch-only BatchNorm counter
# The astronaut's face in scikit-image's 512x512 photo (OpenCV's Haar cascade: x 177-272, y 66-161), 10 px
# more below for the chin as the reference's default pads add: top, bottom, left, right.
PICTURE_BOX = (66, 171, 177, 272)
PICTURE_SECONDS = 13.8  # the measurement: 342 output frames
VIDEO_SECONDS = 4.0  # the reference runs S3FD on every 720p frame: seconds per frame on 2 CPU cores
VIDEO_SIZE = (1280, 720)
VIDEO_MARGIN_S = 1.0  # the clip outlasts the speech (the reference uses its first frames only)
# The reference's S3FD batch on the video. Its default, 16, peaks at 11.6 GB at 720p (a 1-s run here) and was
# killed by the kernel's OOM killer on this shared 23 GB machine; 4 frames per batch take the same time per frame.
REFERENCE_DETECT_BATCH = 4
LIPSYNC_CWD = ROOT  # where `python -m lipsync` runs: it finds the checkout this benchmark imports, installed or not
WARM_SECONDS = 1.0  # speech of the untimed warm-up runs
REPEATS = 2
CPU_FEATURES = frozenset({"amx_bf16", "amx_int8", "amx_tile", "avx512f", "avx512_bf16"})  # shown with the table
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LIPSYNC_THREADS")

# Run by the reference's Python (torch): one npz of torch-named arrays → one torch.save file.
TORCH_SAVE = """
import sys, numpy, torch
arrays = numpy.load(sys.argv[1])
state = {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}
torch.save({"state_dict": state} if sys.argv[3] == "wrapped" else state, sys.argv[2])
"""


@dataclass
class Job:
    """One case as both tools run it."""

    key: str
    label: str
    lipsync: List[str]
    reference: List[str]
    reference_cwd: Path
    frames: int
    runs: Dict[str, List[Run]] = field(default_factory=lambda: {"lipsync": [], "reference": []})


# ---------------------------------------------------------------- weights


def torch_names(state: Mapping[str, np.ndarray], prefix: str = "") -> Dict[str, np.ndarray]:
    """A paddle state under torch's names (BatchNorm statistics renamed, their batch counter added), prefixed."""
    out: Dict[str, np.ndarray] = {}
    for name, value in state.items():
        for torch_suffix, paddle_suffix in PAIRS:
            if name.endswith(paddle_suffix):
                name = name[: -len(paddle_suffix)] + torch_suffix
                if torch_suffix == PAIRS[0][0]:
                    out[prefix + name[: -len(torch_suffix)] + BATCHES_TRACKED] = np.array(0, np.int64)
                break
        out[prefix + name] = np.ascontiguousarray(value)
    return out


def export_weights(folder: Path) -> Tuple[Path, Path]:
    """The benchmark's random Wav2Lip (DataParallel names, as Rudrabha's checkpoints) and planted S3FD (bare)
    as torch-named npz files."""
    from lipsync import testing

    folder.mkdir(parents=True, exist_ok=True)
    wav2lip, s3fd = folder / "wav2lip.npz", folder / "s3fd.npz"
    np.savez(wav2lip, **torch_names(testing.random_wav2lip_state(SEED), DATA_PARALLEL_PREFIX))
    np.savez(s3fd, **torch_names(testing.planted_s3fd_state(SEED, PLANTED_HEAD, PLANTED_LOC)))
    return wav2lip, s3fd


def torch_save(python: Path, npz: Path, out: Path, wrapped: bool) -> Path:
    """Write `npz` as a torch checkpoint with the reference's Python ({"state_dict": ...} when `wrapped`)."""
    cmd = [str(python), "-c", TORCH_SAVE, str(npz), str(out), "wrapped" if wrapped else "bare"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torch.save with {python} failed:\n{done.stderr[-2000:]}")
    return out


def checkpoints(python: Path, folder: Path) -> Tuple[Path, Path]:
    """The shared torch checkpoints: (Wav2Lip training-style checkpoint, bare S3FD state_dict)."""
    wav2lip, s3fd = export_weights(folder)
    return (torch_save(python, wav2lip, folder / "wav2lip.pth", wrapped=True),
            torch_save(python, s3fd, folder / "planted_s3fd.pth", wrapped=False))  # fmt: skip


def reference_copy(reference: Path, scratch: Path, s3fd: Path) -> Path:
    """A scratch copy of the reference's tree with the planted S3FD where it looks, and its temp/ folder."""
    tree = scratch / "Wav2Lip"
    shutil.copytree(reference, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pth", "*.avi", "*.mp4"))
    shutil.copyfile(s3fd, tree / REFERENCE_S3FD)
    (tree / "temp").mkdir(exist_ok=True)
    return tree


# ---------------------------------------------------------------- command lines


def lipsync_command(face: Path, speech: Path, out: Path, checkpoint: Path, detector: Path,
                    box: Optional[Sequence[int]] = None) -> List[str]:  # fmt: skip
    """`python -m lipsync` as a user runs it, with the shared weights files."""
    cmd = [sys.executable, "-m", "lipsync", "--face", str(face), "--audio", str(speech), "--outfile", str(out),
           "--checkpoint_path", str(checkpoint), "--detector_weights", str(detector), "--quiet"]  # fmt: skip
    return cmd + (["--box", *map(str, box)] if box else [])


def reference_command(python: Path, face: str, speech: str, out: str, checkpoint: Path,
                      box: Optional[Sequence[int]] = None, detect_batch: int = 0) -> List[str]:  # fmt: skip
    """inference.py with its defaults but the S3FD batch (`detect_batch`, 0: its default). `face`, `speech` and
    `out` are names inside its working directory: it tells a picture from a video by what follows the first dot."""
    cmd = [str(python), "inference.py", "--checkpoint_path", str(checkpoint), "--face", face, "--audio", speech,
           "--outfile", out]  # fmt: skip
    cmd += ["--face_det_batch_size", str(detect_batch)] if detect_batch else []
    return cmd + (["--box", *map(str, box)] if box else [])


def thread_env(threads: int) -> Dict[str, str]:
    """The environment both tools run in: the same thread count for torch/oneDNN (OpenMP) and lipsync."""
    return {**os.environ, **{name: str(threads) for name in THREAD_VARIABLES}}


# ---------------------------------------------------------------- measuring


def run_interleaved(jobs: Sequence[Job], repeats: int, env: Mapping[str, str], cwd: Path) -> None:
    """`repeats` rounds, each running every job with lipsync then the reference, so load drifts hit both alike."""
    for round_ in range(repeats):
        for job in jobs:
            for tool, cmd, where in (("lipsync", job.lipsync, cwd), ("reference", job.reference, job.reference_cwd)):
                run = measure(cmd, where, env)
                if run.returncode != 0:
                    raise RuntimeError(f"{tool} failed on {job.label} (exit {run.returncode}):\n{run.stderr}")
                job.runs[tool].append(run)
                note(f"{job.label}, round {round_ + 1}: {tool} {run.seconds:.1f} s ({run.cpu_seconds:.1f} s CPU), "
                     f"peak {run.peak_mb:.0f} MB, load {os.getloadavg()[0]:.1f}")


def summary(job: Job) -> Dict[str, object]:
    """Best (shortest) run of each tool, its speed-up in wall and CPU time, the peaks, and every run."""
    best = {tool: min(runs, key=lambda run: run.seconds) for tool, runs in job.runs.items()}
    cpu = {tool: min(run.cpu_seconds for run in runs) for tool, runs in job.runs.items()}
    return {"label": job.label, "frames": job.frames, "speedup": best["reference"].seconds / best["lipsync"].seconds,
            "cpu_ratio": cpu["reference"] / cpu["lipsync"],
            **{f"{tool}_seconds": run.seconds for tool, run in best.items()},
            **{f"{tool}_cpu_seconds": seconds for tool, seconds in cpu.items()},
            **{f"{tool}_peak_mb": max(r.peak_mb for r in job.runs[tool]) for tool in job.runs},
            "runs": {tool: [[round(r.seconds, 2), round(r.cpu_seconds, 2), round(r.peak_mb)] for r in runs]
                     for tool, runs in job.runs.items()}}  # fmt: skip


# ---------------------------------------------------------------- the two cases


@dataclass(frozen=True)
class Setup:
    """Where everything lives for one comparison."""

    reference: Path  # the scratch copy of the reference's tree (its working directory)
    python: Path  # the reference's Python (torch)
    checkpoint: Path  # shared Wav2Lip torch checkpoint
    detector: Path  # shared planted S3FD torch state_dict
    folder: Path  # inputs and lipsync's outputs
    detect_batch: int  # the reference's S3FD batch (0: its default)


def _reference_input(setup: Setup, source: Path, name: str) -> str:
    """`source` linked into the reference's working directory under a dotless-path name it can parse."""
    link = setup.reference / name
    link.unlink(missing_ok=True)
    link.symlink_to(source)
    return name


def make_job(setup: Setup, key: str, label: str, face: Path, speech: Path,
             box: Optional[Sequence[int]]) -> Job:  # fmt: skip
    """Both command lines for one case (picture with a box, or video with default detection)."""
    from lipsync import audio

    ref_face = _reference_input(setup, face, f"{key}{face.suffix}")
    ref_speech = _reference_input(setup, speech, f"{key}.wav")
    frames = audio.frame_count(audio.melspectrogram(audio.load_audio(speech)).shape[1], FPS)
    return Job(key, label,
               lipsync_command(face, speech, setup.folder / f"lipsync-{key}.mp4", setup.checkpoint, setup.detector, box),
               reference_command(setup.python, ref_face, ref_speech, f"results/{key}.mp4", setup.checkpoint, box,
                                 0 if box else setup.detect_batch),
               setup.reference, frames)  # fmt: skip


def make_jobs(setup: Setup, picture_seconds: float, video_seconds: float,
              cases: Sequence[str]) -> List[Job]:  # fmt: skip
    """The picture case (astronaut 512x512 with --box) and the 720p video case (default S3FD detection)."""
    photo = make_photo(setup.folder)
    jobs = []
    if "picture" in cases:
        speech = make_speech(setup.folder, picture_seconds, "ref-picture.wav")
        jobs.append(make_job(setup, "picture", f"picture 512x512 + {picture_seconds:g} s speech, --box", photo,
                             speech, PICTURE_BOX))  # fmt: skip
    if "video" in cases:
        speech = make_speech(setup.folder, video_seconds, "ref-video.wav")
        width, height = VIDEO_SIZE
        clip = make_video(photo, setup.folder, video_seconds + VIDEO_MARGIN_S, VIDEO_SIZE, "ref-video.mp4")
        jobs.append(make_job(setup, "video", f"video {width}x{height}, {video_seconds:g} s, S3FD", clip, speech,
                             None))  # fmt: skip
    return jobs


def warm_up(setup: Setup, jobs: Sequence[Job], env: Mapping[str, str]) -> None:
    """Untimed short runs: lipsync once per case (its export cache, as after a user's first run) and the reference
    once (the OS file cache holds torch as it holds paddle)."""
    speech = make_speech(setup.folder, WARM_SECONDS, "ref-warm.wav")
    for job in jobs:
        face = Path(job.lipsync[job.lipsync.index("--face") + 1])
        warm = make_job(setup, f"warm-{job.key}", job.label, face, speech, _box(job.lipsync))
        _check(measure(warm.lipsync, LIPSYNC_CWD, env), f"lipsync warm-up ({job.label})")
        if job is jobs[0]:
            _check(measure(warm.reference, setup.reference, env), f"reference warm-up ({job.label})")


def _box(cmd: Sequence[str]) -> Optional[List[int]]:
    return [int(v) for v in cmd[cmd.index("--box") + 1:][:4]] if "--box" in cmd else None


def _check(run: Run, what: str) -> None:
    if run.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {run.returncode}):\n{run.stderr}")


def compare(reference: Path, python: Path, folder: Path, *, picture_seconds: float = PICTURE_SECONDS,
            video_seconds: float = VIDEO_SECONDS, repeats: int = REPEATS,
            cases: Sequence[str] = ("picture", "video"),
            detect_batch: int = REFERENCE_DETECT_BATCH) -> Dict[str, object]:  # fmt: skip
    """Every figure of the comparison, with inputs, weights and the reference's copy under `folder`."""
    from lipsync import cpu

    threads = cpu.cpu_threads()
    env = thread_env(threads)
    checkpoint, detector = checkpoints(python, folder / "weights")
    tree = reference_copy(reference, folder / "reference", detector)
    setup = Setup(tree, python, checkpoint, detector, folder, detect_batch)
    jobs = make_jobs(setup, picture_seconds, video_seconds, cases)
    note(f"against the reference: warm-up runs, then {repeats} interleaved rounds on {threads} threads")
    warm_up(setup, jobs, env)
    run_interleaved(jobs, repeats, env, LIPSYNC_CWD)
    return {"threads": threads, "torch": _reference_version(python), "commit": REFERENCE_COMMIT,
            "reference_detect_batch": detect_batch,
            "cpu": f"{cpu_model()} ({', '.join(sorted(cpu.cpu_flags() & CPU_FEATURES)) or 'no AMX/AVX-512'})",
            "cases": {job.key: summary(job) for job in jobs}}  # fmt: skip


def _reference_version(python: Path) -> str:
    code = "import torch, librosa; print(f'torch {torch.__version__}, librosa {librosa.__version__}')"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


# ---------------------------------------------------------------- table

HEADER = ("case", "frames", "lipsync s", "reference s", "speed-up", "lipsync CPU s", "reference CPU s", "CPU ratio",
          "lipsync peak MB", "reference peak MB")
NOT_MEASURED = "not measured: pass --reference DIR --reference-python PATH (benchmarks/README.md)"


def print_comparison(results: Optional[Mapping[str, object]]) -> None:
    """The side-by-side table (best run of each; every run below it), or why there is none."""
    print("\n## Against the reference (Rudrabha/Wav2Lip inference.py, torch CPU)\n")
    if not results:
        print(NOT_MEASURED)
        return
    print(f"{results['cpu']}; {results['torch']}; reference commit {str(results['commit'])[:10]}; "
          f"{results['threads']} threads each; reference S3FD batch {results['reference_detect_batch'] or 16}\n")
    print("| " + " | ".join(HEADER) + " |")
    print("| --- " + "| ---: " * (len(HEADER) - 1) + "|")
    cases = results["cases"]
    assert isinstance(cases, dict)
    for case in cases.values():
        print(f"| {case['label']} | {case['frames']} | {case['lipsync_seconds']:.1f} | {case['reference_seconds']:.1f}"
              f" | {case['speedup']:.1f}x | {case['lipsync_cpu_seconds']:.1f} | {case['reference_cpu_seconds']:.1f}"
              f" | {case['cpu_ratio']:.1f}x | {case['lipsync_peak_mb']:.0f} | {case['reference_peak_mb']:.0f} |")
    for case in cases.values():
        runs = case["runs"]
        print(f"\n{case['label']}: every run (s, CPU s, peak MB): lipsync {runs['lipsync']}, reference {runs['reference']}")


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags bench.py shares with this module's own command line."""
    parser.add_argument("--reference", type=Path, help=f"a checkout of {REFERENCE_URL} to compare against")
    parser.add_argument("--reference-python", type=Path, help="the Python (with torch) that runs --reference")
    parser.add_argument("--reference-repeats", type=int, default=REPEATS,
                        help=f"interleaved rounds against the reference (default {REPEATS})")
    parser.add_argument("--reference-picture-seconds", type=float, default=PICTURE_SECONDS,
                        help=f"speech of the picture case (default {PICTURE_SECONDS})")
    parser.add_argument("--reference-video-seconds", type=float, default=VIDEO_SECONDS,
                        help=f"speech of the 720p video case (default {VIDEO_SECONDS})")
    parser.add_argument("--reference-detect-batch", type=int, default=REFERENCE_DETECT_BATCH,
                        help=f"the reference's --face_det_batch_size on the video (default {REFERENCE_DETECT_BATCH}; "
                             "0 = its own 16, which needs ~12 GB at 720p)")


def against_reference(args: argparse.Namespace, folder: Path,
                      cases: Sequence[str] = ("picture", "video")) -> Optional[Dict[str, object]]:  # fmt: skip
    """The comparison when --reference was given (both flags are needed), else None."""
    if args.reference is None:
        return None
    if args.reference_python is None or not (args.reference / "inference.py").is_file():
        raise SystemExit("--reference needs a checkout with inference.py and --reference-python (its torch Python)")
    return compare(args.reference.resolve(), args.reference_python.absolute(), folder / "against-reference",
                   picture_seconds=args.reference_picture_seconds, video_seconds=args.reference_video_seconds,
                   repeats=args.reference_repeats, cases=cases,
                   detect_batch=args.reference_detect_batch)  # fmt: skip


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    parser.add_argument("--cases", default="picture,video", help="comma-separated: picture, video")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.reference is None:
        parser.error("--reference DIR is required")
    import lipsync  # noqa: F401  (before paddle: it quiets paddle's C++ logging)
    import paddle  # noqa: F401  (it installs its own SIGTERM handler: ours must come after)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the launcher stops and the temp dir is removed
    with tempfile.TemporaryDirectory(prefix="lipsync-reference-") as tmp:
        os.environ.update({"LIPSYNC_CACHE": str(Path(tmp) / "cache"), "HF_HUB_OFFLINE": "1"})
        results = against_reference(args, Path(tmp), args.cases.split(","))
    print_comparison(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
