if "url" in GUE:

    rule download_gue:
        output:
            all_gue_files(),
        log:
            "logs/download_gue.log",
        benchmark:
            "benchmarks/out/download_gue.tsv"
        localrule: True
        conda:
            "../../envs/core.yaml"
        resources:
            runtime=120,
        params:
            url=GUE.get("url"),
            md5=GUE.get("md5"),
            root=GUE["path"],
            tasks=sorted({spec["path"] for spec in GUE["tasks"].values()}),
        shell:
            "python -m cmgems.cli gue fetch --url {params.url:q} --md5 {params.md5:q} "
            "--out {params.root:q} --expect {params.tasks:q} > {log:q} 2>&1"

else:

    rule gue_missing:
        output:
            str(Path(GUE["path"], "{gue_task}", "{split}.csv")),
        log:
            "logs/gue_missing/{gue_task}/{split}.log",
        benchmark:
            "benchmarks/out/gue_missing/{gue_task}/{split}.tsv"
        wildcard_constraints:
            gue_task=any_of({spec["path"] for spec in GUE["tasks"].values()}),
            split="train|dev|test",
        localrule: True
        conda:
            "../../envs/core.yaml"
        params:
            root=lambda w, output: Path(output[0]).parents[len(Path(w.gue_task).parts)],
        shell:
            "python -m cmgems.cli gue check --root {params.root:q} --files {output:q} > {log:q} 2>&1 "
            "|| {{ cat {log:q} >&2; exit 1; }}"


rule finetune_gue:
    input:
        unpack(gue_inputs),
        model=model_dir,
    output:
        metrics="results/{genome}/gue/{model}/{masking}/{steps}/{task}/seed{seed}/metrics.json",
        predictions="results/{genome}/gue/{model}/{masking}/{steps}/{task}/seed{seed}/predictions.parquet",
    log:
        "logs/{genome}/gue/{model}/{masking}/{steps}/{task}/seed{seed}.log",
    benchmark:
        "benchmarks/out/{genome}/gue/{model}/{masking}/{steps}/{task}/seed{seed}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: GUE["threads"]
    resources:
        **GUE_RESOURCES,
    params:
        out=output_dir,
        remote=remote_code_flag,
        s=lambda w: gue_settings(w.task),
        g=GUE,
        select_by=GUE["select_by"],
        meta=lambda w: meta_json(
            kind="gue",
            genome=w.genome,
            model=w.model,
            masking=w.masking,
            steps=int(w.steps),
            task=w.task,
            seed=int(w.seed),
        ),
    shell:
        "python -m cmgems.cli finetune --model {input.model:q} --train {input.train:q} "
        "--dev {input.dev:q} --test {input.test:q} --out {params.out:q} "
        "--max-length {params.s[max_length]} --epochs {params.s[epochs]} "
        "--max-steps {params.s[max_steps]} --warmup-steps {params.s[warmup_steps]} "
        "--eval-steps {params.s[eval_steps]} --select-by {params.select_by:q} "
        "--lr {params.g[lr]} --batch-size {params.g[batch_size]} --seed {wildcards.seed} "
        "--threads {threads} {params.remote} --meta {params.meta:q} > {log:q} 2>&1"


rule baseline_gue:
    input:
        unpack(gue_inputs),
    output:
        metrics="results/baseline/gue/{task}/metrics.json",
        predictions="results/baseline/gue/{task}/predictions.parquet",
    log:
        "logs/baseline/gue/{task}.log",
    benchmark:
        "benchmarks/out/baseline/gue/{task}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        out=output_dir,
        k=K,
        seed=GUE["seeds"][0],
        meta=lambda w: meta_json(kind="gue", task=w.task, seed=GUE["seeds"][0]),
    shell:
        "python -m cmgems.cli baseline --train {input.train:q} --dev {input.dev:q} --test {input.test:q} "
        "--out {params.out:q} --k {params.k} --seed {params.seed} "
        "--meta {params.meta:q} > {log:q} 2>&1"
