TABLE_CATEGORY = {
    "gue": "GUE",
    "gue_summary": "GUE",
    "gue_by_task": "GUE",
    "fewshot": "Few-shot",
    "pretraining": "Pretraining",
    "ours_vs_published": "Published",
}
FIGURE_CATEGORY = {
    "fewshot_curves": "Few-shot",
    "gue_mcc": "GUE",
    "pretraining_curves": "Pretraining",
    "pmi_top20": "PMI",
    "pmi_distribution": "PMI",
    "masks": "Masking",
}
TABLE_CAPTION = {
    "gue": "table_gue",
    "gue_summary": "table_gue",
    "gue_by_task": "table_gue",
    "fewshot": "table_fewshot",
    "pretraining": "table_pretraining",
    "ours_vs_published": "table_published",
}


rule report:
    input:
        evaluation_outputs(),
    output:
        [
            report(
                f"results/report/tables/{t}.csv",
                caption=f"../report/{TABLE_CAPTION[t]}.rst",
                category=TABLE_CATEGORY[t],
                subcategory="Tables",
            )
            for t in REPORT_TABLES
        ],
        [
            report(
                f"results/report/figures/{f}.png",
                caption=f"../report/{f}.rst",
                category=FIGURE_CATEGORY[f],
                subcategory="Figures",
            )
            for f in REPORT_FIGURES
        ],
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/out/report.tsv"
    conda:
        "../../envs/torch.yaml"
    params:
        published=config["report"]["published"],
    shell:
        "python -m cmgems.cli report --results results --out results/report "
        "--published {params.published:q} > {log:q} 2>&1"
