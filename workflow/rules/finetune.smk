# `cmgems finetune`: GUE and few-shot fine-tuning of each evaluated model, one job per pack of runs.
# A pack's spec (every setting of its runs) is a params function of the wildcards only, so that
# Snakemake's params trigger sees it: a changed setting reruns exactly the packs it changes.
for name, runs in GUE_PACKS.items():

    rule:
        name:
            f"finetune_gue_{name}"
        input:
            model=model_dir,
            data=gue_pack_files(runs),
        output:
            pack_outputs(layout.WILDCARDS, runs),
        log:
            f"logs/{{genome}}/gue/{{model}}/{{masking}}/{{steps}}/pack_{name}.log",
        benchmark:
            f"benchmarks/out/{{genome}}/gue/{{model}}/{{masking}}/{{steps}}/pack_{name}.tsv"
        conda:
            torch_env(GUE_RESOURCES)
        threads: GUE["threads"]
        resources:
            **pack_resources(GUE_RESOURCES, runs),
        params:
            spec=lambda w, name=name, runs=runs: pack_spec(
                name, "gue.pack_runs", [gue_run(w, model_dir(w), run) for run in runs]
            ),
            gpus=gpus_per_node(GUE_RESOURCES),
        shell:
            "python -m cmgems.cli --gpus {params.gpus} finetune --pack {params.spec:q} > {log:q} 2>&1"


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
            torch_env(FEWSHOT_RESOURCES)
        threads: FEW["threads"]
        resources:
            **pack_resources(FEWSHOT_RESOURCES, runs),
        params:
            spec=lambda w, name=name, runs=runs: pack_spec(
                name,
                "fewshot.pack_runs",
                [fewshot_run(w, model_dir(w), run) for run in runs],
            ),
            gpus=gpus_per_node(FEWSHOT_RESOURCES),
        shell:
            "python -m cmgems.cli --gpus {params.gpus} finetune --pack {params.spec:q} > {log:q} 2>&1"
