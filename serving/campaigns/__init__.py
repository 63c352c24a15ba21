"""Campaign audiences from batch scores, and their evaluation (treated vs control)."""
