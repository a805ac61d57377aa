if FETCHED:

    rule fetch_fewshot:
        output:
            "{fetched}",
        log:
            "logs/fetch/{fetched}.log",
        benchmark:
            "benchmarks/out/fetch/{fetched}.tsv"
        wildcard_constraints:
            fetched=any_of(FETCHED),
        localrule: True
        conda:
            "../../envs/core.yaml"
        params:
            url=lambda w: FETCHED[w.fetched]["url"],
            sha1=lambda w: FETCHED[w.fetched]["sha1"],
        shell:
            "python -m cmgems.cli fewshot fetch --url {params.url:q} --sha1 {params.sha1:q} "
            "--out {output:q} > {log:q} 2>&1"


rule fewshot_sample:
    input:
        fewshot_source,
    output:
        "results/fewshot_sets/{dataset}/{shots}/seed{seed}.csv",
    log:
        "logs/fewshot_sets/{dataset}/{shots}/seed{seed}.log",
    benchmark:
        "benchmarks/out/fewshot_sets/{dataset}/{shots}/seed{seed}.tsv"
    localrule: True
    conda:
        "../../envs/torch.yaml"
    params:
        how=lambda w: (
            "pooled --file"
            if "pooled" in FEW["datasets"][w.dataset]
            else "sample --pool"
        ),
        seed=lambda w: ("--run" if "pooled" in FEW["datasets"][w.dataset] else "--seed"),
    shell:
        "python -m cmgems.cli fewshot {params.how} {input:q} {params.seed} {wildcards.seed} "
        "--shots {wildcards.shots} --out {output:q} > {log:q} 2>&1"


rule finetune_fewshot:
    input:
        train="results/fewshot_sets/{dataset}/{shots}/seed{seed}.csv",
        test=lambda w: FEW["datasets"][w.dataset]["test"],
        model=model_dir,
    output:
        metrics="results/{genome}/fewshot/{model}/{masking}/{steps}/{dataset}/{shots}/seed{seed}/metrics.json",
        predictions="results/{genome}/fewshot/{model}/{masking}/{steps}/{dataset}/{shots}/seed{seed}/predictions.parquet",
    log:
        "logs/{genome}/fewshot/{model}/{masking}/{steps}/{dataset}/{shots}/seed{seed}.log",
    benchmark:
        "benchmarks/out/{genome}/fewshot/{model}/{masking}/{steps}/{dataset}/{shots}/seed{seed}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: FEW["threads"]
    resources:
        **FEWSHOT_RESOURCES,
    params:
        out=output_dir,
        remote=remote_code_flag,
        r=lambda w: fewshot_regime(w.shots),
        f=FEW,
        max_length=lambda w: FEW["datasets"][w.dataset]["max_length"],
        meta=lambda w: fewshot_meta(
            w, genome=w.genome, model=w.model, masking=w.masking, steps=int(w.steps)
        ),
    shell:
        "python -m cmgems.cli finetune --model {input.model:q} --train {input.train:q} --test {input.test:q} "
        "--out {params.out:q} --max-length {params.max_length} "
        "--epochs {params.r[epochs]} --lr {params.r[lr]} --batch-size {params.r[batch_size]} "
        "--warmup-ratio {params.f[warmup_ratio]} --weight-decay {params.f[weight_decay]} "
        "--hidden-dropout {params.f[hidden_dropout]} --seed {wildcards.seed} --threads {threads} "
        "{params.remote} --meta {params.meta:q} > {log:q} 2>&1"


rule baseline_fewshot:
    input:
        train="results/fewshot_sets/{dataset}/{shots}/seed{seed}.csv",
        test=lambda w: FEW["datasets"][w.dataset]["test"],
    output:
        metrics="results/baseline/fewshot/{dataset}/{shots}/seed{seed}/metrics.json",
        predictions="results/baseline/fewshot/{dataset}/{shots}/seed{seed}/predictions.parquet",
    log:
        "logs/baseline/fewshot/{dataset}/{shots}/seed{seed}.log",
    benchmark:
        "benchmarks/out/baseline/fewshot/{dataset}/{shots}/seed{seed}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        out=output_dir,
        k=K,
        meta=lambda w: fewshot_meta(w),
    shell:
        "python -m cmgems.cli baseline --train {input.train:q} --test {input.test:q} "
        "--out {params.out:q} --k {params.k} --seed {wildcards.seed} "
        "--meta {params.meta:q} > {log:q} 2>&1"
