"""One file per strategy of the paper; each reports through a `RunLogger` and never imports MLflow."""
