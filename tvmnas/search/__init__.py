"""The ProxylessNAS search: a binarized single-path supernet driven by measured latency."""
