"""Training recipes and the content-addressed model cache."""
