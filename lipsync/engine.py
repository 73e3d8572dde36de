"""The loaded networks, shared by every run of a process: which weights, device, precision, threads and batch."""

from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from . import audio, batching, blend, cpu, detectors, gated, mouth, native, precision, runtime, weights
from .errors import LipSyncError, first_line
from .options import LipSyncOptions

log = logging.getLogger(__name__)

FACE_SIZE = mouth.FACE_SIZE  # generator input/output side, px
WAV2LIP_SPECS = [((None, 1, audio.N_MELS, audio.MEL_STEP), "float32"), ((None, 6, FACE_SIZE, FACE_SIZE), "float32")]
FACE_ENCODER_SPECS = [WAV2LIP_SPECS[1]]
S3FD_SPECS = [((None, 3, None, None), "float32")]
WAV2LIP_GPU_ITEM_MB = 8.5  # GPU activations per face in a generator batch (fp32)
S3FD_GPU_ITEM_MB = 21  # GPU activations per 160×160 tracking crop (~15) with room (a 640×360 frame: 130; the pool grows)
CPU_GENERATOR_BATCH = 16  # faces per generator call on CPU: within 6 % of 128's speed, for a third of the memory
# the generator's threads on a CPU go to this many lanes, each drawing its share of a batch (runtime.Predictor):
# with two batches in flight a 2-core picture job ran at 55-57 frames/s against 47-52 on one predictor
GENERATOR_LANES = 2
CPU_DETECTOR_BATCH = 2  # frames per S3FD call on CPU: its speed is flat in the batch, its memory is not
ENHANCER_PADDLE_BELOW = 3  # paddle major versions GPEN runs on are below this (see check_enhancer_paddle)
CPU_ENHANCER_BATCH = 1  # faces per GPEN call on CPU: batch 2 took 2.87 s per 512 face vs 2.74, for +0.55 GB
GPU_ENHANCER_BATCH = 8  # faces per GPEN call on a GPU (out of memory halves it)
GPEN_GPU_ITEM_MB = 400  # GPU activations per 512-px face in a GPEN batch (fp32); scales with the side squared
GPEN_PROBE_BATCH = 1  # faces in the fixed input fp16/bf16 is compared with fp32 on: one 512 face is 138 GMAC
PROBE_SEED = 0
REASON_CHARS = 400  # of the error quoted in the note below: its first sentence, which holds the reason
SENTENCE_END = ". "
# Said in result.notes when S3FD, the default detector, cannot be had and Haar stands in.
HAAR_STOOD_IN = ("The S3FD face detector's weights are not available here ({reason}), "
                 "so OpenCV's Haar detector found the faces.")  # fmt: skip


@dataclass(frozen=True)
class Enhancer:
    """GPEN as a predictor: RGB NCHW batches in [-1, 1] of size x size faces; `batch` faces per call."""

    predictor: runtime.Predictor
    size: int  # the network's side, px, read from its weights (512 for the published file)
    batch: int


@dataclass(frozen=True)
class StillGenerator:
    """The generator in two predictors for a still face: the face encoder (once per run), then the decoder,
    which takes the mel windows and that one face's skip features."""

    encoder: runtime.Predictor
    decoder: runtime.Predictor


class Engine:
    """The loaded networks, built once per process and shared by every run (thread-safe).

    It keeps Paddle Inference predictors only: the dygraph models traced for them are built privately for
    each export (weights.build_wav2lip) and dropped once it is saved.

    `single_job`: the engine serves one run, then its process ends (the command line). Its runs then pad a short
    generator batch on a CPU instead of running it in pieces (synth.generate): every batch shape new to a CPU
    predictor makes oneDNN reorder the network's weights again and keep that copy, per lane, which only later
    runs would use (the picture decoder in fp32: ~105 MB a lane and shape; a 342-frame picture job's tail of 6
    frames, run as 4 + 2, took a 2-vCPU AVX2 machine from 880 to 1250 MB, in about the time the padded frames
    take)."""

    def __init__(self, single_job: bool = False) -> None:
        self.single_job = single_job
        self._cache: Dict[Tuple[str, ...], object] = {}
        self._lock = threading.RLock()  # re-entrant: the enhancer's maker asks for its predictor

    def generator(self, options: LipSyncOptions, device: runtime.Device) -> runtime.Predictor:
        """The whole generator; it draws only the rows of each face that options.blend reads (see first_row)."""
        path = weights.resolve_weights(options.checkpoint, "wav2lip")
        build, row = _wav2lip_builder(path), first_row(options)

        def make() -> object:
            from .model import LowerFaceGenerator  # imports paddle: only to export

            return LowerFaceGenerator(build(), row) if row else build()

        pool = (generator_batch(options, device), WAV2LIP_GPU_ITEM_MB)
        return self._predictor(path, _rows_arch("wav2lip", row), make, lambda: WAV2LIP_SPECS, device, pool, options,
                               probe=generator_probe, lanes=GENERATOR_LANES)  # fmt: skip

    def still_generator(self, options: LipSyncOptions, device: runtime.Device) -> StillGenerator:
        """The generator split for a picture (or --static): its face encoder runs once, the rest per batch."""
        path = weights.resolve_weights(options.checkpoint, "wav2lip")
        row = first_row(options)
        build = _wav2lip_builder(path)

        def face_encoder() -> object:
            from .model import FaceEncoder  # imports paddle: only to export

            return FaceEncoder(build())

        def still_decoder() -> object:
            from .model import StillFaceDecoder

            return StillFaceDecoder(build(), row)

        encoder = self._predictor(path, "wav2lip-face-encoder", face_encoder, lambda: FACE_ENCODER_SPECS, device,
                                  (1, WAV2LIP_GPU_ITEM_MB), options)  # fmt: skip

        def probe() -> Tuple[np.ndarray, ...]:
            mel, face_in = generator_probe()
            return (mel, *encoder.run(face_in[:1]))  # the decoder shares one face's features across the batch

        pool = (generator_batch(options, device), WAV2LIP_GPU_ITEM_MB)
        arch = _rows_arch("wav2lip-still-decoder", row)
        decoder = self._predictor(path, arch, still_decoder, _still_decoder_specs, device, pool, options, probe=probe,
                                  lanes=GENERATOR_LANES)  # fmt: skip
        return StillGenerator(encoder, decoder)

    def detector(self, options: LipSyncOptions, device: runtime.Device, remember: bool = False) -> detectors.DetectFn:
        """A detector for one run: S3FD through its shared predictor (its batch halves on out-of-memory), or Haar.
        With `remember`, inputs it has searched before are answered from a memory the engine keeps per detector
        (for pictures: a video's frames seldom come again)."""
        if options.face_detector == "haar":
            detect: detectors.DetectFn = self._cached(("haar",), detectors.HaarDetector)  # type: ignore[assignment]
            return self._remembering(detect, ("haar",)) if remember else detect
        path = weights.resolve_weights(options.detector_weights, "s3fd")
        batch = detection_batch(options, device)

        def build() -> object:
            from . import s3fd  # imports paddle: only to export

            return s3fd.load_s3fd(path)

        predictor = self._predictor(path, "s3fd", build, lambda: S3FD_SPECS, device,
                                    (batch, S3FD_GPU_ITEM_MB), options)  # fmt: skip
        detect = detectors.S3FDDetector(batching.BatchRunner(predictor.run, batch))
        if not remember:
            return detect
        # the predictor's own key: another weights file, device or thread count may place boxes a pixel apart
        return self._remembering(detect, ("s3fd", runtime.export_key(path, "s3fd"), device.kind,
                                          str(cpu_threads(options))))

    def _remembering(self, detect: detectors.DetectFn, which: Tuple[str, ...]) -> detectors.DetectFn:
        memory = self._cached(("detections", *which), detectors.DetectionMemory)
        return detectors.Remembering(detect, memory)  # type: ignore[arg-type]

    def enhancer(self, options: LipSyncOptions, device: runtime.Device) -> Enhancer:
        """GPEN from options.enhancer_weights, its side read from the weights (its encoder's depth)."""
        check_enhancer_paddle(runtime.paddle_version())
        path = weights.resolve_weights(options.enhancer_weights, "gpen")
        batch = enhancer_batch(device)

        def make() -> Enhancer:
            from . import enhance
            from .checkpoint import read_state_dict

            state = read_state_dict(path)
            size = enhance.size_of(state, str(path))
            specs = [((None, 3, size, size), "float32")]
            pool = (batch, GPEN_GPU_ITEM_MB * (size / enhance.GPEN_SIZE) ** 2)
            # fp16 on a GPU when it passes the closeness gate; fp32 on a CPU: the bf16 gate kept fp32 for GPEN on an
            # AMX Xeon, and trying it costs a second 512-px predictor (memory, and a probe face's seconds).
            probe = (lambda: (_enhancer_probe(size),)) if device.kind == "gpu" else None
            predictor = self._predictor(path, "gpen", lambda: enhance.build_gpen(state, size, str(path)), lambda: specs,
                                        device, pool, options, probe=probe, pixels=_gpen_pixels)  # fmt: skip
            return Enhancer(predictor, size, batch)

        key = ("gpen-enhancer", runtime.export_key(path, "gpen"), device.kind, str(cpu_threads(options)))
        return self._cached(key, make)  # type: ignore[return-value]

    def _predictor(self, path: Path, arch: str, build: Callable[[], object],
                   specs: Callable[[], List[runtime.InputSpec]], device: runtime.Device, pool: Tuple[int, float],
                   options: LipSyncOptions, probe: Optional[gated.Probe] = None,
                   pixels: precision.Pixels = mouth.to_pixels, lanes: int = 1) -> runtime.Predictor:  # fmt: skip
        """A predictor per (weights, device, threads, precision asked); build() and specs() give the network and its
        inputs to export (called only when its export is not cached: both may import paddle); pool = (batch, MB per
        item) sizes the GPU memory pool; probe() gives the gate's inputs, pixels() turns outputs into 8-bit pixels
        (no probe: fp32); the threads are shared out between `lanes` (runtime.Predictor)."""
        key = runtime.export_key(path, arch)
        threads = cpu_threads(options)
        wanted = options.precision if probe is not None else "fp32"

        def make() -> runtime.Predictor:
            target = weights.cache_dir() / "static" / key
            prefix = runtime.exported(target) or runtime.export_static(build, specs(), target)
            pool_mb = runtime.gpu_pool_mb(prefix, *pool)
            made = gated.predictor(prefix, device, wanted, probe, pixels, pool_mb=pool_mb, threads=threads, lanes=lanes)
            _collect_leftovers()
            return made

        return self._cached((arch, key, device.kind, str(threads), wanted), make)  # type: ignore[return-value]

    def release(self) -> None:
        """Drop every network this engine loaded (each loads again when next asked for; a run holding one keeps it
        until it ends) and hand their memory back to the system: for a host switching to other weights, or done
        with lipsync for a while. Five networks of a test's runs: 6.0 GB resident before, 1.6 GB after."""
        with self._lock:
            self._cache.clear()
        gc.collect()  # predictors and what they hold may sit in reference cycles
        native.release_freed_memory()

    def _cached(self, key: Tuple[str, ...], make: Callable[[], object]) -> object:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = make()
            return self._cache[key]


def _collect_leftovers() -> None:
    """Free what building a predictor left behind, now, on the thread that built it.

    Tracing a network, optimising its program and the precision gate's probes leave reference cycles (~15,000
    objects holding copies of the weights) that only the cyclic collector frees. Left to it, they went whenever a
    collection next ran, on whichever thread: a server then kept 0.8 GB more for good (2.46 to 3.37 GB, with the
    generator and the still decoder used from new threads in turn). Collected here, it stayed at 2.4 GB. One
    collection takes ~50 ms, once per predictor a process builds."""
    gc.collect()


DEFAULT_ENGINE = Engine()  # the one a process shares when a caller does not bring its own


def _wav2lip_builder(path: Path) -> Callable[[], object]:
    """A fresh generator per call, for one export: never the shared model lipsync.load_wav2lip() hands out,
    which paddle.jit.to_static would change (it replaces the traced layer's forward). Its conv biases are
    folded into its BatchNorms (model.fold_conv_biases), which lets bf16 reach the transposed convs."""

    def build() -> object:
        from .model import fold_conv_biases

        return fold_conv_biases(weights.build_wav2lip(str(path)))

    return build


def first_row(options: LipSyncOptions) -> int:
    """The first row of each 96-px face the generator draws: the first one the paste in options.blend reads
    (35 for the feathered paste, which skips about a fifth of the generator's work; 0, all, for the box paste)."""
    return blend.first_row_read(options.blend)


def _rows_arch(arch: str, row: int) -> str:
    """The export's name for a network drawing rows `row`..95 (its own export: a different program)."""
    return f"{arch}-from-row-{row}" if row else arch


def cpu_threads(options: LipSyncOptions) -> int:
    """The CPU threads a run uses: the option, or (0) what the process's CPU quota and affinity allow."""
    return options.threads or cpu.cpu_threads()


def generator_batch(options: LipSyncOptions, device: runtime.Device) -> int:
    """Faces per generator call: the option on a GPU, at most CPU_GENERATOR_BATCH on a CPU."""
    return options.wav2lip_batch_size if device.kind == "gpu" else min(options.wav2lip_batch_size, CPU_GENERATOR_BATCH)


def check_enhancer_paddle(version: str) -> None:
    """Face enhancement runs on paddle 2.x only: paddle 3.3.1's Paddle Inference crashed (a segmentation fault,
    which no error handling can catch) creating GPEN's predictor from our export in our tests."""
    if int(version.split(".")[0]) >= ENHANCER_PADDLE_BELOW:
        raise LipSyncError(f"Face enhancement (GPEN) needs paddle 2.6 (pip install paddlepaddle==2.6.2, as "
                           f"requirements-cpu.txt has it): with paddle {version} its network crashed the process in "
                           "our tests. Run without face enhancement, or with paddle 2.6.")


def enhancer_batch(device: runtime.Device) -> int:
    """Faces per GPEN call: GPU_ENHANCER_BATCH on a GPU, CPU_ENHANCER_BATCH on a CPU."""
    return GPU_ENHANCER_BATCH if device.kind == "gpu" else CPU_ENHANCER_BATCH


def detection_batch(options: LipSyncOptions, device: runtime.Device) -> int:
    """Frames per detector call: the option on a GPU, at most CPU_DETECTOR_BATCH on a CPU."""
    return options.face_det_batch_size if device.kind == "gpu" else min(options.face_det_batch_size, CPU_DETECTOR_BATCH)


def run_detector(engine: Engine, options: LipSyncOptions, device: runtime.Device,
                 still: bool = False) -> Tuple[Optional[detectors.DetectFn], Tuple[str, ...]]:  # fmt: skip
    """The detector a run uses (None with a fixed --box), and notes for the user: when the S3FD weights, a
    known name, cannot be found or downloaded here, OpenCV's Haar detector stands in, and the notes say so.
    A still's detector remembers the pictures it searched (the same picture again is not searched again)."""
    if options.box is not None:
        return None, ()
    problem = s3fd_unavailable(options)
    if problem is None:
        return engine.detector(options, device, remember=still), ()
    log.info("S3FD unavailable, using Haar: %s", problem)
    note = HAAR_STOOD_IN.format(reason=problem)
    return engine.detector(replace(options, face_detector="haar"), device, remember=still), (note,)


def s3fd_unavailable(options: LipSyncOptions) -> Optional[str]:
    """Why S3FD's weights, given by a known name, cannot be had on this machine (the first sentence of the
    error resolving them); None when they can, or when they are not asked for by name (Haar chosen, or a
    file path: a missing file stays the user's error)."""
    source = options.detector_weights
    if options.face_detector != "sfd" or source not in weights.available_models("s3fd"):
        return None
    if Path(source).expanduser().is_file():
        return None
    try:
        weights.resolve_weights(source, "s3fd")
    except LipSyncError as exc:
        return first_line(exc, REASON_CHARS).split(SENTENCE_END, 1)[0].rstrip(".")
    return None


def _still_decoder_specs() -> List[runtime.InputSpec]:
    from .model import FACE_FEATURE_SHAPES  # imports paddle: not before a run needs it

    return [WAV2LIP_SPECS[0], *(((1, *shape), "float32") for shape in FACE_FEATURE_SHAPES)]


def generator_probe() -> Tuple[np.ndarray, np.ndarray]:
    """The precision gate's generator inputs: real faces and speech (lipsync/data/gate_inputs.npz)."""
    crops, mels = precision.gate_inputs()
    return np.ascontiguousarray(mels[:, None]), mouth.face_input(crops)


def _gpen_pixels(output: np.ndarray) -> np.ndarray:
    """GPEN's output as the 8-bit faces a run pastes (the gate's measure on a GPU)."""
    from .facecrop import network_faces

    return np.stack(network_faces(output))


def _enhancer_probe(size: int, batch: int = GPEN_PROBE_BATCH, seed: int = PROBE_SEED) -> np.ndarray:
    """A fixed GPEN input to compare precisions on: a smooth face-like gradient with mild noise, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(-0.6, 0.6, size, dtype=np.float32)
    image = np.broadcast_to(ramp[None, :, None] * ramp[None, None, :], (batch, 3, size, size))
    return (image + rng.normal(0.0, 0.05, image.shape)).clip(-1, 1).astype(np.float32)
