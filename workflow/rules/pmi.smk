rule pmi_count:
    input:
        "results/{genome}/contigs",
    output:
        temp("results/{genome}/pmi/counts/{contig}.parquet"),
    log:
        "logs/{genome}/pmi_count/{contig}.log",
    benchmark:
        "benchmarks/out/{genome}/pmi_count/{contig}.tsv"
    conda:
        "../../envs/core.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        max_n=config["pmi"]["max_n"],
    shell:
        "python -m cmgems.cli pmi count --contigs {input:q}/{wildcards.contig}.parquet --max-n {params.max_n} "
        "--threads {threads} --out {output:q} > {log:q} 2>&1"


rule pmi_merge:
    input:
        lambda w: expand(
            "results/{{genome}}/pmi/counts/{contig}.parquet",
            contig=pmi_contigs(w.genome),
        ),
    output:
        "results/{genome}/pmi/ngram_counts.parquet",
    log:
        "logs/{genome}/pmi_merge.log",
    benchmark:
        "benchmarks/out/{genome}/pmi_merge.tsv"
    conda:
        "../../envs/core.yaml"
    shell:
        "python -m cmgems.cli pmi merge --counts {input:q} --out {output:q} > {log:q} 2>&1"


rule pmi_score:
    input:
        "results/{genome}/pmi/ngram_counts.parquet",
    output:
        "results/{genome}/pmi/pmi.parquet",
    log:
        "logs/{genome}/pmi_score.log",
    benchmark:
        "benchmarks/out/{genome}/pmi_score.tsv"
    conda:
        "../../envs/core.yaml"
    params:
        definition=config["pmi"]["definition"],
        min_count=config["pmi"]["min_count"],
    shell:
        "python -m cmgems.cli pmi score --counts {input:q} --out {output:q} --definition {params.definition:q} "
        "--min-count {params.min_count} > {log:q} 2>&1"
