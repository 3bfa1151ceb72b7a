"""The dataset interface: what the data layer asks of a corpus, and the registry of corpora.

A dataset (``data.dataset``) says which clips a folder holds (from file names alone), their
label set (``fer.labels.emotions``), the cross-validation protocols it supports and which one is
its default, each actor's sex, and, where the corpus has them, the human raters' votes per clip
(``fer.data.cremad.human_reference`` turns them into UAR and WAR over a set of clips). RAVDESS
(``fer.data.ravdess``) and CREMA-D (``fer.data.cremad``) implement it.

Clips of either dataset carry the fields the training code reads: ``clip_id``, ``emotion`` (index
into the dataset's label set), ``actor``, ``video_path`` (frames), ``audio_path`` and
``audio_from_video``.

Protocol names: None means the dataset's default. ``data.protocol``'s config default,
``ravdess-6fold``, also stands for the dataset's default on a dataset that does not support it,
so ``--set data.dataset=crema-d`` alone runs ``crema-d-5fold``; any other protocol of another
dataset is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol as TypingProtocol

from fer.data import cremad, ravdess
from fer.data.protocols import DEFAULT_PROTOCOL, PROTOCOLS, Protocol, ProtocolError, get_protocol
from fer.labels import emotions


@dataclass(frozen=True)
class Index:
    """Clips sorted by clip_id, and every (file, reason) the scan could not take as is."""

    clips: list
    problems: list[tuple[Path, str]]


class Dataset(TypingProtocol):
    """What the data layer needs of a corpus."""

    name: str
    default_protocol: str
    protocols: tuple[str, ...]

    @property
    def emotions(self) -> tuple[str, ...]:
        """The label set, in output-index order."""

    def scan(self, root: str | Path, vocal_channel: str = "speech") -> Index:
        """The clips under root from file names, and the files that were skipped and why."""

    def index(self, root: str | Path, data_cfg) -> list:
        """``scan`` with ``data_cfg.vocal_channel``, each problem emitted as a warning."""

    def sexes(self, root: str | Path) -> dict[int, str]:
        """actor id -> "male" / "female"."""

    def protocol(self, name: str | None, root: str | Path | None) -> Protocol:
        """The named protocol (None: the default); ``root`` for one built from the data."""

    def fold_count(self, name: str | None) -> int:
        """Folds of the named protocol, without reading any data."""

    def human_votes(self, root: str | Path) -> Mapping[str, cremad.HumanVotes] | None:
        """The raters' votes by clip id, for ``cremad.human_reference``; None where there are none."""


def _resolve(dataset: Dataset, name: str | None) -> str:
    """A protocol name of this dataset (see the module docstring), else ProtocolError."""
    if name is None or (name == DEFAULT_PROTOCOL and name not in dataset.protocols):
        return dataset.default_protocol
    if name not in dataset.protocols:
        raise ProtocolError(f"protocol {name!r} is not a {dataset.name} protocol; known: "
                            f"{', '.join(dataset.protocols)}")
    return name


class Ravdess:
    """RAVDESS: 24 actors, odd ids male; fixed protocols over ids 1..24."""

    name = "ravdess"
    default_protocol = DEFAULT_PROTOCOL
    protocols = tuple(sorted(PROTOCOLS))

    @property
    def emotions(self) -> tuple[str, ...]:
        return emotions(self.name)

    def scan(self, root, vocal_channel="speech") -> Index:
        found = ravdess.scan_dataset(root, vocal_channel)
        return Index(found.clips, found.problems)

    def index(self, root, data_cfg) -> list:
        return ravdess.index_clips(root, data_cfg.vocal_channel)

    def sexes(self, root=None) -> dict[int, str]:
        return {a: "male" if a % 2 else "female" for a in range(1, 25)}

    def protocol(self, name, root=None) -> Protocol:
        return get_protocol(_resolve(self, name))

    def fold_count(self, name) -> int:
        return len(self.protocol(name).splits)

    def human_votes(self, root) -> None:
        return None


class CremaD:
    """CREMA-D: 91 actors, sex from ``VideoDemographics.csv``; human votes in the summary table."""

    name = "crema-d"
    default_protocol = cremad.PROTOCOL
    protocols = (cremad.PROTOCOL,)

    @property
    def emotions(self) -> tuple[str, ...]:
        return emotions(self.name)

    def scan(self, root, vocal_channel="speech") -> Index:
        found = cremad.scan_dataset(root, vocal_channel)
        return Index(found.clips, found.problems)

    def index(self, root, data_cfg) -> list:
        return cremad.index_clips(root, data_cfg.vocal_channel)

    def sexes(self, root) -> dict[int, str]:
        return cremad.read_demographics(root)

    def protocol(self, name, root) -> Protocol:
        """``crema-d-5fold`` dealt from ``<root>/VideoDemographics.csv``.

        Raises:
            ProtocolError: another protocol.
            CremaDFileError: the demographics file is missing or malformed (named).
        """
        _resolve(self, name)
        if root is None:
            raise ValueError(f"{cremad.PROTOCOL} is built from {cremad.DEMOGRAPHICS} under the data root; "
                             "no data root given")
        return cremad.make_protocol(self.sexes(root), Path(root) / cremad.DEMOGRAPHICS)

    def fold_count(self, name) -> int:
        _resolve(self, name)
        return cremad.N_BLOCKS

    def human_votes(self, root) -> dict[str, cremad.HumanVotes] | None:
        """``processedResults/summaryTable.csv`` read (None when absent).

        Raises:
            CremaDFileError: a malformed table (file and line named).
        """
        table = Path(root) / cremad.SUMMARY_TABLE
        return cremad.read_summary_table(table) if table.is_file() else None


DATASETS: dict[str, Dataset] = {d.name: d for d in (Ravdess(), CremaD())}


def get_dataset(name: str) -> Dataset:
    """Look a dataset up by name (``data.dataset``).

    Raises:
        KeyError: unknown name, listing the known ones.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def resolve_protocol(dataset: str, name: str | None) -> str:
    """The protocol a run of ``dataset`` uses when asked for ``name`` (see the module docstring).

    Raises:
        ProtocolError: a protocol the dataset does not support, listing those it does.
    """
    return _resolve(get_dataset(dataset), name)

