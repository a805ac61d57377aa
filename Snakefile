# cmgems: reference genome -> k-mer corpus and PMI table -> pretrained BERTs (GeneMask, CM-GEMS, ...)
# -> GUE and few-shot evaluation -> report. Configuration: config/README.md.


if not config:  # a --configfile replaces the paper config rather than merging into it

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/config.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/genome.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/pmi.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/gue.smk"
include: "workflow/rules/fewshot.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/baseline.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        report_outputs(),
        all_run_outputs(),
