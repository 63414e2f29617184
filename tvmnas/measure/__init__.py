"""Compile candidates with TVM for a target and measure them there (locally or over TVM RPC)."""
