rule pretrain:
    input:
        corpus="results/{genome}/corpus",
        pmi="results/{genome}/pmi/pmi.parquet",
        tokenizer="results/{genome}/tokenizer",
    output:
        model=directory("results/{genome}/models/{model}/{masking}/{steps}/model"),
        metrics=report(
            "results/{genome}/models/{model}/{masking}/{steps}/metrics.csv",
            caption="../report/table_pretraining.rst",
            category="2. Pretraining",
            subcategory="{model} {masking} {steps} steps",
        ),
        summary="results/{genome}/models/{model}/{masking}/{steps}/summary.json",
    log:
        "logs/{genome}/pretrain/{model}/{masking}/{steps}.log",
    benchmark:
        "benchmarks/out/{genome}/pretrain/{model}/{masking}/{steps}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: PRETRAIN_RESOURCES["cpus_per_task"]
    resources:
        **PRETRAIN_RESOURCES,
    params:
        run="results/{genome}/models/{model}/{masking}/{steps}",
        launch=PACKAGE_DIR / "scripts" / "launch.sh",
        recipe=lambda w: " ".join(
            f"--{key.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for key, v in PRE.get("recipe", {}).items()
        ),
        options=lambda w: json.dumps(PRE["masking_options"].get(w.masking, {})),
        init=f"--init-from {PRE['init_from']}" if PRE.get("init_from") else "",
        meta=lambda w: meta_json(genome=w.genome),
        k=K,
        positions=config["max_positions"],
        seed=PRE["seed"],
    shell:
        "CMGEMS_NODES={resources.nodes} bash {params.launch} pretrain "
        "--corpus {input.corpus} --pmi {input.pmi} --tokenizer {input.tokenizer} "
        "--out {params.run} --model {wildcards.model} --masking {wildcards.masking} "
        "--masking-options {params.options:q} --max-steps {wildcards.steps} --k {params.k} "
        "--max-positions {params.positions} --seed {params.seed} {params.recipe} {params.init} "
        "--meta {params.meta:q} > {log} 2>&1"
