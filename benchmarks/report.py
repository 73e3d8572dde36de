"""The benchmark's table and target lines, from the results of one run."""

from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Tuple

from workload import FPS, STAGES, TARGETS

# From this many runs on, a case's e2e/gen target is judged by its median run, each run against the generator measured
# right after it in the same process: a request's own share, paired under the same machine state. The best run over
# the best generator sample pits the luckiest of 3 runs against the luckiest of 6 samples (two ways each) taken
# seconds apart on a machine whose speed drifts by 5-10 %
PAIRED_RUNS = 3
# A picture the process has not seen (a picture case's runs: results key, how its face was searched for). The page's
# face picker searches a picture when the visitor gives it, so the page's run finds it remembered; an API or
# command-line call searches it in the run (S3FD, which the generator-only figure does not include).
UNSEEN = (("new_picture", "as the page runs it (searched by the face picker when given)"),
          ("new_picture_api", "as an API or command-line call runs it (searched in the run)"))

# ---------------------------------------------------------------- report


def _num(value: Optional[float], digits: int = 0) -> str:
    """A figure with about three significant digits; '–' when it does not apply."""
    if value is None:
        return "–"
    if digits:
        return f"{value:.{digits}f}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


COLUMNS = ("case", "decode", "detection", "generator", "blend", "encode", "e2e fps", "e2e/gen", "RTF", "peak RSS MB")


def table_rows(results: Dict[str, Any]) -> List[List[str]]:
    """One row per case: stage frames/s, end-to-end frames/s, share of generator-only speed, RTF, peak RSS."""
    gen = results["generator"]
    rows = []
    for case in results["cases"].values():
        e2e = case["e2e"]
        stages = [_generator_fps(e2e, gen) if s == "generator" else case["stages"][s] for s in STAGES]
        rows.append([case["label"], *map(_num, stages), _num(e2e["fps"]), _share(e2e, gen), _num(e2e["rtf"]),
                     _num(e2e["peak_rss_mb"])])
    for kind, label in (("runtime", "generator alone, runtime (Paddle Inference)"),
                        ("dygraph", "generator alone, dygraph (PaddleGAN's path)")):
        fps = gen[f"{kind}_fps"]
        rows.append([label, "–", "–", _num(fps), "–", "–", _num(fps), f"{100 * fps / gen['runtime_fps']:.0f}%",
                     _num(FPS / fps), _num(gen[f"{kind}_peak_rss_mb"])])
    for case in results.get("memory", {}).values():
        rows.append([case["label"], "–", "–", _num(_generator_fps(case, gen)), "–", "–", _num(case["fps"]),
                     _share(case, gen), _num(case["rtf"]), _num(case["peak_rss_mb"])])
    return rows + enhancement_rows(results.get("enhancement"))


def enhancement_rows(found: Optional[Dict[str, Any]]) -> List[List[str]]:
    """GPEN alone (faces/s in the e2e column, its frame side in the blend column), then its end-to-end case."""
    if not found:
        return []
    alone, e2e = found["alone"], found["e2e"]
    label = f"face enhancement alone, GPEN-{alone['size']} runtime ({alone['precision']})"
    return [[label, "–", "–", "–", _num(alone["frame_side_fps"]), "–", _num(alone["fps"]), "–",
             _num(FPS / alone["fps"]), _num(alone["peak_rss_mb"])],
            [found["label"], "–", "–", _num(e2e["generator_fps"]), "–", "–", _num(e2e["fps"]),
             f"{100 * e2e['fps'] / e2e['generator_fps']:.0f}%", _num(e2e["rtf"]), _num(e2e["peak_rss_mb"])]]


def _generator_fps(e2e: Dict[str, Any], gen: Dict[str, Any]) -> float:
    """Generator-only frames/s measured in the end-to-end run's process (older results: the comparison's)."""
    return e2e.get("generator_fps", gen["runtime_fps"])


def _share(e2e: Dict[str, Any], gen: Dict[str, Any]) -> str:
    return f"{100 * e2e['fps'] / _generator_fps(e2e, gen):.0f}%"


def markdown_table(rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def target_lines(results: Dict[str, Any]) -> List[str]:
    """Each issue target with the figure measured in this run."""
    gen = results["generator"]
    cases, memory = results["cases"], results.get("memory", {})
    lines = [_target("generator runtime / dygraph", gen["ratio"], TARGETS["runtime_vs_dygraph"], "x")]
    for key, name in (("still", "still e2e / generator"), ("video", "video e2e / generator")):
        if key in cases:
            share, how = verdict_share(cases[key]["e2e"], gen)
            lines.append(_target(f"{name} ({how})", share, TARGETS[f"{key}_vs_generator"], "%"))
            e2e = cases[key]["e2e"]
            extras = [("streamed as the page does it", e2e.get("streamed"))]  # further warm runs, when it has them
            extras += [(f"a picture not seen before, {how}", run) for how, run in unseen_runs(e2e) if _on_page(run)]
            for label, extra in extras:
                if extra:
                    share, how = verdict_share(extra, gen)
                    lines.append(_target(f"{name}, {label} ({how})", share, TARGETS[f"{key}_vs_generator"], "%"))
    if "startup" in results:
        found = results["startup"]
        lines.append(_target("picture job: process start to first generated frames (s)", found["marks"]["first frames"],
                             TARGETS["startup_s"], " s", at_most=True))
        lines.append(_target("picture job as a user runs it: peak RSS (MB)", max(found["peaks"]),
                             TARGETS["picture_job_mb"], "", at_most=True))
    if len(memory) == 2:
        short, long = memory.values()
        growth = long["peak_rss_mb"] / short["peak_rss_mb"]
        lines.append(_target(f"peak RSS {long['minutes']:g} min / {short['minutes']:g} min", growth,
                             TARGETS["memory_growth"], "x", at_most=True))
        lines.append(_target(f"peak RSS {long['minutes']:g} min (MB)", long["peak_rss_mb"], TARGETS["memory_mb"], "",
                             at_most=True))
    return lines


def unseen_runs(e2e: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """A picture case's runs of pictures the process had not seen, each with how its face was searched for."""
    fresh = e2e.get("new_picture")
    if fresh and "picker_seconds" not in fresh:  # older results: one such run, searched in the run
        return [(dict(UNSEEN)["new_picture_api"], fresh)]
    return [(how, e2e[kind]) for kind, how in UNSEEN if e2e.get(kind)]


def _on_page(run: Dict[str, Any]) -> bool:
    """Whether an unseen picture's run was the page's (the face picker searched it first)."""
    return run.get("picker_seconds") is not None


def verdict_share(e2e: Dict[str, Any], gen: Dict[str, Any]) -> Tuple[float, str]:
    """A case's e2e/generator share as its target judges it, and how it was taken (see PAIRED_RUNS)."""
    runs = e2e.get("runs", [])
    if len(runs) >= PAIRED_RUNS:
        shares = [run["fps"] / run["generator_fps"] for run in runs]
        return statistics.median(shares), f"median of {len(runs)} runs, each over the generator right after it"
    if not runs:
        return e2e["fps"] / _generator_fps(e2e, gen), "one run over the generator right after it"
    return e2e["fps"] / _generator_fps(e2e, gen), "best run over best generator"


def _target(name: str, value: float, goal: float, unit: str, at_most: bool = False) -> str:
    met = value <= goal if at_most else value >= goal
    shown = (lambda v: f"{100 * v:.0f}%") if unit == "%" else (lambda v: f"{v:.2f}{unit}" if unit else f"{v:.0f}")
    return f"- {name}: {shown(value)} (target {'≤' if at_most else '≥'} {shown(goal)}) {'met' if met else 'MISSED'}"


def print_report(results: Dict[str, Any]) -> None:
    results = {**results, "generator": generator_summary(results["generator"])}
    box = results["machine"]
    print(f"cpu features: {box.get('features', '?')}; {box.get('threads', '?')} threads for the networks")
    print(f"machine: {box['cpu']}, {box['cores']} cores, avx2 {_yes(box['avx2'])}, avx512 {_yes(box['avx512'])}, "
          f"amx {_yes(box['amx'])}; paddle {box['paddle']} ({box['paddle_commit']}), numpy {box['numpy']}, "
          f"opencv {box['opencv']}, ffmpeg {box['ffmpeg']}, python {box['python']}")
    print(f"date: {box['date']}; device: {results['device']}; load average at start {box['load_average']}, "
          f"at end {results['load_average_end']}")
    print(f"video encoder: {results.get('video_encoder', '?')}")
    print("stage columns: output frames/s each stage sustains alone (a still is decoded and detected once); "
          "a case's generator figure is taken in its e2e process right after each run; e2e: lipsync.run with the "
          "networks loaded, in a fresh process, best of the runs (a picture's run uses the generator split in two: "
          f"face encoder once); e2e/gen = best e2e / best generator (its target line: from {PAIRED_RUNS} runs on, the "
          "median run over the generator right after it); RTF = run time / speech length; peak RSS: the first run's\n")
    print(markdown_table(table_rows(results)))
    spread = results["generator"]
    print(f"\ngenerator frames/s over {len(spread['runtime'])} interleaved repeats (the table shows the best): runtime "
          f"{nums(spread['runtime'])}; dygraph {nums(spread['dygraph'])}; runtime/dygraph per repeat "
          f"{nums(spread['pair_ratios'])}")
    for case in results["cases"].values():
        first_out_line(case)
        runs = case["e2e"].get("runs", [])
        if len(runs) > 1:
            print(f"{case['label']}, {len(runs)} runs: {_per_run(runs)} "
                  f"(median {_percent(statistics.median(r['fps'] / r['generator_fps'] for r in runs))})")
        for how, fresh in unseen_runs(case["e2e"]):
            picker = f", the face picker's search {fresh['picker_seconds']:.2f} s" if _on_page(fresh) else ""
            print(f"{case['label']}, a picture not seen before (mirrored), {how}{picker}: faces found "
                  f"{fresh['phases']['detecting faces'][1]:.2f} s into the run, e2e {_num(fresh['fps'])} frames/s, "
                  f"generator after it {_num(fresh['generator_fps'])} frames/s, "
                  f"e2e/gen {_percent(fresh['fps'] / fresh['generator_fps'])}")
        streamed = case["e2e"].get("streamed")
        if streamed:
            runs = streamed.get("runs") or [streamed]  # older results: one streamed run, after all the plain ones
            paired = ", each after a plain one" if "runs" in streamed else ""
            print(f"{case['label']}, streamed as the page's \"Make it speak\" does it (the remembered picture, its "
                  f"video also handed over in {streamed['segments']} one-second segments, "
                  f"{streamed['segment_bytes'] / 2**20:.1f} MB in all), {len(runs)} run(s){paired}: {_per_run(runs)}")
    startup_lines(results.get("startup"))
    print("\n".join(["targets:", *target_lines(results)]))
    if results.get("profile"):
        print(f"\n{results.get('profiled', 'video case')}, share of wall time inside lipsync functions "
              "(py-spy, idle included):")
        print("\n".join(f"- {100 * share:5.1f}%  {name}" for name, share in results["profile"]))


def first_out_line(case: Dict[str, Any]) -> None:
    """When the fastest run's first frames were lip-synced (the page's stream can start then), against when its
    faces were all found: a video's lip-sync pass takes frames while its faces are still being found."""
    phases = case["e2e"].get("phases", {})
    if "lip-syncing" not in phases or "detecting faces" not in phases:
        return  # older results
    print(f"{case['label']}, the fastest run: first frames lip-synced {phases['lip-syncing'][0]:.2f} s into it, "
          f"every face found at {phases['detecting faces'][1]:.2f} s, done at {case['e2e']['seconds']:.2f} s")


def startup_lines(found: Optional[Dict[str, Any]]) -> None:
    """The fresh-process picture job: when each stage began, its first frames, and the precision it chose."""
    if not found:
        return
    marks = ", ".join(f"{stage} {at:.2f} s" for stage, at in sorted(found["marks"].items(), key=lambda m: m[1]))
    print(f"picture job in a fresh process (--box, export cached), {len(found['runs'])} runs: first generated frames "
          f"at {nums(found['runs'])} s, whole run {nums(found['walls'])} s, peak RSS {nums(found['peaks'])} MB")
    print(f"  the soonest run, from process start: {marks}")
    gate = [note for note in found["notes"] if note.startswith("The generator ran in")]
    print(f"  precision: {gate[0] if gate else 'fp32 (no faster precision on this device)'}")


def _per_run(runs: List[Dict[str, Any]]) -> str:
    """Each run's frames/s, the generator's right after it, and their share."""
    shares = ", ".join(_percent(r["fps"] / r["generator_fps"]) for r in runs)
    return (f"e2e {nums(r['fps'] for r in runs)} frames/s, generator after each "
            f"{nums(r['generator_fps'] for r in runs)} frames/s, e2e/gen per run {shares}")


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def nums(values: Any) -> str:
    return ", ".join(_num(v) for v in values if isinstance(v, (int, float)))


def generator_summary(samples: Dict[str, Any]) -> Dict[str, Any]:
    """Best of the repeats for each (as timeit does: slower repeats measure the other processes on the machine)."""
    runtime_fps_, dygraph_fps_ = max(samples["runtime"]), max(samples["dygraph"])
    pairs = [r / d for r, d in zip(samples["runtime"], samples["dygraph"])]
    return {**samples, "runtime_fps": runtime_fps_, "dygraph_fps": dygraph_fps_, "ratio": runtime_fps_ / dygraph_fps_,
            "pair_ratios": pairs, "median_pair_ratio": statistics.median(pairs)}
