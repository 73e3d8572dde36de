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
import time
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from reference import add_arguments as add_reference_arguments
from reference import against_reference, print_comparison
from report import _generator_summary, _nums, print_report
from startup import STARTUP_RUNS, startup
from stages import (_batches, ahead_fps, bench_engine, compare_generators, generator_inputs, runtime_fps, stage_figures,
                    timed)
from workload import (ENHANCE_SECONDS, ENHANCER_FACES, ENHANCER_SIZE, FULL, MEMORY_SHORT_MINUTES, QUICK,
                      QUICK_ENHANCER_SIZE, SEED, VIDEO_MARGIN_S, Case, Sizes, _peak_rss_mb, _reset_peak_rss, _still_size,
                      machine, make_cases, make_photo, make_speech, make_video, make_weights, note, output_frames)

UNSEEN_SHIFT = 8  # px the API's unseen picture is shifted by, beside the page's (mirrored alone)
GENERATOR_FRAMES = 400  # most frames of a generator-only figure (16 s of output): a 10-minute run's would take minutes

# ---------------------------------------------------------------- child processes: each measurement starts fresh


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


def child_main(spec_json: str) -> None:
    """Child process: run the task the spec names and print its figures and peak RSS as one JSON line."""
    import lipsync

    spec = json.loads(spec_json)
    options = lipsync.LipSyncOptions(**spec["options"])
    tasks = {"generator": _generator_task, "stages": _stages_task, "e2e": _e2e_task, "enhancer": _enhancer_task}
    result = tasks[spec["task"]](spec, options)
    print(json.dumps({"peak_rss_mb": _peak_rss_mb(), **result}))


def _case_from(spec: Dict[str, Any]) -> Case:
    fields = spec["case"]
    return Case(**{**fields, "face": Path(fields["face"]), "speech": Path(fields["speech"])})


def _sizes_from(spec: Dict[str, Any]) -> Sizes:
    return Sizes(**{**spec["sizes"], "video_size": tuple(spec["sizes"]["video_size"])})


def _generator_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    sizes = _sizes_from(spec)
    return compare_generators(options, generator_inputs(_case_from(spec), sizes.stage_frames), sizes.repeats)


def _stages_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    from lipsync import runtime

    device = runtime.choose_device(options.device)
    return stage_figures(_case_from(spec), options, bench_engine(), device, _sizes_from(spec), Path(spec["folder"]))


def _e2e_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    """Load and warm the networks the case uses, run the case once untimed (the app's first request), then
    `runs` times: one timed lipsync.run (a second or later request), then the generator alone; a picture's each
    followed by the same run streamed as the page runs it, then the generator alone again. A picture is then
    timed twice more as pictures the process has not seen, whose face must be searched for (_unseen_run): as
    the page runs it (searched when given, by the face picker) and as an API or command-line call does.

    Each generator-only figure is taken in the same process right after its run, so the e2e/generator
    share compares figures measured under the same load; the best of the runs is kept, as timeit does.
    The peak RSS is the first run's: a picture's run does not use the whole generator the comparison loads.
    """
    started = time.perf_counter()
    from lipsync import runtime
    from lipsync.engine import generator_batch

    engine = bench_engine()
    device = runtime.choose_device(options.device)
    if options.box is None:
        _warm_detector(engine.detector(options, device), options)
    case = _case_from(spec)
    mels, faces_in = generator_inputs(case, generator_batch(options, device))
    if case.still:  # a picture runs the generator split in two (face encoder once)
        split = engine.still_generator(options, device)
        split.decoder.run(mels, *split.encoder.run(faces_in[:1]))  # oneDNN builds its kernels on a first run
    else:
        engine.generator(options, device).run(mels, faces_in)
    if options.face_enhancement:  # export, precision probe and oneDNN kernels: before the timed run
        enhancer = engine.enhancer(options, device)
        enhancer.predictor.run(np.zeros((enhancer.batch, 3, enhancer.size, enhancer.size), np.float32))
    loaded = time.perf_counter()
    _timed_run(case, spec, options, engine)  # the app's first request: its first input shapes, imports, page cache
    runs, streamed = [], []
    for _ in range(spec.get("runs", 1)):
        run = _timed_run(case, spec, options, engine)
        runs.append({**run, "generator_fps": _generator_after(engine, case, options)})
        if case.still:  # the page's path after each plain run: the two are paired under the same machine state
            streamed.append(_streamed_run(case, spec, options, engine))
    found = {**_paired(runs), "load_seconds": loaded - started, "peak_rss_mb": runs[0]["peak_rss_mb"]}
    if case.still:  # the runs above gave the picture of the first request again: its faces were remembered
        found["new_picture"] = _unseen_run(case, spec, options, engine, picker=True)
        found["new_picture_api"] = _unseen_run(case, spec, options, engine, picker=False)
        found["streamed"] = _paired(streamed)
    return found


def _unseen_run(case: Case, spec: Dict[str, Any], options: Any, engine: Any, picker: bool) -> Dict[str, Any]:
    """The case's picture mirrored (shifted too, for the API's run: each run's picture is new to the process),
    then the generator alone. With `picker`, as the page runs it: the face picker searches the picture when the
    visitor gives it (lipsync.find_faces, timed apart: the visitor is still typing), and the run finds it
    remembered. Without, as an API or command-line call runs it: the search is part of the run."""
    import lipsync

    other = replace(case, face=_mirrored(case.face, Path(spec["outfile"]).parent, 0 if picker else UNSEEN_SHIFT))
    searched = None
    if picker:
        began = time.perf_counter()
        lipsync.find_faces(other.face, options, engine=engine)
        searched = time.perf_counter() - began
    run = _timed_run(other, spec, options, engine)
    generator_fps = _generator_after(engine, case, options)
    return {"fps": run["frames"] / run["seconds"], "phases": run["phases"], "generator_fps": generator_fps,
            "picker_seconds": searched}


def _paired(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Timed runs, each with the generator-only figure taken right after it: the fastest run, the fastest
    generator figure, and each run's frames/s beside its own generator figure."""
    return {**min(runs, key=lambda run: run["seconds"]), "generator_fps": max(run["generator_fps"] for run in runs),
            "runs": [{"fps": run["frames"] / run["seconds"], "generator_fps": run["generator_fps"]} for run in runs]}


def _streamed_run(case: Case, spec: Dict[str, Any], options: Any, engine: Any) -> Dict[str, Any]:
    """The remembered picture again, its video also handed over in one-second segments while it is encoded, as
    the page's "Make it speak" runs it (lipsync.segments); then the generator alone."""
    handed: List[int] = []
    run = _timed_run(case, spec, options, engine, segments=lambda path: handed.append(path.stat().st_size))
    return {**run, "fps": run["frames"] / run["seconds"], "segments": len(handed), "segment_bytes": sum(handed),
            "generator_fps": _generator_after(engine, case, options)}


def _mirrored(photo: Path, folder: Path, shift: int = 0) -> Path:
    """The photo flipped left to right, its columns rolled `shift` px: a picture the process has not seen (the
    face must be searched for), of the same size."""
    import cv2

    path = folder / f"{photo.stem}-mirrored-{shift}.png"
    cv2.imwrite(str(path), np.roll(cv2.imread(str(photo))[:, ::-1], shift, axis=1))
    return path


def _timed_run(case: Case, spec: Dict[str, Any], options: Any, engine: Any,
               segments: Optional[Callable[[Path], None]] = None) -> Dict[str, Any]:  # fmt: skip
    """One lipsync.run with its seconds, the stages' start/end times and its own peak RSS (`segments`: see
    lipsync.run)."""
    from lipsync import pipeline

    _reset_peak_rss()  # the peak is the run's, not the warm-up's
    began = time.perf_counter()
    phases: Dict[str, List[float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter() - began
        phases.setdefault(stage, [now, now])[1] = now

    result = pipeline.run(case.face, case.speech, spec["outfile"], options, progress=progress, engine=engine,
                          segments=segments)  # fmt: skip
    seconds = time.perf_counter() - began
    peak = _peak_rss_mb()
    Path(spec["outfile"]).unlink(missing_ok=True)
    return {"frames": result.frames, "seconds": seconds, "device": result.device, "phases": phases,
            "peak_rss_mb": peak}


def _enhancer_task(spec: Dict[str, Any], options: Any) -> Dict[str, Any]:
    """GPEN alone under Paddle Inference (faces/s after one warm batch), and the frame side around it: crop,
    resize, colour order and the masked paste back, per face on the case's picture (an identity network)."""
    import cv2

    from lipsync import facecrop, runtime

    engine = bench_engine()
    device = runtime.choose_device(options.device, announce=False)
    enhancer = engine.enhancer(options, device)
    side, batch, count = enhancer.size, enhancer.batch, spec["faces"]
    faces_in = np.random.default_rng(SEED).uniform(-1, 1, (count, 3, side, side)).astype(np.float32)
    enhancer.predictor.run(faces_in[:batch])
    _, seconds = timed(lambda: [enhancer.predictor.run(faces_in[part]) for part in _batches(count, batch)])
    frame = cv2.imread(spec["case"]["face"])
    height, width = frame.shape[:2]
    box = (width // 3, height // 4, 2 * width // 3, 2 * height // 3)
    frames = [frame.copy() for _ in range(count)]
    _, frame_side = timed(lambda: facecrop.enhance_frames(frames, [box] * count, side, lambda x: x))
    return {"size": side, "batch": batch, "faces": count, "fps": count / seconds, "frame_side_fps": count / frame_side,
            "precision": enhancer.predictor.precision}


def enhancement(args: argparse.Namespace, folder: Path, photo: Path, sizes: Sizes,
                options: Dict[str, Any]) -> Dict[str, Any]:  # fmt: skip
    """GPEN alone, then a short still case end to end with face enhancement on (random GPEN weights)."""
    from lipsync import testing

    side = args.enhancer_size or (QUICK_ENHANCER_SIZE if args.quick else ENHANCER_SIZE)
    gpen = testing.save_random_gpen(Path(os.environ["LIPSYNC_MODELS"]) / f"gpen{side}.pdparams", side, SEED)
    on = {**options, "face_enhancement": True, "enhancer_weights": str(gpen)}
    seconds = args.enhance_seconds
    speech = make_speech(folder, seconds, "enhanced.wav")
    case = Case("enhanced", f"still {_still_size(photo)} + {seconds:g} s speech, face enhancement (GPEN-{side})",
                photo, speech, seconds, output_frames(speech), True)  # fmt: skip
    alone = run_child("enhancer", _spec(case, on, faces=ENHANCER_FACES))
    note(f"GPEN-{side} alone: {alone['fps']:.3f} faces/s ({alone['precision']}); end to end, {case.frames} frames")
    e2e = end_to_end(case, on, sizes, folder)
    note(f"{case.label}: end to end {e2e['fps']:.3f} frames/s")
    return {"label": case.label, "frames": case.frames, "alone": alone, "e2e": e2e}


def _warm_detector(detect: Callable, options: Any) -> None:
    """One call at each input shape the tracker uses: a whole frame's square canvas and a crop."""
    from lipsync import faces

    side = options.detect_max_side or faces.ROI_SIDE
    for size in (side, faces.ROI_SIDE):
        detect([np.zeros((size, size, 3), np.uint8)])


def _generator_after(engine: Any, case: Case, options: Any) -> float:
    """Generator-only frames/s on the case's inputs as the case runs the generator (a picture: its face encoded
    once, then the still decoder per batch), in the process that just ran the case (after one warm batch): the
    faster of batch after batch and of batches drawn ahead as a run draws them (lipsync.synth.Ahead), each over
    as many frames as the run made, up to GENERATOR_FRAMES (a shorter sample varies more than the run it is
    compared with, and the best of such samples is a lucky one)."""
    from lipsync import runtime
    from lipsync.engine import generator_batch

    count = min(case.frames, GENERATOR_FRAMES)
    device = runtime.choose_device(options.device, announce=False)
    batch = generator_batch(options, device)
    mels, faces_in = generator_inputs(case, count)
    if case.still:
        split = engine.still_generator(options, device)
        features = split.encoder.run(faces_in[:1])
        predictor: Any = SimpleNamespace(run=lambda mel, _faces: split.decoder.run(mel, *features))
    else:
        predictor = engine.generator(options, device)
    predictor.run(mels[:batch], faces_in[:batch])
    return max(runtime_fps(predictor, mels, faces_in, batch), ahead_fps(predictor, mels, faces_in, batch))


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
    parser.add_argument("--profile", type=Path, help="record the last case's run (the video, or the still with --cases still) with py-spy "
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
    sizes = chosen_sizes(args)
    detector_weights = make_weights(Path(os.environ["LIPSYNC_MODELS"]))
    options = {"device": args.device, "detector_weights": str(detector_weights)}
    photo = make_photo(folder)
    cases = make_cases(folder, photo, sizes, args.cases.split(","))
    note(f"inputs and weights ready; generator runtime vs dygraph, {sizes.repeats} x {sizes.stage_frames} frames")
    samples = run_child("generator", _spec(cases[0], options, sizes=asdict(sizes)))
    results: Dict[str, Any] = {"device": _device_kind(args.device), "sizes": asdict(sizes),
                               "generator": _generator_summary(samples), "cases": {}}
    note(f"generator: runtime {_nums(samples['runtime'])} frames/s, dygraph {_nums(samples['dygraph'])} frames/s")
    for case in cases:
        stages = run_child("stages", _spec(case, options, sizes=asdict(sizes), folder=str(folder)))
        stages.pop("peak_rss_mb")
        note(f"{case.label}: stages {_nums(stages.values())} frames/s; end to end, {case.frames} frames")
        e2e = end_to_end(case, options, sizes, folder, args.profile if case is cases[-1] else None,
                         sizes.repeats)
        note(f"{case.label}: end to end {e2e['fps']:.2f} frames/s, peak RSS {e2e['peak_rss_mb']:.0f} MB")
        results["cases"][case.key] = {"label": case.label, "frames": case.frames, "stages": stages, "e2e": e2e}
        if case.still:  # the export and the precision verdict are cached now, as after a user's first job
            results["startup"] = startup(case.face, case.speech, options, folder, 1 if args.quick else STARTUP_RUNS)
            note(f"start-up to the first generated frames: {_nums(results['startup']['runs'])} s")
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
