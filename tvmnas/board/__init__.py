"""Emulated boards: an arm64 Debian root filesystem with the TVM runtime (`rootfs.py`), and a farm of RPC servers
running in it under a tracker (`farm.py`). Real boards need none of this: they run `tvm.exec.rpc_server` with
`--tracker` and `--key`, and tvmnas reaches them through the same tracker path."""
