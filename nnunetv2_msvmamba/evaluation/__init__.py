"""Echocardiography segmentation metrics (LV_endo, LV_epi, myocardium, LA) and model comparison reports.

Modules: `structures` (structures as label unions), `metrics` (Dice, HD95, MSD, size of one mask pair),
`label_folders` (reading nnU-Net label folders), `case_metadata` (cases.csv), `evaluate` (scoring folders),
`summary_statistics` (mean ± std, paired Wilcoxon), `report` and `plot` (the output files), `cli`
(`msvmamba_evaluate`).
"""
