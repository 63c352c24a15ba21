"""Trainers (one per model), evaluation and baselines, MLflow tracking and registry promotion (DESIGN §5)."""
