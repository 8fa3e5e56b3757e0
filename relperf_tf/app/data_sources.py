"""Where data comes from offline: Debian's Fashion-MNIST files, and a network probe.

Debian's `dataset-fashion-mnist` ships the upstream files with a rewritten
gzip header; `restore_upstream_gzip` gives back the byte-identical upstream
files, whose checksums TFDS knows, so Fashion-MNIST prepares without network.
"""

import os
import socket
import struct

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
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


def network_available(timeout=3.0):
    """Whether TFDS' download host answers (a TCP connection within `timeout` seconds)."""
    try:
        with socket.create_connection(_DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False
