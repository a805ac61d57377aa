# `cmgems corpus` and `cmgems tokenizer`: the k-mer pretraining corpus of a genome and its tokenizer.


rule corpus_chunk:
    input:
        layout.of_genome("{genome}", layout.CONTIGS),
    output:
        temp(layout.of_genome("{genome}", layout.CORPUS_CHUNK, contig="{contig}")),
    log:
        "logs/{genome}/corpus_chunk/{contig}.log",
    benchmark:
        "benchmarks/out/{genome}/corpus_chunk/{contig}.tsv"
    conda:
        "../../envs/core.yaml"
    resources:
        mem_mb=4000,
    params:
        corpus=lambda w: setting(w.genome, "corpus"),
        k=K,
    shell:
        "python -m cmgems.cli corpus chunk --contig-parquet {input:q}/{wildcards.contig}.parquet --out {output:q} "
        "--k {params.k} --max-tokens {params.corpus[max_tokens]} --min-tokens {params.corpus[min_tokens]} "
        "--random-max-tokens {params.corpus[random_max_tokens]} "
        "--full-length-prob {params.corpus[full_length_prob]} --seed {params.corpus[seed]} > {log:q} 2>&1"


rule corpus_finalize:
    input:
        chunks=lambda w: [
            layout.of_genome(w.genome, layout.CORPUS_CHUNK, contig=c)
            for c in genome_contigs(w.genome)
        ],
        contigs=layout.of_genome("{genome}", layout.CONTIGS),
    output:
        directory(layout.of_genome("{genome}", layout.CORPUS)),
    log:
        "logs/{genome}/corpus_finalize.log",
    benchmark:
        "benchmarks/out/{genome}/corpus_finalize.tsv"
    conda:
        "../../envs/core.yaml"
    resources:
        mem_mb=8000,
    params:
        fraction=lambda w: setting(w.genome, "corpus", "validation_fraction"),
        k=K,
    shell:
        "python -m cmgems.cli corpus finalize --chunks {input.chunks:q} --out-dir {output:q} --k {params.k} "
        "--validation-fraction {params.fraction} --contigs-summary {input.contigs:q}/summary.json "
        "> {log:q} 2>&1"


rule tokenizer:
    output:
        directory(layout.of_genome("{genome}", layout.TOKENIZER)),
    log:
        "logs/{genome}/tokenizer.log",
    benchmark:
        "benchmarks/out/{genome}/tokenizer.tsv"
    localrule: True
    conda:
        "../../envs/torch.yaml"
    params:
        k=K,
        positions=config["max_positions"],
    shell:
        "python -m cmgems.cli tokenizer --k {params.k} --max-positions {params.positions} --out {output:q} > {log:q} 2>&1"
