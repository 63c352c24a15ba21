"""Data contract, ingestion and validation, synthetic stores, point-in-time features, labels and training sets."""
