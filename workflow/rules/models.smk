# `cmgems models`: published checkpoints (`pretrained_models`), fetched from a model hub at a pinned
# commit, each file checked by its SHA-256, or read from a local folder; evaluated as ours are, with
# their own tokenizer, batch size, lengths and resources where their entry says so.
# (The entries' checks and settings: common.smk, `pretrained models`.)
if FETCHED_MODELS:

    rule fetch_model:
        output:
            directory(f"{MODELS_DIR}/{{name}}"),
        log:
            "logs/fetch_model/{name}.log",
        benchmark:
            "benchmarks/out/fetch_model/{name}.tsv"
        wildcard_constraints:
            name=any_of(FETCHED_MODELS),
        localrule: True
        conda:
            "../../envs/core.yaml"
        resources:
            runtime=120,
        params:
            repo=lambda w: FETCHED_MODELS[w.name]["repo"],
            revision=lambda w: FETCHED_MODELS[w.name]["revision"],
            files=lambda w: json.dumps(FETCHED_MODELS[w.name]["files"], sort_keys=True),
            endpoint=lambda w: shlex.join(
                ["--endpoint", FETCHED_MODELS[w.name]["endpoint"]]
                if "endpoint" in FETCHED_MODELS[w.name]
                else []
            ),
        shell:
            "python -m cmgems.cli models fetch --repo {params.repo:q} --revision {params.revision:q} "
            "--files {params.files:q} {params.endpoint} --out {output:q} > {log:q} 2>&1"
