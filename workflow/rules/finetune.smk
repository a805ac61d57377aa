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
            "../../envs/torch.yaml"
        threads: GUE["threads"]
        resources:
            **pack_resources(GUE_RESOURCES, runs),
        params:
            spec=lambda w, input, name=name, runs=runs: pack_spec(
                name, "gue.pack_runs", [gue_run(w, input.model, run) for run in runs]
            ),
        shell:
            "python -m cmgems.cli finetune --pack {params.spec:q} > {log:q} 2>&1"


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
        shell:
            "python -m cmgems.cli baseline --pack {params.spec:q} > {log:q} 2>&1"
