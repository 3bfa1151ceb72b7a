"""Atomic writers for report files: a reader never sees a half-written table or figure.

Every writer goes through :mod:`fer.atomic`, so an interrupted report leaves the previous file
intact.
"""

from __future__ import annotations

import re
from pathlib import Path

from matplotlib.figure import Figure

from fer.atomic import atomic_path, atomic_write_text

# Fixed metadata: no creation date and no software version, so the same figure gives the same
# bytes on every run (PNG fully; PDF as far as matplotlib's writer allows).
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text with ``\\n`` line ends, atomically. Returns ``path``."""
    return atomic_write_text(path, text)


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
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=metadata)
        out.append(path)
    return out


def safe_name(name: str) -> str:
    """A cell or table name as a file name: anything but letters, digits and ``.-_=,`` becomes ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._=,-]+", "_", name).strip("._")
    return cleaned or "unnamed"


def redact_uri(uri: str) -> str:
    """Hide a password in a store URI (``postgresql://user:secret@host`` -> ``user:***@host``)."""
    return re.sub(r"(//[^:/@]+):[^@/]+@", r"\1:***@", uri)
