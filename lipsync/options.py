"""One frozen dataclass of user options, shared by the CLI, the app and the Python API."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, Optional, Tuple, get_args

from .errors import LipSyncError

FaceDetector = Literal["sfd", "haar"]
Device = Literal["auto", "cpu", "gpu"]
BlendMode = Literal["feather", "box"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

FACE_DETECTORS: Tuple[str, ...] = get_args(FaceDetector)
DEVICES: Tuple[str, ...] = get_args(Device)
BLEND_MODES: Tuple[str, ...] = get_args(BlendMode)
PRECISIONS: Tuple[str, ...] = get_args(Precision)

DEFAULT_PADS = (0, 10, 0, 0)
# Highest --fps: what screens show. Past it a picture's job only grows (1000 took 40x the frames of 25) while the
# mouth, drawn from 0.2 s windows of speech, moves no more smoothly. A video faster than this keeps its own rate
MAX_FPS = 60.0
NO_CROP = (0, -1, 0, -1)


@dataclass(frozen=True)
class LipSyncOptions:
    """What a user may choose for one run; derive variants with dataclasses.replace."""

    checkpoint: str = "wav2lip_hq"  # known weights name or a .pdparams/.pth path
    static: bool = False  # use only the first frame of a video
    fps: float = 25.0  # output frame rate for a still image, or a video slower than job.MIN_VIDEO_FPS
    pads: Tuple[int, int, int, int] = DEFAULT_PADS  # top, bottom, left, right (px) around the face
    face_det_batch_size: int = 16  # frames per face-detector batch
    wav2lip_batch_size: int = 128  # faces per generator batch
    resize_factor: int = 1  # divide the input resolution by this before anything else
    crop: Tuple[int, int, int, int] = NO_CROP  # y1, y2, x1, x2 of the frame to keep; -1 = edge
    box: Optional[Tuple[int, int, int, int]] = None  # fixed face box y1, y2, x1, x2: skips detection
    follow_box: bool = False  # the box (set on a video's first frame) moves with what it frames, frame by frame
    rotate: bool = False  # rotate frames 90° clockwise first (phone videos without metadata)
    smooth: bool = True  # average face boxes over a short window of frames
    face_detector: FaceDetector = "sfd"  # sfd (S3FD weights) or haar (OpenCV, no download)
    detector_weights: str = "s3fd"  # known S3FD weights name or a .pth/.pdparams path
    detect_max_side: int = 640  # downscale frames to this longest side for detection; 0 = full size
    detect_every: int = 8  # detect every n-th frame, plus the frames between where the face moved; 1 = all
    device: Device = "auto"  # where the networks run
    blend: BlendMode = "feather"  # feathered lower-face paste, or the seed's hard box paste
    threads: int = 0  # CPU threads for the networks and OpenCV; 0 = automatic (the CPU quota and affinity)
    face_enhancement: bool = False  # GPEN on the redrawn lower face (sharper mouth; slow on a CPU)
    enhancer_weights: str = "gpen512"  # known GPEN weights name or a .pdparams/.pth path
    # the generator's arithmetic: auto = bf16 (CPUs with AMX / AVX-512 BF16) or fp16 (GPU) where its pixels pass
    # the perceptual gate (lipsync/precision.py), else fp32; fp32, bf16 and fp16 force one
    precision: Precision = "auto"
    face_index: Optional[int] = None  # who speaks: n-th face from the left in the first frame with faces; None: best

    def __post_init__(self) -> None:
        _check_choice("face_detector", self.face_detector, FACE_DETECTORS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("blend", self.blend, BLEND_MODES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_positive("fps", self.fps)
        if self.fps > MAX_FPS:
            raise LipSyncError(f"fps must be at most {MAX_FPS:g} frames a second (got {self.fps:g}): "
                               "that is as smooth as screens show")
        _check_positive("face_det_batch_size", self.face_det_batch_size)
        _check_positive("wav2lip_batch_size", self.wav2lip_batch_size)
        _check_positive("resize_factor", self.resize_factor)
        _check_positive("detect_every", self.detect_every)
        if not isinstance(self.threads, int) or self.threads < 0:
            raise LipSyncError(f"threads must be 0 (automatic) or a positive whole number (got {self.threads!r})")
        if self.detect_max_side < 0:
            raise LipSyncError("detect_max_side must be 0 (full size) or a positive number of pixels")
        _check_quad("pads", self.pads)
        _check_quad("crop", self.crop)
        if self.box is not None:
            _check_box(self.box)
        elif self.follow_box:
            raise LipSyncError("follow_box moves a given face box with the face: give the box too "
                               "(y1 y2 x1 x2 on the first frame)")
        _check_face_index(self.face_index, self.box)


def option_names() -> Tuple[str, ...]:
    """The field names, for front ends that map their widgets onto options."""
    return tuple(f.name for f in fields(LipSyncOptions))


def _check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    if value not in choices:
        raise LipSyncError(f"{name} must be one of {', '.join(choices)} (got {value!r})")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise LipSyncError(f"{name} must be positive (got {value})")


def _check_quad(name: str, value: Tuple[int, ...]) -> None:
    if len(value) != 4 or not all(isinstance(v, int) for v in value):
        raise LipSyncError(f"{name} takes four whole numbers (got {value!r})")


def _check_face_index(index: Optional[int], box: Optional[Tuple[int, ...]]) -> None:
    if index is None:
        return
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise LipSyncError(f"face_index counts faces from 0 at the left: a whole number ≥ 0 (got {index!r})")
    if box is not None:
        raise LipSyncError("face_index and box both say where the face is: give one of them")


def _check_box(box: Tuple[int, ...]) -> None:
    _check_quad("box", box)
    y1, y2, x1, x2 = box
    if not (0 <= y1 < y2 and 0 <= x1 < x2):
        raise LipSyncError(f"box is y1 y2 x1 x2 with y1 < y2 and x1 < x2, all ≥ 0 (got {' '.join(map(str, box))})")
