"""Text rules in plain Python: normalization and tokenization (the twin of the Spark rendering),
and detokenization of model output."""
