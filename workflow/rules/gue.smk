# `cmgems gue`: the GUE benchmark data, fetched from `gue.url` or, without one, checked where config says.
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
