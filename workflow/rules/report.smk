# The report reads the grid's runs and writes its tables and figures where cmgems.layout puts them
# (the defaults of `cmgems report --results` and `--out`).
rule report:
    input:
        report_inputs(),
    output:
        [
            report(
                layout.table(t.name),
                caption=f"../report/{t.caption}.rst",
                category=t.category,
                subcategory="Tables",
            )
            for t in layout.TABLES
        ],
        [
            report(
                layout.figure(f.name),
                caption=f"../report/{f.caption}.rst",
                category=f.category,
                subcategory="Figures",
            )
            for f in layout.FIGURES
        ],
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/out/report.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        grid=report_grid(),
        published=config["report"]["published"],
        k=K,
        positions=config["max_positions"],
        steps=max(PRE["steps"]),
    shell:
        "python -m cmgems.cli report --grid {params.grid:q} "
        "--published {params.published:q} --k {params.k} --max-positions {params.positions} "
        "--steps {params.steps} > {log:q} 2>&1"
