rule corpus_chunk:
    input:
        "results/{genome}/contigs",
    output:
        temp("results/{genome}/corpus_chunks/{contig}.parquet"),
    log:
        "logs/{genome}/corpus_chunk/{contig}.log",
    benchmark:
        "benchmarks/out/{genome}/corpus_chunk/{contig}.tsv"
    conda:
        "../../envs/core.yaml"
    resources:
        mem_mb=4000,
    params:
        c=config["corpus"],
        k=K,
    shell:
        "python -m cmgems.cli corpus chunk --contig-parquet {input:q}/{wildcards.contig}.parquet --out {output:q} "
        "--k {params.k} --max-tokens {params.c[max_tokens]} --min-tokens {params.c[min_tokens]} "
        "--random-max-tokens {params.c[random_max_tokens]} "
        "--full-length-prob {params.c[full_length_prob]} --seed {params.c[seed]} > {log:q} 2>&1"


rule corpus_finalize:
    input:
        chunks=lambda w: expand(
            "results/{{genome}}/corpus_chunks/{contig}.parquet",
            contig=genome_contigs(w.genome),
        ),
        contigs="results/{genome}/contigs",
    output:
        directory("results/{genome}/corpus"),
    log:
        "logs/{genome}/corpus_finalize.log",
    benchmark:
        "benchmarks/out/{genome}/corpus_finalize.tsv"
    conda:
        "../../envs/core.yaml"
    resources:
        mem_mb=8000,
    params:
        fraction=config["corpus"]["validation_fraction"],
        k=K,
    shell:
        "python -m cmgems.cli corpus finalize --chunks {input.chunks:q} --out-dir {output:q} --k {params.k} "
        "--validation-fraction {params.fraction} --contigs-summary {input.contigs:q}/summary.json "
        "> {log:q} 2>&1"
