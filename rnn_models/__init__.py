"""PyTorch models, losses and decoding (no Spark, Ray or MLflow here)."""
