"""Command line and settings for member-ml (sits on top of features, loyalty, training and serving)."""
