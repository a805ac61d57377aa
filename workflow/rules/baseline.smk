# `cmgems baseline`: the k-mer logistic-regression baseline on the same GUE and few-shot runs, packed.
for name, runs in BASELINE_GUE_PACKS.items():

    rule:
        name:
            f"baseline_gue_{name}"
        input:
            gue_pack_files(runs),
        output:
            pack_outputs(None, runs),
        log:
            f"logs/baseline/gue/pack_{name}.log",
        benchmark:
            f"benchmarks/out/baseline/gue/pack_{name}.tsv"
        conda:
            "../../envs/torch.yaml"
        threads: 1
        resources:
            **pack_resources(BASELINE_RESOURCES, runs),
        params:
            spec=lambda w, name=name, runs=runs: pack_spec(
                name, "gue.pack_runs", [baseline_gue_run(run) for run in runs]
            ),
            gpus=gpus_per_node(BASELINE_RESOURCES),
        shell:
            "python -m cmgems.cli --gpus {params.gpus} baseline --pack {params.spec:q} > {log:q} 2>&1"


for name, runs in FEWSHOT_PACKS.items():

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
            gpus=gpus_per_node(BASELINE_RESOURCES),
        shell:
            "python -m cmgems.cli --gpus {params.gpus} baseline --pack {params.spec:q} > {log:q} 2>&1"
