# `cmgems fewshot`: the few-shot data, fetched at pinned commits, and the k-shot training sets drawn from it.
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
