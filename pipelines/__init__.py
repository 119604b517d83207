"""PySpark preprocessing: raw corpora -> normalized tokens -> vocabularies -> id shards."""
