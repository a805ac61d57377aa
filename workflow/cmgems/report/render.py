"""The report's tables as files: CSV (full precision), GitHub Markdown and a LaTeX booktabs tabular."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cmgems import layout
from cmgems.atomic import atomic_output


P_VALUES = ("p", "p_holm")  # columns shown with P_DIGITS significant digits (0.00 would hide a p of 0.004)
P_DIGITS = 2


def _cell(value, digits: int, column: str) -> str:
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.{P_DIGITS}g}" if column in P_VALUES else f"{value:.{digits}f}"
    return str(value)


def _cells(df: pd.DataFrame, digits: int) -> list[list[str]]:
    """Every row of `df` as text cells (`_cell`)."""
    return [[_cell(v, digits, c) for c, v in zip(df.columns, row)] for row in df.itertuples(index=False)]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], text)


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned, floats with `digits` decimals."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(str(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(v.replace("|", r"\|") for v in row) + " |" for row in _cells(df, digits)]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, digits: int = 2) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule) ready to paste into a paper."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(v) for v in row) + r" \\" for row in _cells(df, digits)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame, digits: int = 2) -> str:
    """CSV at full precision (`digits` unused), blanks for missing values."""
    return df.to_csv(index=False, na_rep="")


RENDERERS = {"csv": to_csv, "md": to_markdown, "tex": to_latex}  # by layout.TABLE_FORMATS
DIGITS = {"pretraining": 3}  # decimals in Markdown and LaTeX, per table (default 2)


def write_table(df: pd.DataFrame, name: str, folder: str | Path, digits: int = 2) -> list[Path]:
    """Write table `name` of report `folder` in every format (layout.TABLE_FORMATS), each atomically."""
    paths = []
    for fmt in layout.TABLE_FORMATS:
        path = Path(layout.table(name, fmt, folder))
        with atomic_output(path) as tmp:
            tmp.write_text(RENDERERS[fmt](df, digits))
        paths.append(path)
    return paths


def write_tables(tables: dict[str, pd.DataFrame], folder: str | Path) -> list[Path]:
    """Each table of layout.TABLES, from `tables` by name, into report `folder`."""
    return [path for item in layout.TABLES
            for path in write_table(tables[item.name], item.name, folder, DIGITS.get(item.name, 2))]
