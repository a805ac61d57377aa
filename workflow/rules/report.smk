# The report reads the grid's runs and writes its tables and figures where cmgems.layout puts them
# (the defaults of `cmgems report --results` and `--out`).
# The settings the config declares for each run, which the report checks every record against. Its
# params hold their digest, so that Snakemake's params trigger writes it again when any changes.
localrules:
    report_settings,


rule report_settings:
    output:
        layout.REPORT_SETTINGS,
    log:
        "logs/report_settings.log",
    benchmark:
        "benchmarks/out/report_settings.tsv"
    params:
        digest=lambda w: settings_digest(declared_settings()),
    run:
        write_declared_settings(output[0], log[0])


rule report:
    input:
        report_inputs(),
        settings=layout.REPORT_SETTINGS,
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
        "python -m cmgems.cli report --grid {params.grid:q} --settings {input.settings:q} "
        "--published {params.published:q} --k {params.k} --max-positions {params.positions} "
        "--steps {params.steps} > {log:q} 2>&1"
