# `cmgems pmi`: n-gram counts per contig, merged, and the PMI table.


rule pmi_count:
    input:
        layout.of_genome("{genome}", layout.CONTIGS),
    output:
        temp(layout.of_genome("{genome}", layout.PMI_COUNTS, contig="{contig}")),
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
        max_n=lambda w: setting(w.genome, "pmi", "max_n"),
    shell:
        "python -m cmgems.cli pmi count --contigs {input:q}/{wildcards.contig}.parquet --max-n {params.max_n} "
        "--threads {threads} --out {output:q} > {log:q} 2>&1"


rule pmi_merge:
    input:
        lambda w: [
            layout.of_genome(w.genome, layout.PMI_COUNTS, contig=c)
            for c in pmi_contigs(w.genome)
        ],
    output:
        layout.of_genome("{genome}", layout.NGRAM_COUNTS),
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
        layout.of_genome("{genome}", layout.NGRAM_COUNTS),
    output:
        layout.of_genome("{genome}", layout.PMI),
    log:
        "logs/{genome}/pmi_score.log",
    benchmark:
        "benchmarks/out/{genome}/pmi_score.tsv"
    conda:
        "../../envs/core.yaml"
    params:
        definition=lambda w: setting(w.genome, "pmi", "definition"),
        min_count=lambda w: setting(w.genome, "pmi", "min_count"),
    shell:
        "python -m cmgems.cli pmi score --counts {input:q} --out {output:q} --definition {params.definition:q} "
        "--min-count {params.min_count} > {log:q} 2>&1"
