"""Echocardiography segmentation metrics (LV_endo, LV_epi, myocardium, LA) and model comparison reports."""
