"""Data sets for the search: Fashion-MNIST IDX files and ImageFolder-style directories."""
