"""Analysis jobs: what happens to a stored video until it has a verdict."""
