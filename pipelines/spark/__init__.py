"""The PySpark preprocessing stages: read, normalize, filter, split, count, encode, write."""
