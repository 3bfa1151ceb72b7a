"""Atomic writers for report files: a reader never sees a half-written table or figure.

Every writer renders into a temporary file in the target folder, then ``os.replace``-s it
over the final name, so an interrupted report leaves the previous file intact.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from matplotlib.figure import Figure

# Fixed metadata: no creation date and no software version, so the same figure gives the same
# bytes on every run (PNG fully; PDF as far as matplotlib's writer allows).
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text with ``\\n`` line ends, atomically. Returns ``path``."""
    return _atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8", newline="\n"))


def save_figure(fig: Figure, stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.png`` and ``stem.pdf`` (atomically, fixed metadata).

    Args:
        fig: a matplotlib figure (built without pyplot, so no global state is touched).
        stem: output path without suffix.
        formats: file formats, each also the suffix.

    Returns:
        The written paths, in ``formats`` order.
    """
    stem = Path(stem)
    out = []
    for fmt in formats:
        metadata = {"png": PNG_METADATA, "pdf": PDF_METADATA}.get(fmt)
        path = stem.with_name(f"{stem.name}.{fmt}")
        out.append(_atomic(path, lambda tmp, fmt=fmt, metadata=metadata: fig.savefig(
            tmp, format=fmt, dpi=150, metadata=metadata)))
    return out


def safe_name(name: str) -> str:
    """A cell or table name as a file name: anything but letters, digits and ``.-_=,`` becomes ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,-]+", "_", name).strip("._")
    return cleaned or "unnamed"


def redact_uri(uri: str) -> str:
    """Hide a password in a store URI (``postgresql://user:secret@host`` -> ``user:***@host``)."""
    return re.sub(r"(//[^:/@]+):[^@/]+@", r"\1:***@", uri)
