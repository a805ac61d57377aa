"""Evaluation start-up on CPU: the demo's few-shot and GUE runs of one model, one process per run
(as the one-run rules ran them: `cmgems finetune --model ... --seed ...`) against one packed process
(`cmgems finetune --pack SPEC`, as the pack rules run them).

The runs are those the workflow plans for the demo's tiny genemask model (8 few-shot runs: 2 datasets
x 2 shots x 2 seeds; 2 GUE tasks), read from the `--pack` specs of `snakemake -n -p`, with outputs
(and the pack's cache) under a scratch folder. Figures per stage: wall time per run and of the
whole stage both ways and their ratio (goal: few-shot at least 3x faster packed), the wall time of
each run inside the pack (from its log), and the start-up share of the one-process runs: from
process start to the first training step (the run's "training:" log line), over the process's
wall time.

Run: python benchmarks/bench_eval_overhead.py [--demo DIR]. DIR is a demo working directory (one
`snakemake --configfile config/demo.yaml -d DIR` ran in); without it one is made in a temporary
folder and the model and few-shot sets are built there first (a few minutes). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cmgems.layout import FEWSHOT, GUE, RECORD, Model, Run

REPO = Path(__file__).resolve().parents[1]
MODEL = Model("demo", "tiny", "genemask", 300)
PACKS = {  # the demo's packs of the model: rule -> an output
    "finetune_fewshot_demo_prom": f"{Run(FEWSHOT, MODEL, 'demo_prom', 0, 10).folder()}/{RECORD}",
    "finetune_fewshot_demo_splice3": f"{Run(FEWSHOT, MODEL, 'demo_splice3', 0, 10).folder()}/{RECORD}",
    "finetune_gue_other": f"{Run(GUE, MODEL, 'demo_tata', 42).folder()}/{RECORD}",
}
ENV = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO cmgems\.(\w+): (.*)$", re.M)


def snakemake(demo: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(demo), *args,
           "--configfile", str(REPO / "config" / "demo.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stdout[-3000:] + result.stderr[-3000:])
    return result.stdout


def planned_runs(demo: Path) -> dict[str, list[dict]]:
    """Per stage, the runs of the packs the workflow plans (their --pack specs)."""
    snakemake(demo, "--cores", "2", *PACKS.values(), "--omit-from", *PACKS)  # the model and few-shot sets, where missing
    plan = snakemake(demo, "-n", "-p", *PACKS.values(), "--forcerun", *PACKS)
    specs = [json.loads(shlex.split(line[line.index("--pack"):].split(" > ")[0])[1])["runs"]
             for line in plan.splitlines() if " --pack " in line]
    runs = {"fewshot": [], "gue": []}
    for spec in specs:
        runs["gue" if "/gue/" in spec[0]["out"] else "fewshot"] += spec
    return runs


def in_scratch(run: dict, scratch: Path) -> dict:
    return {**run, "out": str(scratch / run["out"]), "cache": str(scratch / "cache" / run["out"])}


def options(run: dict) -> list[str]:
    """`cmgems finetune` options of a run, as a one-run rule passed them."""
    args = []
    for key, value in run.items():
        if key == "meta":
            args += ["--meta", json.dumps(value)]
        elif value is True:
            args.append(f"--{key.replace('_', '-')}")
        elif key != "cache" and value not in (None, False):
            args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def timed(argv: list[str], cwd: Path) -> tuple[float, float, list[tuple[float, str]]]:
    """(launch time, exit time, [(time, message) of the cmgems log lines]) of a `cmgems` process."""
    launched = time.time()
    result = subprocess.run([sys.executable, "-m", "cmgems.cli", *argv], cwd=cwd, env=ENV, capture_output=True, text=True)
    ended = time.time()
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    lines = [(datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp(), m)
             for t, _, m in STAMP.findall(result.stderr)]
    return launched, ended, lines


def one_process_per_run(runs: list[dict], demo: Path, scratch: Path) -> dict:
    """Wall times, start-up shares, and the start-up split into Python with torch and cmgems
    imported (to the "computing" line) and transformers' import, model load and tokenising (to the
    "training:" line), means over the runs."""
    walls, startup, imports, loads = [], [], [], []
    for run in runs:
        launched, ended, lines = timed(["finetune", *options(in_scratch(run, scratch / "single"))], demo)
        computing = next(t for t, m in lines if m.endswith(": computing"))
        first_step = next(t for t, m in lines if m.startswith("training: "))
        walls.append(ended - launched)
        startup.append((first_step - launched) / (ended - launched))
        imports.append(computing - launched)
        loads.append(first_step - computing)
    return {"wall_s": round(sum(walls), 2), "per_run_s": [round(w, 2) for w in walls],
            "startup_share": [round(s, 3) for s in startup],
            "startup_s": {"python_torch_cmgems": round(sum(imports) / len(runs), 2),
                          "transformers_model_tokenise": round(sum(loads) / len(runs), 2)}}


def packed(runs: list[dict], demo: Path, scratch: Path) -> dict:
    spec = json.dumps({"runs": [in_scratch(run, scratch / "packed") for run in runs]})
    launched, ended, lines = timed(["finetune", "--pack", spec], demo)
    starts = [t for t, m in lines if re.match(r"run \d+/\d+ \(.*\): computing$", m)]
    inside = [b - a for a, b in zip(starts, starts[1:] + [ended])]
    return {"wall_s": round(ended - launched, 2), "per_run_s": round((ended - launched) / len(runs), 2),
            "before_first_run_s": round(starts[0] - launched, 2), "each_run_in_pack_s": [round(x, 2) for x in inside]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, help="a demo working directory (default: build one in a temporary folder)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"cpu_count {os.cpu_count()}, loadavg {load_before}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        demo = args.demo or Path(tmp) / "demo"
        if args.demo is None:
            demo.mkdir()
            (demo / "resources").symlink_to(REPO / "resources")
        runs = planned_runs(demo.resolve())
        figures = {}
        for stage, stage_runs in runs.items():
            single = one_process_per_run(stage_runs, demo.resolve(), Path(tmp) / stage)
            pack = packed(stage_runs, demo.resolve(), Path(tmp) / stage)
            figures[stage] = {"runs": len(stage_runs), "one_process_per_run": single, "packed": pack,
                              "speedup": round(single["wall_s"] / pack["wall_s"], 2),
                              "startup_share_mean": round(sum(single["startup_share"]) / len(stage_runs), 3)}
            print(f"{stage}: {json.dumps(figures[stage])}", flush=True)
    load_after = os.getloadavg()
    print(f"loadavg after {load_after}", flush=True)
    print(json.dumps({"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu_count": os.cpu_count(),
                      "loadavg_before": load_before, "loadavg_after": load_after, **figures}))


if __name__ == "__main__":
    main()
