"""Versions that key stored results (latency rows, bundles)."""


def tvm_version() -> str:
    import tvm

    return tvm.__version__
