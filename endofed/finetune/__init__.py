"""Supervised fine-tuning of the endometriosis classifier, its evaluation and metrics (AUC, CIs, calibration)."""
