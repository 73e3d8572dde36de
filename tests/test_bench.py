"""benchmarks/bench.py --quick: its one table has every row and column, each with a number (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from conftest import ROOT

BENCH = ROOT / "benchmarks" / "bench.py"
COLUMNS = ["case", "decode", "detection", "generator", "blend", "encode", "e2e fps", "e2e/gen", "RTF", "peak RSS MB"]
CASE_ROWS = ("still 512x512", "video 320x180")
GENERATOR_ROWS = ("generator alone, runtime", "generator alone, dygraph")
GENERATOR_COLUMNS = ("generator", "e2e fps", "e2e/gen", "RTF", "peak RSS MB")
NOT_APPLICABLE = "–"
TIMEOUT_S = 900  # a quick run takes about a minute; allow for a busy 2-core machine


def _number(cell: str) -> float:
    return float(cell.rstrip("%"))


def _table(stdout: str) -> Tuple[List[str], Dict[str, Dict[str, str]]]:
    """The markdown table's header and its rows by first cell."""
    lines = [line for line in stdout.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    header = cells[0]
    return header, {row[0]: dict(zip(header, row)) for row in cells[2:]}


def _row(rows: Dict[str, Dict[str, str]], prefix: str) -> Dict[str, str]:
    found = [row for label, row in rows.items() if label.startswith(prefix)]
    assert len(found) == 1, f"one row starting {prefix!r} expected in {list(rows)}"
    return found[0]


def _run_quick(tmp_path: Path) -> Tuple[str, dict]:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    report = tmp_path / "bench.json"
    env = {**os.environ, "TMPDIR": str(scratch)}
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--json", str(report)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIMEOUT_S)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(scratch.iterdir()) == [], "the benchmark must remove its temporary files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "tmp"], "nothing written to the cwd"
    return done.stdout, json.loads(report.read_text())


def test_quick_run_prints_one_full_table_and_matching_json(tmp_path):
    stdout, results = _run_quick(tmp_path)
    header, rows = _table(stdout)
    assert header == COLUMNS
    assert len(rows) == len(CASE_ROWS) + len(GENERATOR_ROWS)
    for prefix in CASE_ROWS:
        row = _row(rows, prefix)
        assert all(_number(row[column]) > 0 for column in COLUMNS[1:]), row
    for prefix in GENERATOR_ROWS:
        row = _row(rows, prefix)
        assert all(_number(row[column]) > 0 for column in GENERATOR_COLUMNS), row
        assert {row[c] for c in COLUMNS[1:] if c not in GENERATOR_COLUMNS} == {NOT_APPLICABLE}, row
    assert _row(rows, GENERATOR_ROWS[0])["e2e/gen"] == "100%"

    for key, case in results["cases"].items():
        assert case["e2e"]["frames"] == case["frames"], f"{key}: the run made a frame per mel window"
        phases = case["e2e"]["phases"]
        assert (f"{case['label']}, the fastest run: first frames lip-synced {phases['lip-syncing'][0]:.2f} s into it, "
                f"every face found at {phases['detecting faces'][1]:.2f} s") in stdout
        assert 100 < case["e2e"]["peak_rss_mb"] < 100_000, "peak RSS in MB of a process that loaded paddle"
    still = results["cases"]["still"]["e2e"]  # warm picture jobs with pictures not seen before: the page's, the API's
    page, api = still["new_picture"], still["new_picture_api"]
    assert page["picker_seconds"] > 0 and api["picker_seconds"] is None, "only the page's picture is searched first"
    for fresh in (page, api):
        assert fresh["fps"] > 0 and fresh["generator_fps"] > 0 and "detecting faces" in fresh["phases"]
    assert ("still e2e / generator, a picture not seen before, as the page runs it (searched by the face picker when "
            "given) (one run over the generator right after it): ") in stdout
    assert "as an API or command-line call runs it (searched in the run): faces found " in stdout
    streamed = results["cases"]["still"]["e2e"]["streamed"]  # the same job streaming segments, as the page runs it
    assert streamed["segments"] >= 1 and streamed["segment_bytes"] > 0 and streamed["generator_fps"] > 0
    plain_runs = results["cases"]["still"]["e2e"]["runs"]
    assert len(streamed["runs"]) == len(plain_runs), "a streamed run after each plain one"
    assert all(run["fps"] > 0 and run["generator_fps"] > 0 for run in streamed["runs"])
    assert "still e2e / generator, streamed as the page does it (" in stdout
    generator = results["generator"]
    assert abs(generator["ratio"] - generator["runtime_fps"] / generator["dygraph_fps"]) < 1e-9
    assert 100 < generator["runtime_peak_rss_mb"] <= generator["dygraph_peak_rss_mb"], "runtime measured first"
    assert f"generator runtime / dygraph: {generator['ratio']:.2f}x" in stdout
    assert f"paddle {results['machine']['paddle']}" in stdout and f"{results['machine']['cores']} cores" in stdout
    assert f"video encoder: {results['video_encoder']}" in stdout and "x264" in results["video_encoder"]
    assert results["reference"] is None and "not measured: pass --reference" in stdout, "no reference given"


def test_the_share_target_takes_the_median_run_from_three_runs_on_else_best_over_best():
    sys.path.insert(0, str(BENCH.parent))
    import report

    def e2e(runs: List[Tuple[float, float]]) -> dict:
        return {"fps": max(f for f, _ in runs), "generator_fps": max(g for _, g in runs),
                "runs": [{"fps": f, "generator_fps": g} for f, g in runs]}

    paired = e2e([(60.0, 64.0), (50.0, 70.0), (57.0, 60.0)])  # shares 0.9375, 0.714, 0.95; best over best 60/70
    share, how = report.verdict_share(paired, {"runtime_fps": 1.0})
    assert share == 0.9375 and "median of 3 runs" in how
    two = e2e([(60.0, 64.0), (50.0, 70.0)])
    share, how = report.verdict_share(two, {"runtime_fps": 1.0})
    assert share == 60.0 / 70.0 and how == "best run over best generator"
