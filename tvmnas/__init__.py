"""tvmnas: hardware-aware neural architecture search with latencies measured by Apache TVM."""

__version__ = "0.1.0"
