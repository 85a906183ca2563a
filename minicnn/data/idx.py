"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a small header followed by the values in C order, all big-endian::

    magic   4 bytes   0x00 0x00 <dtype code> <ndim>
    dims    ndim × int32 (big-endian), e.g. 60000, 28, 28
    data    prod(dims) values of the dtype

    read_idx("train-images-idx3-ubyte.gz")   # -> uint8 array, shape (60000, 28, 28)

gzip is recognised by the file's first two bytes, not by its name, so a ``.gz`` that was
already decompressed (some browsers do that) still reads.
"""
import gzip
import os
import zlib

import numpy as np

from ..core.errors import DataError
from ..core.files import atomic_write


#: IDX type code -> NumPy dtype as stored on disk (big-endian).
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path):
    """The decompressed bytes of an IDX file (gzip or raw). Raises DataError for corrupt gzip."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt gzip data ({type(e).__name__}: {e}); "
                        f"delete the file and fetch it again") from None


def decode_idx(data, path="<bytes>"):
    """Parse decompressed IDX bytes into an array in native byte order (a writable copy).

    ``path`` is only used in error messages.
    """
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header (4-byte magic number)")
    code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or code not in IDX_DTYPES:
        codes = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: not an IDX file: magic number 0x{data[:4].hex().upper()}, expected "
                        f"0x0000<dtype><ndim> with dtype one of {codes}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated: the magic number announces {ndim} dimensions "
                        f"({header} header bytes) but the file has only {len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, ">i4", count=ndim, offset=4))
    if any(d < 0 for d in shape):
        raise DataError(f"{path}: negative dimension in IDX header: shape {shape}")
    dtype = IDX_DTYPES[code]
    count = 1
    for d in shape:
        count *= d
    expected = count * dtype.itemsize
    have = len(data) - header
    if have < expected:
        raise DataError(f"{path}: truncated: header says shape {shape} of {dtype.name}, i.e. "
                        f"{count}·{dtype.itemsize} = {expected} data bytes, but the file has {have}")
    if have > expected:
        raise DataError(f"{path}: {have - expected} bytes of trailing data after the {shape} "
                        f"{dtype.name} array the header describes ({expected} data bytes)")
    arr = np.frombuffer(data, dtype, count=count, offset=header).reshape(shape)
    # frombuffer gives a read-only view of the bytes; astype copies into native byte order.
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path):
    """Read an IDX file (gzip-compressed or raw) into a NumPy array.

    Returns an array of the file's shape, e.g. (60000, 28, 28) uint8 for MNIST images or
    (60000,) uint8 for labels, in native byte order. Raises DataError naming the file for a
    wrong magic number, a truncated file, trailing bytes, or corrupt gzip data.
    """
    return decode_idx(read_bytes(path), os.fspath(path))


def encode_idx(array):
    """The IDX bytes (uncompressed) of ``array``: uint8, int8, int16, int32, float32 or float64."""
    a = np.asarray(array)
    code = _CODES.get((a.dtype.kind, a.dtype.itemsize)) if a.dtype.kind in "uif" else None
    if code is None:
        raise DataError(f"IDX cannot store dtype {a.dtype}: it has uint8, int8, int16, int32, "
                        f"float32, float64 (cast first, e.g. labels.astype(np.uint8))")
    if a.ndim > 255 or any(d > 2**31 - 1 for d in a.shape):
        raise DataError(f"IDX cannot store shape {a.shape}: at most 255 dimensions of < 2^31")
    header = bytes([0, 0, code, a.ndim]) + np.asarray(a.shape, ">i4").tobytes()
    return header + np.ascontiguousarray(a, IDX_DTYPES[code]).tobytes()


def write_idx(path, array):
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``.

    The write is atomic: the bytes go to a temporary file in the same folder, which is
    renamed over ``path`` only once complete, so a crash never leaves half a file.
    Returns ``path``.
    """
    path = os.fspath(path)
    data = encode_idx(array)
    if path.endswith(".gz"):
        data = gzip.compress(data, mtime=0)  # mtime=0: same array, same bytes
    return atomic_write(path, lambda f: f.write(data))
