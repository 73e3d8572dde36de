"""Times every lipsync stage and whole runs on media and random weights it makes itself; prints one table.

    python benchmarks/bench.py                  # still + 15 s speech, 30 s 720p video, generator runtime vs dygraph
    python benchmarks/bench.py --quick          # seconds-long smoke run on tiny inputs
    python benchmarks/bench.py --memory-check   # adds peak RSS of a 1-minute and a --minutes 720p video
    python benchmarks/bench.py --enhancement --cases still   # adds face enhancement (GPEN-512) rows
    python benchmarks/bench.py --reference DIR --reference-python PY   # + against Rudrabha's inference.py

Timing does not depend on weight values, so the networks are the real architectures with random
weights. The S3FD classifier heads are planted so a few face-sized anchors per frame score as faces
(as real weights do, so box decoding costs what it will), and every detection goes through real S3FD
inference; the boxes the pipeline follows come from OpenCV's Haar cascade on the same input
(`bench_engine`), since random weights cannot find the real face.
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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from reference import add_arguments as add_reference_arguments
from reference import against_reference, print_comparison
from report import generator_summary, nums, print_report
from startup import STARTUP_RUNS, startup
from tasks import child_main
from workload import (ENHANCE_SECONDS, ENHANCER_FACES, ENHANCER_SIZE, FULL, MEMORY_SHORT_MINUTES, QUICK,
                      QUICK_ENHANCER_SIZE, SEED, VIDEO_MARGIN_S, Case, Sizes, machine, make_cases, make_photo,
                      make_speech, make_video, make_weights, note, output_frames, still_size)

# ---------------------------------------------------------------- child processes (tasks.py): each one starts fresh


def run_child(task: str, spec: Dict[str, Any], profile: Optional[Path] = None) -> Dict[str, Any]:
    """One measurement in a fresh Python process (optionally under py-spy), so no case inherits another's memory."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps({"task": task, **spec})]
    if profile is not None:
        cmd = [_py_spy(), "record", "--rate", "25", "--idle", "--format", "raw", "--output", str(profile), "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the {task} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def _py_spy() -> str:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


def enhancement(args: argparse.Namespace, folder: Path, photo: Path, sizes: Sizes,
                options: Dict[str, Any]) -> Dict[str, Any]:  # fmt: skip
    """GPEN alone, then a short still case end to end with face enhancement on (random GPEN weights)."""
    from lipsync import testing

    side = args.enhancer_size or (QUICK_ENHANCER_SIZE if args.quick else ENHANCER_SIZE)
    gpen = testing.save_random_gpen(Path(os.environ["LIPSYNC_MODELS"]) / f"gpen{side}.pdparams", side, SEED)
    on = {**options, "face_enhancement": True, "enhancer_weights": str(gpen)}
    seconds = args.enhance_seconds
    speech = make_speech(folder, seconds, "enhanced.wav")
    case = Case("enhanced", f"still {still_size(photo)} + {seconds:g} s speech, face enhancement (GPEN-{side})",
                photo, speech, seconds, output_frames(speech), True)  # fmt: skip
    alone = run_child("enhancer", _spec(case, on, faces=ENHANCER_FACES))
    note(f"GPEN-{side} alone: {alone['fps']:.3f} faces/s ({alone['precision']}); end to end, {case.frames} frames")
    e2e = end_to_end(case, on, sizes, folder)
    note(f"{case.label}: end to end {e2e['fps']:.3f} frames/s")
    return {"label": case.label, "frames": case.frames, "alone": alone, "e2e": e2e}


def _spec(case: Case, options: Dict[str, Any], **extra: Any) -> Dict[str, Any]:
    return {"case": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(case).items()}, "options": options,
            **extra}


def end_to_end(case: Case, options: Dict[str, Any], sizes: Sizes, folder: Path,
               profile: Optional[Path] = None, runs: int = 1) -> Dict[str, Any]:
    """One case's best of `runs` whole runs: frames/s and real-time factor with the networks already loaded,
    and the highest peak RSS."""
    spec = _spec(case, options, sizes=asdict(sizes), outfile=str(folder / f"{case.key}-out.mp4"), runs=runs)
    child = run_child("e2e", spec, profile)
    child["fps"] = child["frames"] / child["seconds"]
    child["rtf"] = child["seconds"] / case.seconds
    return child


def profile_summary(raw: Path, top: int = 15) -> List[Tuple[str, float]]:
    """Share of py-spy's samples (idle included) spent inside each lipsync function, largest first."""
    inclusive: Dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        names = {frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
                 for frame in stack.split(";") if "lipsync/" in frame.split(" (")[-1]}
        for name in names:
            inclusive[name] = inclusive.get(name, 0) + int(count)
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [(name, count / max(total, 1)) for name, count in ranked]


# ---------------------------------------------------------------- memory check


def memory_check(photo: Path, folder: Path, options: Dict[str, Any], minutes: float) -> Dict[str, Dict[str, Any]]:
    """Peak RSS of whole runs on a 1-minute and a `minutes`-minute 720p video (each input deleted after use)."""
    found = {}
    for length in (MEMORY_SHORT_MINUTES, minutes):
        seconds = length * 60.0
        speech = make_speech(folder, seconds, f"memory-{length:g}.wav")
        clip = make_video(photo, folder, seconds + VIDEO_MARGIN_S, FULL.video_size, f"memory-{length:g}.mp4")
        case = Case(f"memory_{length:g}min", f"video 1280x720, {length:g} min (memory)", clip, speech, seconds,
                    output_frames(speech), False)
        note(f"{case.label}: {case.frames} frames")
        found[case.key] = {"label": case.label, "minutes": length, **end_to_end(case, options, FULL, folder)}
        note(f"{case.label}: peak RSS {found[case.key]['peak_rss_mb']:.0f} MB, {found[case.key]['fps']:.2f} frames/s")
        clip.unlink()
        speech.unlink()
    return found


# ---------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run on tiny inputs")
    parser.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto", help="where the networks run")
    parser.add_argument("--cases", default="still,video", help="comma-separated: still, video")
    parser.add_argument("--still-seconds", type=float, help="speech length for the still case (default 15)")
    parser.add_argument("--video-seconds", type=float, help="video and speech length for the video case (default 30)")
    parser.add_argument("--repeats", type=int, help="interleaved runtime/dygraph repetitions (default 3)")
    parser.add_argument("--memory-check", action="store_true", help="also measure peak RSS for 1 and --minutes minutes")
    parser.add_argument("--minutes", type=float, default=10.0, help="long video for --memory-check (default 10)")
    parser.add_argument("--memory-detector", choices=("sfd", "haar"), default="sfd",
                        help="face detector for --memory-check (haar keeps a 10-minute run short on CPU)")
    parser.add_argument("--profile", type=Path,
                        help="record the last case's run (the video, or the still with --cases still) with py-spy "
                             "into this raw file")
    parser.add_argument("--enhancement", action="store_true",
                        help="add face enhancement rows: GPEN alone and a short picture case with it")
    parser.add_argument("--enhancer-size", type=int,
                        help=f"GPEN side for --enhancement (default {ENHANCER_SIZE}; {QUICK_ENHANCER_SIZE} "
                             "with --quick)")
    parser.add_argument("--enhance-seconds", type=float, default=ENHANCE_SECONDS,
                        help="speech length of the --enhancement picture case (default 2)")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--report", type=Path, help="print the table of a saved --json file and exit")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_reference_arguments(parser)
    return parser.parse_args(argv)


def chosen_sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else FULL
    if args.still_seconds:
        sizes = replace(sizes, still_seconds=args.still_seconds)
    if args.video_seconds:
        sizes = replace(sizes, video_seconds=args.video_seconds)
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    return sizes


def measure(args: argparse.Namespace, folder: Path) -> Dict[str, Any]:
    """Every figure of the table, with inputs and weights made under `folder`; each measurement in its own process."""
    from lipsync import nvenc

    sizes = chosen_sizes(args)
    detector_weights = make_weights(Path(os.environ["LIPSYNC_MODELS"]))
    options = {"device": args.device, "detector_weights": str(detector_weights)}
    photo = make_photo(folder)
    cases = make_cases(folder, photo, sizes, args.cases.split(","))
    note(f"inputs and weights ready; generator runtime vs dygraph, {sizes.repeats} x {sizes.stage_frames} frames")
    samples = run_child("generator", _spec(cases[0], options, sizes=asdict(sizes)))
    device = _device_kind(args.device)
    results: Dict[str, Any] = {"device": device, "video_encoder": nvenc.describe(device == "gpu"),
                               "sizes": asdict(sizes), "generator": generator_summary(samples), "cases": {}}
    note(f"generator: runtime {nums(samples['runtime'])} frames/s, dygraph {nums(samples['dygraph'])} frames/s")
    for case in cases:
        stages = run_child("stages", _spec(case, options, sizes=asdict(sizes), folder=str(folder)))
        stages.pop("peak_rss_mb")
        note(f"{case.label}: stages {nums(stages.values())} frames/s; end to end, {case.frames} frames")
        e2e = end_to_end(case, options, sizes, folder, args.profile if case is cases[-1] else None,
                         sizes.repeats)
        note(f"{case.label}: end to end {e2e['fps']:.2f} frames/s, peak RSS {e2e['peak_rss_mb']:.0f} MB")
        results["cases"][case.key] = {"label": case.label, "frames": case.frames, "stages": stages, "e2e": e2e}
        if case.still:  # the export and the precision verdict are cached now, as after a user's first job
            results["startup"] = startup(case.face, case.speech, options, folder, 1 if args.quick else STARTUP_RUNS)
            note(f"start-up to the first generated frames: {nums(results['startup']['runs'])} s")
    if args.profile is not None and args.profile.exists():
        results["profile"], results["profiled"] = profile_summary(args.profile), cases[-1].label
    if args.enhancement:
        results["enhancement"] = enhancement(args, folder, photo, sizes, options)
    if args.memory_check:
        memory_options = {**options, "face_detector": args.memory_detector}
        results["memory"] = memory_check(photo, folder, memory_options, args.minutes)
    return results


def _device_kind(requested: str) -> str:
    from lipsync import runtime

    return runtime.choose_device(requested).kind


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    import lipsync  # noqa: F401  (before paddle: it quiets paddle's C++ logging)

    if args.child:
        child_main(args.child)
        return
    if args.report:
        saved = json.loads(args.report.read_text())
        print_report(saved)
        print_comparison(saved.get("reference"))
        return
    box = machine()  # imports paddle, which installs its own SIGTERM handler: ours must come after
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so children stop and the temp dir is removed
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as tmp:
        folder = Path(tmp)
        os.environ.update({"LIPSYNC_MODELS": str(folder / "models"), "LIPSYNC_CACHE": str(folder / "cache"),
                           "HF_HUB_OFFLINE": "1"})  # fmt: skip
        results = measure(args, folder)
        results["reference"] = against_reference(args, folder)  # None unless --reference is given
    results["machine"] = box
    results["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print_report(results)
    print_comparison(results["reference"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
