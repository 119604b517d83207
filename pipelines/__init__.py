"""The data side: ``contract`` (what every stage agrees on), ``text`` (normalization rules in plain
Python), ``spark`` (the PySpark preprocessing stages). Only ``spark`` imports Spark; nothing here
imports torch."""
