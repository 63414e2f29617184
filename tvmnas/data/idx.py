"""Read IDX files (the MNIST / Fashion-MNIST format), gzipped or not."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from tvmnas.errors import TvmnasError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist installs it
_DTYPES = {0x08: np.uint8}


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file; a missing, truncated or malformed file raises a TvmnasError naming it."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise TvmnasError(f"missing data file {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise TvmnasError(f"corrupt data file {path}: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise TvmnasError(f"corrupt data file {path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TvmnasError(f"corrupt data file {path}: truncated header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise TvmnasError(f"corrupt data file {path}: expected {int(np.prod(shape))} values for shape {shape}, "
                          f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a (gzipped when the name ends in .gz) IDX file; used to make test data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)
