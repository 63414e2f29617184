"""PyTorch building blocks of the search space."""
