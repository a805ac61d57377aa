# Loading and checking the configuration. Every mistake found here stops the workflow while the DAG
# is built (`snakemake -n` included), before any job runs, with a message naming the key (or the
# file and line); nothing is written.
import collections.abc
import math
import re
from pathlib import Path

import jsonschema
import yaml
from snakemake.utils import min_version, validate

min_version("9.0")

SCHEMA_FILE = Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
DEFAULT_CONTIGS = [f"chr{i}" for i in range(1, 23)] + ["chrX", "chrY"]


class ConfigError(Exception):
    """A configuration mistake, found when the DAG is built."""


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key given twice in one mapping (Snakemake's keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if isinstance(key, collections.abc.Hashable) and key in seen:
                raise ConfigError(
                    f"{key_node.start_mark.name}, line {line}: key {key!r} is given twice "
                    f"in the same mapping (first on line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def check_duplicate_keys(paths):
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                yaml.load(f, Loader=UniqueKeyLoader)
        except (OSError, yaml.YAMLError):
            pass  # Snakemake has read it: what this loader cannot read is not a duplicate


def dotted(path):
    """A key's path as written in messages: gue.tasks.tf_0.path, genomes.hg38.contigs[2]."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.lstrip(".")


def check_finite(value, path=()):
    """YAML's .nan and .inf pass the schema's bounds; no setting takes them."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_finite(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_finite(item, (*path, i))
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{dotted(path)}: {value} is not a finite number")


def entries(*keys):
    """The (name, mapping) items of config[keys[0]][keys[1]]..., before the schema has checked it."""
    node = config
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return (
        [(n, e) for n, e in node.items() if isinstance(e, dict)]
        if isinstance(node, dict)
        else []
    )


def check_alternatives():
    """Either-or keys, with a message saying what is wrong (the schema's oneOf would only say
    'is not valid under any of the given schemas')."""
    for name, entry in entries("genomes"):
        where = f"genomes.{name}"
        if "url" in entry and "path" in entry:
            raise ConfigError(
                f"{where}: both url and path are given: use url (with md5) to download the "
                "FASTA, or path for a local one, not both"
            )
        if "url" in entry and "md5" not in entry:
            raise ConfigError(
                f"{where}: url without md5: add the md5 of the file at url, checked before use"
            )
        if "md5" in entry and "url" not in entry:
            raise ConfigError(
                f"{where}: md5 without url: md5 checks a download; drop it for a local path"
            )
        if "path" not in entry and "url" not in entry and "variant_of" not in entry:
            raise ConfigError(
                f"{where}: give path (a local FASTA), url with md5, or variant_of (another genome)"
            )
        base = entry.get("variant_of")
        if base is not None and (base == name or base not in config["genomes"]):
            raise ConfigError(
                f"{where}.variant_of: {base!r} is not another genome of genomes ({', '.join(config['genomes'])})"
            )
        if base is not None and "variant_of" in config["genomes"][base]:
            raise ConfigError(
                f"{where}.variant_of: {base!r} is itself a variant; name the genome it varies"
            )
    for name, entry in entries("fewshot", "datasets"):
        where = f"fewshot.datasets.{name}"
        if "pool" in entry and "pooled" in entry:
            raise ConfigError(
                f"{where}: both pool and pooled are given: draw from a pool, or use pooled sets, not both"
            )
        if "pool" not in entry and "pooled" not in entry:
            raise ConfigError(
                f"{where}: give pool (a file to draw shots from) or pooled ({{SHOTS: file}})"
            )


def describe(error):
    """A jsonschema error as one line naming the key, without the schema."""
    where = dotted(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(error.schema.get("properties", {}))
        key = dotted(
            [*error.absolute_path, min(map(str, set(error.instance) - set(known)))]
        )
        return (
            f"unknown key {key!r}; {where or 'the top level'} takes: {', '.join(known)}"
        )
    message = f"{where or 'config'}: {error.message}"
    if isinstance(error.schema, dict) and "description" in error.schema:
        message += f" ({error.schema['description']})"
    return message


def check_schema():
    """Validate against the schema (messages by key), then let Snakemake fill in its defaults; then
    the settings of each genome with overrides (`genome_config`) as a whole configuration.
    """
    schema = yaml.safe_load(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        raise ConfigError(describe(error))
    validate(config, schema=str(SCHEMA_FILE))
    for genome in (g for g, entry in config["genomes"].items() if "overrides" in entry):
        error = jsonschema.exceptions.best_match(
            validator.iter_errors(genome_config(genome))
        )
        if error is not None:
            raise ConfigError(f"genomes.{genome}.overrides: {describe(error)}")


def merged(base, over):
    """`base` with `over` merged in: mappings key by key, anything else replaced."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    return {
        **base,
        **{key: merged(base.get(key), value) for key, value in over.items()},
    }


def genome_entry(genome):
    """The entry of `genome`; a variant's takes the `contigs` and `splice_n` of the genome it varies
    unless it gives its own."""
    entry = config["genomes"][genome]
    base = config["genomes"].get(entry.get("variant_of"), {})
    return {
        **{key: base[key] for key in ("contigs", "splice_n") if key in base},
        **entry,
    }


def genome_config(genome):
    """The configuration of `genome`'s stages and runs: the top level with its `overrides` merged in
    (the top level itself for the published checkpoints' genome)."""
    entry = config["genomes"].get(genome, {})
    return merged(config, entry.get("overrides", {}))


def check_semantics(config, genome=None):
    """Constraints between keys, which the schema cannot state, in `config`: that of `genome`, whose
    messages name its overrides, or the top level's (for the genomes without overrides).
    """
    plain = [g for g, entry in config["genomes"].items() if "overrides" not in entry]
    try:
        check_keys(config, [genome] if genome else plain)
    except ConfigError as err:
        raise ConfigError(
            f"genomes.{genome}.overrides: {err}" if genome else str(err)
        ) from None


def check_keys(config, genomes):
    positions, corpus = config["max_positions"], config["corpus"]
    if corpus["min_tokens"] > corpus["max_tokens"]:
        raise ConfigError(
            f"corpus.min_tokens ({corpus['min_tokens']}) exceeds corpus.max_tokens ({corpus['max_tokens']})"
        )
    random_max = corpus["random_max_tokens"]
    if random_max and not corpus["min_tokens"] <= random_max <= corpus["max_tokens"]:
        raise ConfigError(
            f"corpus.random_max_tokens ({random_max}) is not between corpus.min_tokens "
            f"({corpus['min_tokens']}) and corpus.max_tokens ({corpus['max_tokens']}); 0 means max_tokens"
        )
    if corpus["max_tokens"] + 2 > positions:
        raise ConfigError(
            f"corpus.max_tokens ({corpus['max_tokens']}) + [CLS] and [SEP] exceeds max_positions "
            f"({positions}): chunks would be truncated; use max_tokens <= {positions - 2}"
        )
    lengths = [
        (f"gue.tasks.{name}.max_length", task["max_length"])
        for name, task in config["gue"]["tasks"].items()
    ] + [
        (f"fewshot.datasets.{name}.max_length", dataset["max_length"])
        for name, dataset in config["fewshot"]["datasets"].items()
    ]
    for key, length in lengths:
        if length > positions:
            raise ConfigError(
                f"{key} ({length}) exceeds max_positions ({positions}), the models' positions"
            )
    longest = max(config["pretrain"]["steps"])
    for milestone in config["pretrain"].get("recipe", {}).get("milestones", []):
        if milestone >= longest:
            raise ConfigError(
                f"pretrain.recipe.milestones: {milestone} is not below the longest run "
                f"(pretrain.steps: {longest}), so no run would save it"
            )
    for contig in config["pmi"]["contigs"] or []:
        for genome in genomes:
            if contig not in genome_entry(genome).get("contigs", DEFAULT_CONTIGS):
                raise ConfigError(
                    f"pmi.contigs: {contig!r} is not among the contigs of genome {genome!r} "
                    f"(genomes.{genome}.contigs, default chr1-22, chrX, chrY)"
                )


def pooled_shots(where, key):
    """A `pooled` key as shots per class: YAML gives 10, or '10' when quoted; anything else (ten, 10.5,
    0, yes) is refused rather than read as another number or left to fail as a traceback.
    """
    if type(key) not in (int, str) or not re.fullmatch(r"[1-9][0-9]*", str(key)):
        raise ConfigError(
            f"{where}: key {key!r} is not a number of shots (a positive integer: shots per class)"
        )
    return int(key)


def check_fewshot_shots():
    """The shot sizes a few-shot dataset supplies (its `shots`, else its `pooled` keys) are all among
    fewshot.shots, which limits them: a size outside it would silently get no runs."""
    grid = config["fewshot"]["shots"]
    for name, dataset in config["fewshot"]["datasets"].items():
        where = f"fewshot.datasets.{name}"
        pooled = [pooled_shots(f"{where}.pooled", k) for k in dataset.get("pooled", {})]
        if len(set(pooled)) < len(pooled):
            raise ConfigError(
                f"{where}.pooled: a number of shots is given twice ({pooled})"
            )
        key, supplied = (
            (f"{where}.shots", dataset["shots"])
            if "shots" in dataset
            else (f"{where}.pooled", pooled)
        )
        unused = sorted(set(supplied) - set(grid))
        if unused:
            raise ConfigError(
                f"{key}: {unused} not among fewshot.shots ({grid}), so no run would use them; "
                "add them to fewshot.shots or remove them here"
            )
        unsupplied = sorted(set(supplied) - set(pooled)) if pooled else []
        if unsupplied:
            raise ConfigError(f"{key}: {unsupplied} has no file in {where}.pooled")


check_duplicate_keys(workflow.configfiles)
check_finite(config)
check_alternatives()
check_schema()
check_semantics(config)
for genome, entry in config["genomes"].items():
    if "overrides" in entry:
        check_semantics(genome_config(genome), genome)
check_fewshot_shots()
