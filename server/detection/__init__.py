"""Detection: the Triton client, the model contract and score aggregation."""
