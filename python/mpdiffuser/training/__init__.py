"""Training: one loop shared by every model (training/loop.py), one loss per model (training/losses.py)."""
