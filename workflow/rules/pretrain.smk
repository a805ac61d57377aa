# `cmgems pretrain`: one masked-language-model pretraining run per (genome, model, masking, steps).
# The shell execs launch.sh: a stop signal to the job (scancel, --signal) must not end the shell
# before the trainer has checkpointed (README, "Stops and checkpoints").


rule pretrain:
    input:
        unpack(pretrain_inputs),
    output:
        model=directory(layout.WILDCARDS.checkpoint()),
        metrics=report(
            layout.WILDCARDS.curves(),
            caption="../report/table_pretraining.rst",
            category="2. Pretraining",
            subcategory="{model} {masking} {steps} steps",
        ),
        summary=layout.WILDCARDS.summary(),
    log:
        "logs/{genome}/pretrain/{model}/{masking}/{steps}.log",
    benchmark:
        "benchmarks/out/{genome}/pretrain/{model}/{masking}/{steps}.tsv"
    conda:
        torch_env(PRETRAIN_RESOURCES)
    threads: PRETRAIN_RESOURCES["cpus_per_task"]
    resources:
        **PRETRAIN_RESOURCES,
    params:
        run=layout.WILDCARDS.folder(),
        launch=PACKAGE_DIR / "scripts" / "launch.sh",
        recipe=lambda w: pretrain_recipe_args(w.genome),
        options=lambda w: json.dumps(
            setting(w.genome, "pretrain", "masking_options").get(w.masking, {})
        ),
        init=lambda w, input: (
            shlex.join(["--init-from", input.init]) if "init" in input.keys() else ""
        ),
        ranks=lambda w, input: shlex.join(
            ["--ranking", input.ranking]
            if "ranking" in input.keys()
            else ["--pmi", input.pmi]
        ),
        meta=lambda w: meta_json(genome=w.genome),
        k=K,
        positions=config["max_positions"],
        seed=PRE["seed"],
        gpus=gpus_per_node(PRETRAIN_RESOURCES),
        processes=pretrain_processes_per_node(),
        shutdown=PRE["shutdown_timeout"],
    shell:
        "CMGEMS_NODES={resources.nodes} CMGEMS_PROCS_PER_NODE={params.processes} "
        "CMGEMS_CPUS_PER_TASK={resources.cpus_per_task} CMGEMS_SHUTDOWN_TIMEOUT={params.shutdown} "
        "exec bash {params.launch:q} pretrain "
        "--corpus {input.corpus:q} {params.ranks} --tokenizer {input.tokenizer:q} "
        "--out {params.run:q} --model {wildcards.model} --masking {wildcards.masking} "
        "--masking-options {params.options:q} --max-steps {wildcards.steps} --k {params.k} "
        "--max-positions {params.positions} --seed {params.seed} --gpus {params.gpus} "
        "{params.recipe} {params.init} --meta {params.meta:q} > {log:q} 2>&1"
