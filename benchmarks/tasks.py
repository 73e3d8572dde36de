"""What one benchmark child process measures (`bench.py --child SPEC`): the generator runtime against dygraph,
the stages one by one, warm whole runs through lipsync.run with the generator alone after each, or GPEN alone.
Each prints its figures and the process's peak RSS as one JSON line for bench.py to read."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from stages import (ahead_fps, batch_slices, bench_engine, compare_generators, generator_inputs, runtime_fps,
                    stage_figures, timed)
from workload import SEED, Case, Sizes, peak_rss_mb, reset_peak_rss

UNSEEN_SHIFT = 8  # px the API's unseen picture is shifted by, beside the page's (mirrored alone)
GENERATOR_FRAMES = 400  # most frames of a generator-only figure (16 s of output): a 10-minute run's would take minutes


def child_main(spec_json: str) -> None:
    """Child process: run the task the spec names and print its figures and peak RSS as one JSON line."""
    import lipsync

    spec = json.loads(spec_json)
    options = lipsync.LipSyncOptions(**spec["options"])
    tasks = {"generator": _generator_task, "stages": _stages_task, "e2e": _e2e_task, "enhancer": _enhancer_task}
    result = tasks[spec["task"]](spec, options)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), **result}))


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

    reset_peak_rss()  # the peak is the run's, not the warm-up's
    began = time.perf_counter()
    phases: Dict[str, List[float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter() - began
        phases.setdefault(stage, [now, now])[1] = now

    result = pipeline.run(case.face, case.speech, spec["outfile"], options, progress=progress, engine=engine,
                          segments=segments)  # fmt: skip
    seconds = time.perf_counter() - began
    peak = peak_rss_mb()
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
    _, seconds = timed(lambda: [enhancer.predictor.run(faces_in[part]) for part in batch_slices(count, batch)])
    frame = cv2.imread(spec["case"]["face"])
    height, width = frame.shape[:2]
    box = (width // 3, height // 4, 2 * width // 3, 2 * height // 3)
    frames = [frame.copy() for _ in range(count)]
    _, frame_side = timed(lambda: facecrop.enhance_frames(frames, [box] * count, side, lambda x: x))
    return {"size": side, "batch": batch, "faces": count, "fps": count / seconds, "frame_side_fps": count / frame_side,
            "precision": enhancer.predictor.precision}


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
