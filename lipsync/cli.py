"""`python -m lipsync`: PaddleGAN's tools/wav2lip.py options (same spellings, dashed aliases too) → lipsync.run."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union

from . import native, tts
from .errors import LipSyncError
from .options import BLEND_MODES, DEVICES, PRECISIONS, LipSyncOptions
from .optiontext import NO_BOX, bool_value, box_value, detector_value

EXIT_USAGE = 2  # bad input, like argparse's own usage errors
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended
SEED_DETECTORS = ("sfd", "s3fd", "haar", "blazeface")  # s3fd = sfd; blazeface, the seed's second, is served by haar
HELP_HINT = "python -m lipsync --help explains every option"
BATCH_COMMAND = "batch"  # `python -m lipsync batch MANIFEST ...`: lipsync/batch/cli.py
STDIN_TEXT = "-"  # --text -: the words come from standard input (a script in a file: --text - < script.txt)
SPEECH_FOLDER_PREFIX = "lipsync-tts-"  # the temporary folder a typed text is spoken into


def _flag_value(text: str) -> bool:
    """Value of an optional-argument flag, so old `--static False` scripts keep meaning False."""
    try:
        return bool_value(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add(parser: Union[argparse.ArgumentParser, argparse._MutuallyExclusiveGroup], name: str, **kwargs) -> None:
    """Add --snake_name with its --dashed-name alias."""
    names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    parser.add_argument(*names, dest=name, **kwargs)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line on stderr and exit code 2, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} ({HELP_HINT})\n")


def build_parser() -> argparse.ArgumentParser:
    d = LipSyncOptions()
    p = _Parser(
        prog="python -m lipsync",
        description="Make the face in a picture or video speak an audio file, with Wav2Lip on PaddlePaddle.",
        epilog="Errors print one line and exit with code 2. Weights are looked up in $LIPSYNC_MODELS first.",
    )
    # fmt: off
    _add(p, "face", required=True, metavar="FACE",
         help="picture (jpg, png, webp, heic, …) or video (mp4, mov, webm, gif, animated webp, …) with the face, "
              "or an audio file with cover art (the cover speaks)")
    speech = p.add_mutually_exclusive_group(required=True)
    _add(speech, "audio", metavar="AUDIO", help="speech to lip-sync: any audio file, or a video's audio track")
    _add(speech, "text", metavar="TEXT",
         help="words to speak instead of an audio file, in --voice (edge-tts, online; offline espeak-ng speaks "
              f"them in the voice's language); {STDIN_TEXT} reads them from standard input")
    _add(p, "voice", default=tts.DEFAULT_VOICE, metavar="VOICE",
         help=f"edge-tts voice for --text (default {tts.DEFAULT_VOICE}; --list_voices lists them)")
    _add(p, "rate", type=int, default=0, metavar="PERCENT",
         help=f"speaking rate for --text, {tts.MIN_RATE} to +{tts.MAX_RATE} (%% faster; default 0)")
    _add(p, "outfile", required=True, metavar="OUT.mp4",
         help="where to write the result: .mp4 (H.264 + AAC, plays everywhere), .mov or .mkv (the same inside), "
              ".webm (VP9 + Opus)")
    _add(p, "checkpoint_path", default=d.checkpoint, metavar="NAME|FILE",
         help="generator weights: wav2lip_hq (default), wav2lip_gan, wav2lip, or a .pdparams/.pth file")
    _add(p, "static", nargs="?", const=True, default=False, type=_flag_value, metavar="BOOL",
         help="use only the first frame of a video as a still face (bare flag = true)")
    _add(p, "fps", type=float, default=d.fps,
         help="output frame rate for a picture, or a video slower than 20 fps such as a GIF (default 25)")
    _add(p, "pads", type=int, nargs=4, default=list(d.pads), metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
         help="pixels added around the detected face; raise BOTTOM to include the chin (default 0 10 0 0)")
    _add(p, "face_det_batch_size", type=int, default=d.face_det_batch_size, help="frames per face-detection batch")
    _add(p, "wav2lip_batch_size", type=int, default=d.wav2lip_batch_size, help="faces per generator batch")
    _add(p, "resize_factor", type=int, default=d.resize_factor,
         help="divide the video's resolution by this first (faster; 720p often looks as good)")
    _add(p, "crop", type=int, nargs=4, default=list(d.crop), metavar=("Y1", "Y2", "X1", "X2"),
         help="keep only this part of each frame; -1 means the frame edge (default 0 -1 0 -1)")
    _add(p, "box", type=int, nargs=4, default=list(NO_BOX), metavar=("Y1", "Y2", "X1", "X2"),
         help="fixed face box, skipping detection: a last resort when no face is found (-1 -1 -1 -1 = detect)")
    _add(p, "follow_box", action="store_true",
         help="in a video, the --box (placed on the first frame) moves and resizes with what it frames (a cartoon "
              "face that moves about); frames it has left pass through unchanged")
    _add(p, "face_index", type=int, default=None, metavar="N",
         help="who speaks: the N-th face from the left (0 = leftmost) in the first frame with faces, then followed; "
              "default: the most confident face")
    _add(p, "rotate", action="store_true", help="rotate frames 90° clockwise first (phone videos without metadata)")
    _add(p, "nosmooth", action="store_true", help="do not average face boxes over neighbouring frames")
    _add(p, "cpu", action="store_true", help="run on the CPU (same as --device cpu)")
    _add(p, "face_detector", default=d.face_detector, choices=SEED_DETECTORS,
         help="sfd (or s3fd): S3FD, weights downloaded once, best; haar: OpenCV's cascade, no download "
              "(blazeface is accepted and uses haar)")
    _add(p, "face_enhancement", nargs="?", const=True, default=d.face_enhancement, type=_flag_value, metavar="BOOL",
         help="sharpen the redrawn mouth with GPEN (bare flag = true); seconds per frame on a CPU, "
              "academic/non-commercial weights")
    _add(p, "enhancer_weights", default=d.enhancer_weights, metavar="NAME|FILE",
         help="GPEN weights for --face_enhancement: gpen512 (default, PaddleGAN's GPEN-512) or a .pdparams/.pth file")
    _add(p, "detector_weights", default=d.detector_weights, metavar="NAME|FILE",
         help="S3FD weights: s3fd (default) or a .pth/.pdparams file")
    _add(p, "detect_max_side", type=int, default=d.detect_max_side, metavar="PX",
         help="detect faces on a copy whose longest side is at most this (0 = full size; default 640)")
    _add(p, "detect_every", type=int, default=d.detect_every, metavar="N",
         help="run the detector on every N-th frame and where the face moved in between (1 = every frame)")
    _add(p, "blend", default=d.blend, choices=BLEND_MODES,
         help="feather: soft paste of the lower face (default); box: the seed's hard rectangle")
    # fmt: on
    _add_machine_options(p, d)
    return p


def _add_machine_options(p: argparse.ArgumentParser, d: LipSyncOptions) -> None:
    """Where and how the job runs, what it shows, and --doctor."""
    # fmt: off
    _add(p, "device", default=d.device, choices=DEVICES, help="auto (GPU if usable), cpu or gpu")
    _add(p, "precision", default=d.precision, choices=PRECISIONS,
         help="the generator's arithmetic: auto (default) = bf16 on CPUs with AMX/AVX-512 BF16, fp16 on a GPU, when "
              "its mouths are indistinguishable from fp32's (the gate's numbers are in the notes and --doctor); "
              "fp32, bf16 or fp16 force one")
    _add(p, "threads", type=int, default=d.threads, metavar="N",
         help="CPU threads for the networks and OpenCV (default 0 = auto: follows the CPU quota/affinity "
              "this process has, or $LIPSYNC_THREADS)")
    _add(p, "quiet", action="store_true", help="no progress bars")
    p.add_argument("--doctor", action=_DoctorAction,
                   help="check this machine (paddle, CUDA libraries, GPU, ffmpeg, weights) and exit: 0 = a job can run")
    p.add_argument("--list_voices", "--list-voices", action=_VoicesAction,
                   help="list the voices --voice takes (edge-tts's own list, or the built-in one offline) and exit")
    # fmt: on


class _DoctorAction(argparse.Action):
    """--doctor runs while parsing, like --version, so --face/--audio/--outfile are not asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace, values, option_string=None) -> None:
        from .doctor import main as doctor

        parser.exit(doctor())


class _VoicesAction(_DoctorAction):
    """--list_voices, like --doctor: runs while parsing, prints, exits 0."""

    def __call__(self, parser: argparse.ArgumentParser, namespace, values, option_string=None) -> None:
        try:
            print_voices()
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit fails no more
        parser.exit(0)


def print_voices() -> None:
    """The voices --voice takes, a line each (name, language, who), by language: the service's list when it
    answers, else the built-in one, which the first line says."""
    voices = tts.catalog()
    fetched = voices.refresh()
    print("edge-tts's voices:" if fetched else "the built-in voices (edge-tts's service could not be reached; "
          "offline, espeak-ng speaks in each voice's language):")  # fmt: skip
    for language, locale in voices.languages():
        for voice in voices.voices(locale):
            print(f"{voice.name:40} {language:32} {voice.label}")


def options_from_args(args: argparse.Namespace) -> LipSyncOptions:
    """The options a parsed command line asks for (raises LipSyncError on contradictions)."""
    detector = detector_value(args.face_detector)
    return LipSyncOptions(
        checkpoint=args.checkpoint_path,
        static=args.static,
        fps=args.fps,
        pads=tuple(args.pads),
        face_det_batch_size=args.face_det_batch_size,
        wav2lip_batch_size=args.wav2lip_batch_size,
        resize_factor=args.resize_factor,
        crop=tuple(args.crop),
        box=box_value(args.box),
        follow_box=args.follow_box,
        rotate=args.rotate,
        smooth=not args.nosmooth,
        face_detector=detector,
        detector_weights=args.detector_weights,
        detect_max_side=args.detect_max_side,
        detect_every=args.detect_every,
        device="cpu" if args.cpu else args.device,
        blend=args.blend,
        threads=args.threads,
        face_enhancement=args.face_enhancement,
        enhancer_weights=args.enhancer_weights,
        precision=args.precision,
        face_index=args.face_index,
    )


class _Bars:
    """tqdm bars, one per pipeline stage, fed by the pipeline's progress callback."""

    def __init__(self, enabled: bool):
        self._enabled = enabled
        self._bars: Dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self._enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, unit="frame", leave=True, dynamic_ncols=True)
        bar.total = max(total, 1)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one job from the command line (a single-threaded process: native chatter on stderr is held back)."""
    hiding = native.hiding_native_chatter()
    native.hide_native_chatter(True)
    try:
        with _sigterm_stops_the_run():
            return _main(argv)
    finally:
        native.hide_native_chatter(hiding)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises KeyboardInterrupt, so the run ends the same way."""


@contextlib.contextmanager
def _sigterm_stops_the_run() -> Iterator[None]:
    """While a job runs, SIGTERM (`timeout`, a container or a scheduler stopping it) ends it as Ctrl-C does: its temp
    folder removed and ffmpeg stopped, where the default action left both behind. (A run that imports the whole of
    paddle, to export a network on first use, gets paddle's own handler, which ends the process at once.)"""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.text is None and (args.voice != tts.DEFAULT_VOICE or args.rate != 0):
        parser.error("--voice and --rate are for --text (an audio file is spoken as it is)")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bars = _Bars(enabled=not args.quiet and sys.stderr.isatty())
    try:
        from .engine import Engine
        from .pipeline import run

        with contextlib.ExitStack() as scratch:
            options = options_from_args(args)
            speech = args.audio if args.text is None else _spoken(args, scratch)
            # one run, then the process ends: no oneDNN kernels are made for batch shapes only later runs would use
            result = run(args.face, speech, args.outfile, options, progress=bars, engine=Engine(single_job=True))
    except LipSyncError as exc:
        bars.close()
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        bars.close()
        terminated = isinstance(exc, Terminated)
        print("terminated" if terminated else "interrupted", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    bars.close()
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{result.outfile}: {result.frames} frames at {result.fps:g} fps in {result.seconds:.1f} s on {result.device}")
    return 0


def _spoken(args: argparse.Namespace, scratch: contextlib.ExitStack) -> Path:
    """--text spoken into a temporary folder that `scratch` removes; says so when espeak-ng spoke it offline."""
    text = sys.stdin.read() if args.text == STDIN_TEXT else args.text
    folder = Path(scratch.enter_context(tempfile.TemporaryDirectory(prefix=SPEECH_FOLDER_PREFIX)))
    speech = tts.speak(text, folder, args.voice, args.rate)
    if speech.fallback_reason:
        print(f"note: spoken offline by espeak-ng ({speech.voice}): {speech.fallback_reason}", file=sys.stderr)
    return speech.path


def one_line(message: str) -> str:
    """A message's lines joined, so an error is always one line on the terminal."""
    return " | ".join(line.strip() for line in message.splitlines() if line.strip())


def entry_point(argv: Optional[List[str]] = None) -> None:
    """The `lipsync` command and `python -m lipsync`: the CUDA bootstrap, then `batch ...` or one job; exits."""
    from .cuda import bootstrap

    bootstrap()  # before paddle loads: may restart this process once, with pip's CUDA libraries on LD_LIBRARY_PATH
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == [BATCH_COMMAND]:
        from .batch.cli import main as batch_main

        sys.exit(batch_main(words[1:]))
    sys.exit(main(argv))
