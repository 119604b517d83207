"""What the jobs share and that is not itself a job: configuration, the command-line wrapper,
Spark/Ray/MLflow plumbing, the translator checkpoint and translation path, reports."""
