"""PyTorch models, losses and decoding (no Spark, Ray or MLflow here). The one thing taken from the
data side is its contract (``pipelines.contract``: special-token ids, the errors users see), which
imports neither Spark nor torch."""
