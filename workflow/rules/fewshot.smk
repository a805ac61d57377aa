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
        layout.fewshot_set("{dataset}", "{shots}", "{seed}"),
    log:
        "logs/fewshot_sets/{dataset}/{shots}/seed{seed}.log",
    benchmark:
        "benchmarks/out/fewshot_sets/{dataset}/{shots}/seed{seed}.tsv"
    localrule: True
    conda:
        "../../envs/core.yaml"
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


for name, runs in FEWSHOT_PACKS.items():

    rule:
        name:
            f"finetune_fewshot_{name}"
        input:
            model=model_dir,
            data=fewshot_pack_files(runs),
        output:
            pack_outputs(layout.WILDCARDS, runs),
        log:
            f"logs/{{genome}}/fewshot/{{model}}/{{masking}}/{{steps}}/pack_{name}.log",
        benchmark:
            f"benchmarks/out/{{genome}}/fewshot/{{model}}/{{masking}}/{{steps}}/pack_{name}.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: FEW["threads"]
        resources:
            **pack_resources(FEWSHOT_RESOURCES, runs),
        params:
            spec=lambda w, input, name=name, runs=runs: pack_spec(
                name,
                "fewshot.pack_runs",
                [fewshot_run(w, input.model, run) for run in runs],
            ),
        shell:
            "python -m cmgems.cli finetune --pack {params.spec:q} > {log:q} 2>&1"

    rule:
        name:
            f"baseline_fewshot_{name}"
        input:
            fewshot_pack_files(runs),
        output:
            pack_outputs(None, runs),
        log:
            f"logs/baseline/fewshot/pack_{name}.log",
        benchmark:
            f"benchmarks/out/baseline/fewshot/pack_{name}.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            **pack_resources(BASELINE_RESOURCES, runs),
        params:
            spec=lambda w, name=name, runs=runs: pack_spec(
                name,
                "fewshot.pack_runs",
                [baseline_fewshot_run(run) for run in runs],
            ),
        shell:
            "python -m cmgems.cli baseline --pack {params.spec:q} > {log:q} 2>&1"
