"""`cmgems <stage> ...`: one subcommand per pipeline stage; each stage module is imported only when used.

A stage module defines `configure_parser(parser)`, which adds its arguments (or its own subcommands)
and sets `func` through `parser.set_defaults(func=...)`; `func(args)` does the work. A stage whose
run is a settings dataclass declares its fields with `option` (default and help once) and adds them
with `add_settings`. Bad arguments stop argparse (exit 2); bad input files and file-system errors
print one line naming the file (exit 1).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib
import logging
import sys
import typing
from typing import Any, Callable, Iterable, TypeVar

from cmgems.errors import CmgemsError

T = TypeVar("T")
log = logging.getLogger("cmgems")

STAGES = {
    "genome": ("cmgems.genome", "download a reference genome and write cleaned contigs"),
    "corpus": ("cmgems.corpus", "chunk cleaned contigs into the k-mer pretraining corpus"),
    "tokenizer": ("cmgems.kmers", "write the k-mer vocabulary as a Hugging Face tokenizer"),
    "pmi": ("cmgems.pmi", "count n-grams and score their PMI"),
    "gue": ("cmgems.gue", "download and unpack the GUE benchmark"),
    "pretrain": ("cmgems.pretrain", "masked-language-model pretraining"),
    "models": ("cmgems.hub", "fetch a published model folder from a hub repository at a pinned commit"),
    "finetune": ("cmgems.finetune", "fine-tune and score a pretrained model on a labelled task"),
    "fewshot": ("cmgems.fewshot", "draw few-shot training sets"),
    "baseline": ("cmgems.baseline", "k-mer count logistic-regression baseline"),
    "report": ("cmgems.report", "tables and figures from finished runs"),
}


def argument(check: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type` from a check that raises CmgemsError, whose message argparse then reports."""

    def convert(text: str) -> T:
        try:
            return check(text)
        except CmgemsError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `minimum`."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return convert


def option(default: Any = dataclasses.MISSING, *, help: str | None = None, factory: Any = dataclasses.MISSING,
           **keywords) -> Any:
    """A settings dataclass field whose command-line help (and any other `add_argument` keywords:
    choices, nargs, const, metavar) is its metadata; `factory`: a default_factory."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help, **keywords})


def add_settings(parser: argparse.ArgumentParser, settings: type, names: Iterable[str]) -> None:
    """The options of the named fields of the dataclass `settings`, made by transformers'
    HfArgumentParser: `--max-steps` (and `--max_steps`) for `max_steps`, the type from the annotation
    (`X | None`: X; bool: a flag that also takes true/false), the default from the field (none:
    required), other `add_argument` keywords from the field's metadata (see `option`). `parser` may
    be an argument group. Fields that need more (JSON values, a fixed count of values) a stage adds
    itself. transformers is imported here, not above: it is heavy, and the core environment lacks it."""
    from transformers import HfArgumentParser

    hints = typing.get_type_hints(settings)
    fields = {f.name: f for f in dataclasses.fields(settings)}
    for name in names:
        field = copy.copy(fields[name])  # HfArgumentParser narrows its type in place
        field.type = hints[name]
        HfArgumentParser._parse_dataclass_field(DashesFirst(parser), field)


class DashesFirst:
    """An argument container that lists `--max-steps` before HfArgumentParser's alias `--max_steps`
    (usage lines and error messages name an option by its first spelling)."""

    def __init__(self, container: argparse.ArgumentParser):
        self.container = container

    def add_argument(self, *names: str, **keywords) -> argparse.Action:
        return self.container.add_argument(*sorted(names, key=lambda name: "_" in name), **keywords)


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmgems", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--gpus", type=int_at_least(0), metavar="N",
                        help="GPUs the job requested (config resources): stop at once when torch sees none, or when "
                             "the SLURM allocation holds GPUs torch cannot see (given: even with N = 0)")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    wanted = next((a for a in argv if a in STAGES), None)
    for name, (module, help_text) in STAGES.items():
        stage_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            importlib.import_module(module).configure_parser(stage_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.gpus is not None:
            from cmgems.distributed import check_gpus_visible  # imports torch

            check_gpus_visible(args.gpus)
        args.func(args)
    except CmgemsError as err:
        message = str(err)
    except OSError as err:
        log.debug("file-system error", exc_info=True)  # with -v: where it came from
        message = str(err)
    else:
        return 0
    print(f"cmgems {args.stage}: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
