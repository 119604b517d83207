"""The data contract between stages, free of Spark and torch: special tokens, vocabulary files,
the manifest, the shard readers, atomic writes and the errors users see."""
