"""The checks of benchmarks/gpu_smoke.sh that need more than one command: training on the device against
training on CPU, a stop signal to the whole process group of a run and its resume, a fine-tuning pack's
device memory run after run, and the script's figures as one JSON object. Each check writes its figures
to --json and exits 1 when they miss its stated tolerance. The device is CUDA when torch sees one.

    python benchmarks/gpu_smoke.py agreement --demo DIR --out DIR --json FILE [--steps 20]
    python benchmarks/gpu_smoke.py signal --demo DIR --out DIR --json FILE [--steps 120]
    python benchmarks/gpu_smoke.py pack-memory --model DIR --task DIR --out DIR --json FILE [--runs 3]
    python benchmarks/gpu_smoke.py summary WORK DEVICE STARTED      # the figures of all sections
    python benchmarks/gpu_smoke.py fp32 pretrain ...                # `cmgems pretrain ...` without autocast

DIR of --demo: a demo working directory with results/demo/{corpus, pmi/pmi.parquet, tokenizer}.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

# Tolerances, in nats, on the training loss of the last log interval and the validation loss after the
# agreement's 20 steps (in which the loss falls by 0.15 nats). fp32 on both devices differs in summation
# order only (1 against 2 CPU threads: 1e-7 apart); bf16 autocast rounds matmul inputs to 8 bits of
# mantissa (CPU's bf16 autocast: 1.3e-4 from fp32).
FP32_TOLERANCE, AUTOCAST_TOLERANCE = 1e-3, 1e-2
# A resumed run's weights against an uninterrupted run's (max abs difference): CPU is deterministic
# (same thread count); CUDA's backward of index_select and embedding adds with atomics, in any order.
RESUME_TOLERANCE = {"cpu": 1e-6, "cuda": 1e-3}
MEMORY_SLACK = 2**20  # bytes a pack's run may hold beyond the first run's (a leaked tiny model is ~5 MiB)
SWITCH_AT_SECOND_VALIDATION = {"threshold": 1e9}  # cm_gems: the curriculum switches at a known step


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def print_tail(log: Path, lines: int = 30) -> None:
    """The end of a failed run's log, into the section's log (whose tail gpu_smoke.sh shows)."""
    print("\n".join(log.read_text(errors="replace").splitlines()[-lines:]), flush=True)


def write_figures(path: str, figures: dict) -> None:
    Path(path).write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures), flush=True)


def pretrain_options(demo: Path, out: Path, **options) -> list[str]:
    """`cmgems pretrain` options of a tiny model on the demo corpus; `options` override or add
    (underscores as dashes; dicts as JSON)."""
    data = demo / "results" / "demo"
    settings = {"corpus": data / "corpus", "pmi": data / "pmi" / "pmi.parquet", "tokenizer": data / "tokenizer",
                "out": out, "model": "tiny", "max_positions": 128, "sequences_per_step": 32, "batch_size": 16,
                "eval_sequences": 256, **options}
    return [arg for key, value in settings.items()
            for arg in ("--" + key.replace("_", "-"), json.dumps(value) if isinstance(value, dict) else str(value))]


def fresh(out: Path) -> Path:
    """`out` emptied: a run folder left from before would be resumed."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def run_logged(cmd: list[str], log: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """Start `cmd` with stdout and stderr appended to `log`."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, **popen)


def finished(cmd: list[str], log: Path, env: dict | None = None) -> int:
    return run_logged(cmd, log, env).wait()


def last_metrics(out: Path) -> dict:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))[-1]


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "model" / "model.safetensors")


def max_weight_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys(), (a, b)
    return max(float((wa[n].float() - wb[n].float()).abs().max()) for n in wa)


def cpu_env() -> dict:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


# --------------------------------------------------------------------------------------- agreement
def agreement(a) -> bool:
    """The tiny model trained `steps` steps on the demo corpus: on CPU (fp32, 1 thread), on the device in
    fp32, and on CUDA as pretraining runs there (bf16 autocast). Losses after the last step must agree
    within the tolerances above. Without CUDA the 'device' run is a second CPU run (through the fp32
    entry point): the comparison's code runs, and is exact."""
    out = fresh(Path(a.out))
    log = out / "runs.log"
    gpus = 1 if device() == "cuda" else 0
    common = dict(masking="genemask", max_steps=a.steps, lr=5e-3, warmup_steps=3, eval_every=a.steps, log_every=5,
                  workers=1)
    cli, fp32 = [sys.executable, "-m", "cmgems.cli"], [sys.executable, __file__, "fp32"]
    runs = {"reference": (cli, cpu_env(), dict(gpus=0, threads=1), "fp32", FP32_TOLERANCE),
            "device_fp32": (fp32, None, dict(gpus=gpus, threads=1), "fp32", FP32_TOLERANCE)}
    if gpus:
        runs["device_autocast"] = (cli, None, dict(gpus=1, threads=1), "bf16 autocast", AUTOCAST_TOLERANCE)
    figures = {"model": "tiny", "steps": a.steps, "runs": {}, "comparisons": []}
    for name, (prefix, env, extra, precision, _) in runs.items():
        rc = finished([*prefix, "pretrain", *pretrain_options(Path(a.demo), out / name, **common, **extra)], log, env)
        if rc:
            print_tail(log)
            figures.update(passed=False, error=f"{name}: cmgems pretrain exited {rc} (see {log})")
            write_figures(a.json, figures)
            return False
        row, summary = last_metrics(out / name), json.loads((out / name / "summary.json").read_text())
        figures["runs"][name] = {"device": summary["device"], "precision": precision, "threads": extra["threads"],
                                 "loss": float(row["loss"]), "val_loss": float(row["val_loss"])}
    reference = figures["runs"]["reference"]
    for name, (*_, tolerance) in list(runs.items())[1:]:
        run = figures["runs"][name]
        diffs = {key: abs(run[key] - reference[key]) for key in ("loss", "val_loss")}
        figures["comparisons"].append({
            "run": name, "against": "reference", "loss_diff": diffs["loss"], "val_loss_diff": diffs["val_loss"],
            "max_weight_diff": max_weight_difference(out / name, out / "reference"),  # reported, not checked
            "tolerance": tolerance, "passed": max(diffs.values()) <= tolerance})
    figures["passed"] = all(c["passed"] for c in figures["comparisons"])
    write_figures(a.json, figures)
    return figures["passed"]


def fp32(a) -> int:
    """`cmgems ...` with autocast a no-op: fp32 on CUDA too (pretraining and fine-tuning autocast
    through `models.autocast`)."""
    from cmgems import cli, models

    models.autocast = lambda _device: contextlib.nullcontext()
    return cli.main(a.args)


# ------------------------------------------------------------------------------------------ signal
def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def wait_for(condition, timeout: float, every: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def checkpoint_contents(out: Path) -> dict:
    """What the newest checkpoint holds that a resume on the device needs."""
    from cmgems.checkpoint import Checkpoints

    state, where = Checkpoints(out / "checkpoint").load()
    optimizer = state["optimizer"]
    return {"step": int(state["step"]), "cuda_rng": "cuda" in state["rng"][0],
            "fused_adamw": bool(optimizer["param_groups"][0].get("fused")),
            "adam_state_tensors": sum(len(v) for v in optimizer["state"].values()), "path": str(where)}


def signal_check(a) -> bool:
    """A run stopped by SIGTERM to its whole process group (as SLURM and torchrun send it) at its first
    checkpoint exits 143 having checkpointed, leaves no process behind, and resumed ends with the
    weights of an uninterrupted run. cm_gems switches at a fixed step after the stop, so the resume
    also crosses a curriculum switch (a new data loader)."""
    out = fresh(Path(a.out))
    log = out / "runs.log"
    dev = device()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # a time limit: clean up the group below
    options = dict(masking="cm_gems", masking_options=SWITCH_AT_SECOND_VALIDATION, max_steps=a.steps,
                   eval_every=a.steps // 6, eval_sequences=64, save_every=a.steps // 12, log_every=a.steps // 12, lr=2e-3,
                   warmup_steps=5, threads=1, gpus=int(dev == "cuda"))
    command = lambda name: [sys.executable, "-m", "cmgems.cli", "pretrain",
                            *pretrain_options(Path(a.demo), out / name, **options)]
    figures = {"device": dev, "steps": a.steps, "first_checkpoint": a.steps // 12, "switch_step": 2 * (a.steps // 6)}

    def fail(error: str) -> bool:
        print_tail(log)
        figures.update(passed=False, error=error + f" (see {log})")
        write_figures(a.json, figures)
        return False

    started = time.monotonic()
    if (rc := finished(command("whole"), log)) != 0:
        return fail(f"the uninterrupted run exited {rc}")
    figures["whole_run_seconds"] = round(time.monotonic() - started, 1)

    stopped = run_logged(command("stopped"), log, start_new_session=True)  # its own process group, as a job step
    try:
        if not wait_for(lambda: (out / "stopped" / "checkpoint" / "latest").exists() or stopped.poll() is not None, 300):
            return fail("no checkpoint within 300 s")
        if stopped.poll() is not None:
            return fail(f"the run ended (rc {stopped.returncode}) before its first checkpoint")
        figures["processes_signalled"] = len(group_members(stopped.pid))  # the trainer and its data workers
        os.killpg(stopped.pid, signal.SIGTERM)
        signalled = time.monotonic()
        figures["stopped_rc"] = stopped.wait(timeout=300)
        figures["stop_seconds"] = round(time.monotonic() - signalled, 2)
        figures["group_empty"] = wait_for(lambda: not group_members(stopped.pid), 15, 0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stopped.pid, signal.SIGKILL)  # whatever is left of the group this check started
    figures["checkpoint"] = checkpoint_contents(out / "stopped")
    figures["stopped_at"] = figures["checkpoint"]["step"]

    if (rc := finished(command("stopped"), log)) != 0:
        return fail(f"the resumed run exited {rc}")
    resumed = [line for line in log.read_text().splitlines() if "resumed from" in line and "/stopped/" in line]
    figures["resumed_from"] = int(resumed[-1].rsplit(" ", 1)[1]) if resumed else None
    summaries = {name: json.loads((out / name / "summary.json").read_text()) for name in ("whole", "stopped")}
    figures["switch_steps"] = [summaries[name]["switch_step"] for name in ("whole", "stopped")]
    figures["max_weight_diff"] = max_weight_difference(out / "stopped", out / "whole")
    figures["tolerance"] = RESUME_TOLERANCE[dev]
    checks = {
        "exit 143": figures["stopped_rc"] == 128 + signal.SIGTERM,
        "stopped mid-run": figures["first_checkpoint"] < figures["stopped_at"] < a.steps,
        "checkpointed on the stop": f"signal {signal.SIGTERM:d}: checkpoint saved at step {figures['stopped_at']},"
                                    in log.read_text(),
        "no process left": figures["group_empty"],
        "resumed from the stop's checkpoint": figures["resumed_from"] == figures["stopped_at"],
        "same curriculum switch": figures["switch_steps"] == [figures["switch_step"]] * 2,
        "weights within tolerance": figures["max_weight_diff"] <= figures["tolerance"],
    }
    if dev == "cuda":
        checks["CUDA RNG and fused AdamW state checkpointed"] = (figures["checkpoint"]["cuda_rng"]
                                                                 and figures["checkpoint"]["fused_adamw"])
    figures["failed_checks"] = [name for name, ok in checks.items() if not ok]
    figures["passed"] = not figures["failed_checks"]
    write_figures(a.json, figures)
    return figures["passed"]


# ------------------------------------------------------------------------------------- pack memory
class MemoryAfterRuns(logging.Handler):
    """Samples device memory (CUDA) or the process's resident memory (CPU) when a pack logs a finished
    run (`cmgems.packs.run_pack`'s "test mcc" line), then starts the next run's peak afresh."""

    def __init__(self):
        super().__init__()
        self.samples: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "test mcc" not in record.getMessage():
            return
        sample = {"run": len(self.samples) + 1, **memory()}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.samples.append(sample)


def memory() -> dict:
    if torch.cuda.is_available():
        return {"memory_allocated": torch.cuda.memory_allocated(), "max_memory_allocated": torch.cuda.max_memory_allocated(),
                "max_memory_reserved": torch.cuda.max_memory_reserved()}
    resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {"rss": resident, "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def pack_memory(a) -> bool:
    """`runs` identical fine-tuning runs (the demo task) as one pack (`finetune.finetune_pack`, what
    `cmgems finetune --pack` runs): on CUDA, neither the memory held after a run nor a run's peak may
    grow beyond the first run's (MEMORY_SLACK). On CPU the resident memory is reported, not checked
    (the allocator keeps what it freed)."""
    from cmgems import finetune

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    task, out = Path(a.task), fresh(Path(a.out))
    runs = [(finetune.Settings(model=a.model, train=str(task / "train.csv"), dev=str(task / "dev.csv"),
                               test=str(task / "test.csv"), out=str(out / f"run-{i}"), max_length=72, epochs=2,
                               lr=1e-3, batch_size=32, eval_steps=20, seed=42, threads=1), None)
            for i in range(1, a.runs + 1)]
    sampler = MemoryAfterRuns()
    logging.getLogger("cmgems.packs").addHandler(sampler)
    before = memory()
    records = finetune.finetune_pack(runs)
    figures = {"device": device(), "runs": a.runs, "before": before, "after_runs": sampler.samples,
               "test_mcc": [r["metrics"]["mcc"] for r in records]}
    if device() == "cuda":
        first = sampler.samples[0]
        figures["growth"] = {key: max(s[key] for s in sampler.samples) - first[key]
                             for key in ("memory_allocated", "max_memory_allocated")}
        figures["slack"] = MEMORY_SLACK
        figures["passed"] = len(sampler.samples) == a.runs and max(figures["growth"].values()) <= MEMORY_SLACK
    else:
        figures["passed"] = len(sampler.samples) == a.runs
    write_figures(a.json, figures)
    return figures["passed"]


# ----------------------------------------------------------------------------------------- summary
def summary(a) -> bool:
    """The figures of every section (WORK/<section>.json, sections.tsv: name, exit status, seconds,
    budget) as one JSON line; false when any section failed."""
    work = Path(a.work)
    read = lambda name: json.loads((work / f"{name}.json").read_text()) if (work / f"{name}.json").exists() else None
    sections = {}
    for line in (work / "sections.tsv").read_text().splitlines():
        name, rc, seconds, budget = line.split("\t")
        sections[name] = {"rc": int(rc), "seconds": int(seconds), "budget_s": int(budget)}
    tests_log = work / "cuda_tests.log"
    throughput = read("throughput") or {}
    figures = {
        "benchmark": "gpu_smoke", "device": a.device, "gpu": (work / "gpu.txt").read_text().strip(),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_tests": tests_log.read_text().strip().splitlines()[-1] if tests_log.exists() else None,
        "agreement": read("agreement"), "signal": read("signal"),
        "throughput": throughput.get("results", []), "recommended_micro_batch": throughput.get("recommended"),
        "pack_memory": read("pack_memory"), "sections": sections,
        "failed": [name for name, s in sections.items() if s["rc"]],
        "wall_seconds": int(time.time()) - a.started,
    }
    figures["passed"] = not figures["failed"]
    print(json.dumps(figures))
    return figures["passed"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="check", required=True)
    for name, func, default_steps in (("agreement", agreement, 20), ("signal", signal_check, 120)):
        p = sub.add_parser(name)
        p.add_argument("--demo", required=True)
        p.add_argument("--out", required=True)
        p.add_argument("--json", required=True)
        p.add_argument("--steps", type=int, default=default_steps)
        p.set_defaults(func=func)
    p = sub.add_parser("pack-memory")
    for option in ("--model", "--task", "--out", "--json"):
        p.add_argument(option, required=True)
    p.add_argument("--runs", type=int, default=3)
    p.set_defaults(func=pack_memory)
    p = sub.add_parser("summary")
    p.add_argument("work")
    p.add_argument("device")
    p.add_argument("started", type=int)
    p.set_defaults(func=summary)
    sub.add_parser("fp32").add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.check == "fp32":
        return fp32(args)
    return 0 if args.func(args) else 1


if __name__ == "__main__":
    sys.exit(main())
