"""Pretraining: making a backbone (a small ViLT from captioned pairs) and measuring it (probe, card)."""
