"""`python -m lipsync batch MANIFEST --outdir DIR`: run a manifest's jobs, one progress bar over them, a summary,
and an exit code: 0 every row done or skipped, 1 some failed, 2 a bad manifest or set-up, 130 interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..cli import one_line
from ..errors import LipSyncError
from ..options import LipSyncOptions, option_names
from ..optiontext import option_value
from . import FAILED, INTERRUPTED, RESULTS_NAME, SKIPPED, STAGE_FRAMES, STAGE_JOBS, ResultRow, run

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "python -m lipsync batch"
DESCRIPTION = ("Lip-sync many videos: one job per row of a CSV (with a header) or JSON Lines manifest, with the "
               "columns face, audio or text (voice, rate), outfile, and any option by name.")
EPILOG = ("results.csv in --outdir lists every row. Running the same command again skips the rows whose video is "
          "complete. Exit code 0: all done or skipped; 1: some failed; 2: bad manifest; 130: interrupted.")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} ({PROG} --help explains every option)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("manifest", metavar="MANIFEST", help="jobs.csv or jobs.jsonl; relative paths in it are relative "
                   "to its folder")  # fmt: skip
    p.add_argument("--outdir", required=True, metavar="DIR", help="where the videos and results.csv go")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes here (default: one per usable GPU, else one using every CPU thread), "
                        "or Ray actors with --ray (default: one per GPU, else one per 4 CPUs)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster: auto (the one `ray start` made here), HOST:PORT, ray://HOST:10001, "
                        "or local (start Ray on this machine); needs requirements-ray.txt")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE", dest="defaults",
                   help=f"a default for every row, as a manifest column would give it (e.g. device=cpu, "
                        f"face_detector=haar); options: {', '.join(option_names())}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def defaults_from(pairs: Sequence[str]) -> LipSyncOptions:
    """LipSyncOptions from OPTION=VALUE words, each value parsed as a manifest cell is."""
    values: Dict[str, object] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals:
            raise LipSyncError(f"--set takes OPTION=VALUE (got {pair!r})")
        values[name.strip()] = option_value(name.strip(), text)
    return LipSyncOptions(**values)  # type: ignore[arg-type]


class _Bar:
    """One tqdm bar over jobs; the frames lip-synced so far as its postfix."""

    def __init__(self, enabled: bool) -> None:
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, desc="videos", unit="video", dynamic_ncols=True)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        if stage == STAGE_JOBS:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()
        elif stage == STAGE_FRAMES:
            self._bar.set_postfix_str(f"{done} frames lip-synced", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    bar = _Bar(enabled=not args.quiet and sys.stderr.isatty())
    previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the workers cleanly, as Ctrl-C does
    interrupted = False
    try:
        rows = run(args.manifest, args.outdir, workers=args.workers, ray_address=args.ray, progress=bar,
                   options=defaults_from(args.defaults))  # fmt: skip
    except LipSyncError as exc:
        bar.close()
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        interrupted = True
        _ignore_interrupts()
        bar.close()
        print(f"interrupted: what finished is listed in {Path(args.outdir) / RESULTS_NAME}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if not interrupted:
            signal.signal(signal.SIGTERM, previous)
    bar.close()
    return _summary(rows, Path(args.outdir) / RESULTS_NAME)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _ignore_interrupts() -> None:
    """The interrupted batch is stopped and its results written: from here to the process's end, another Ctrl-C
    (or kill) has nothing left to stop, and must not cut the report short or turn exit code 130 into a signal's."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def _summary(rows: List[ResultRow], results: Path) -> int:
    failed = [row for row in rows if row.status == FAILED]
    for row in failed:
        print(f"row {row.row} failed: {row.error}", file=sys.stderr)
    counts = {status: sum(row.status == status for row in rows) for status in ("done", SKIPPED, FAILED)}
    print(f"{counts['done']} done, {counts[SKIPPED]} skipped, {counts[FAILED]} failed: {results}")
    if any(row.status == INTERRUPTED for row in rows):
        return EXIT_INTERRUPTED
    return EXIT_FAILED if failed else EXIT_OK
