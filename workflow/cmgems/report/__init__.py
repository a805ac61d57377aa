"""Tables and figures from finished runs: GUE and few-shot scores, pretraining curves, PMI, masks.

Reads only the runs of a grid (`cmgems.layout.Grid`, what the workflow declares), from the folders
the results layout gives them (`collect`), and trains nothing; builds the tables (`tables`), with 95%
intervals, and the claims table (`claims`: the CM-GEMS abstract's claims tested, `cmgems.stats`) and
writes them as CSV, Markdown and LaTeX (`render`); draws the figures (`figures`, `masks`).

`cmgems report --grid JSON --k K --max-positions L --steps N [--results results] [--out results/report]
[--published resources/published]` writes `OUT/tables/{layout.TABLES}.csv|md|tex` and
`OUT/figures/{layout.FIGURES}.png|pdf`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from cmgems import layout
from cmgems.cli import argument, int_at_least
from cmgems.errors import CmgemsError
from cmgems.layout import Grid
from cmgems.report import collect, figures, masks, render, tables

log = logging.getLogger(__name__)


def write_tables(root: str | Path, grid: Grid, runs: pd.DataFrame, published_dir: str | Path | None,
                 folder: str | Path) -> list[Path]:
    """Every table of layout.TABLES into report `folder`."""
    summaries = collect.pretraining_summaries(root, grid.pretrained)
    return render.write_tables(tables.all_tables(runs, summaries, published_dir, grid), folder)


def write_figures(root: str | Path, grid: Grid, runs: pd.DataFrame, folder: str | Path, k: int, max_positions: int,
                  max_steps: int) -> list[Path]:
    """Every figure of layout.FIGURES into report `folder`; the masks as `max_positions` tokens of
    `k`-mers halfway through `max_steps` steps."""
    pmi_tables = collect.pmi_tables(root, grid.genomes)
    builders = {
        "fewshot_curves": lambda: figures.fewshot_curves_figure(tables.fewshot_table(runs)),
        "gue_mcc": lambda: figures.gue_mcc_figure(runs),
        "pretraining_curves": lambda: figures.pretraining_curves_figure(
            collect.pretraining_curves(root, grid.pretrained)),
        "pmi_top20": lambda: figures.pmi_top20_figure(pmi_tables),
        "pmi_distribution": lambda: figures.pmi_distribution_figure(pmi_tables),
        "masks": lambda: masks.validation_masks_figure(root, grid.genomes, k, max_positions, max_steps),
    }
    return [path for item in layout.FIGURES for path in figures.save_figure(builders[item.name](), item.name, folder)]


# ------------------------------------------------------------------------------------------- CLI
def read_settings(path: str) -> dict[str, dict]:
    """The --settings file: {run folder: {setting: value}}."""
    doc = collect.read_json(Path(path))
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise CmgemsError(f"{path}: not a JSON object of run folders and their settings")
    return doc


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", required=True, type=argument(Grid.from_json),
                        help="the runs to report, as JSON (cmgems.layout.Grid; the workflow's report rule passes it)")
    parser.add_argument("--settings", type=argument(read_settings),
                        help="JSON {run folder: settings} the config declares for each run (the workflow writes "
                             f"{layout.REPORT_SETTINGS}): a record made with other settings stops the report")
    parser.add_argument("--results", default=layout.ROOT, help=f"results root to read (default: {layout.ROOT})")
    parser.add_argument("--out", default=layout.REPORT, help=f"report directory (tables/, figures/; default: "
                        f"{layout.REPORT})")
    parser.add_argument("--published", default="resources/published",
                        help="directory of published reference numbers (gue_mcc.csv, fewshot.csv)")
    parser.add_argument("--k", required=True, type=int_at_least(1), help="k-mer length of the tokens (masks figure)")
    parser.add_argument("--max-positions", required=True, type=int_at_least(3),
                        help="tokens per sequence, [CLS] and [SEP] included (masks figure)")
    parser.add_argument("--steps", required=True, type=int_at_least(1),
                        help="pretraining step budget; the masks figure shows step STEPS // 2")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--tables-only", action="store_true", help="write the tables, not the figures")
    only.add_argument("--figures-only", action="store_true", help="write the figures, not the tables")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> None:
    results = Path(args.results)
    if not results.is_dir():
        raise CmgemsError(f"--results {results}: not a directory")
    runs = collect.collect_runs(results, args.grid.runs(), args.settings)
    counts = runs["kind"].value_counts()
    log.info("%d GUE and %d few-shot runs under %s", counts.get(layout.GUE, 0), counts.get(layout.FEWSHOT, 0),
             results)
    written = []
    if not args.figures_only:
        written += write_tables(results, args.grid, runs, args.published, args.out)
    if not args.tables_only:
        written += write_figures(results, args.grid, runs, args.out, args.k, args.max_positions, args.steps)
    log.info("wrote %d files under %s", len(written), args.out)
