# `cmgems genome`: the reference genome, downloaded and checked, and its cleaned contigs.


rule download_genome:
    output:
        "resources/genomes/{genome}.fa.gz",
    log:
        "logs/{genome}/download_genome.log",
    benchmark:
        "benchmarks/out/{genome}/download_genome.tsv"
    localrule: True
    conda:
        "../../envs/core.yaml"
    resources:
        runtime=120,
    params:
        url=lambda w: config["genomes"][w.genome]["url"],
        md5=lambda w: config["genomes"][w.genome]["md5"],
    shell:
        "python -m cmgems.cli genome download --url {params.url:q} --md5 {params.md5:q} --out {output:q} > {log:q} 2>&1"


rule genome_contigs:
    input:
        genome_fasta,
    output:
        directory(layout.of_genome("{genome}", layout.CONTIGS)),
    log:
        "logs/{genome}/genome_contigs.log",
    benchmark:
        "benchmarks/out/{genome}/genome_contigs.tsv"
    conda:
        "../../envs/core.yaml"
    resources:
        mem_mb=4000,
    params:
        contigs=lambda w: genome_contigs(w.genome),
        splice=lambda w: (
            "--splice-n" if genome_entry(w.genome).get("splice_n") else ""
        ),
    shell:
        "python -m cmgems.cli genome contigs --fasta {input:q} --out-dir {output:q} "
        "--contigs {params.contigs:q} {params.splice} > {log:q} 2>&1"
