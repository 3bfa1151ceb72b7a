"""Speaker-independent cross-validation protocols over the 24 RAVDESS actors.

Folds are defined over actor ids 1..24 in blocks of four (block b = actors 4b+1..4b+4, two
male and two female, since odd actors are male). ``Protocol.folds(actors)`` keeps only the
actors present, without moving the blocks: on a small synthetic set with actors 1..6, fold 0
tests actors 1-4 and fold 1 tests 5-6, and folds whose block is absent have an empty test
set. Fold numbering is therefore the same on every dataset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ACTORS: tuple[int, ...] = tuple(range(1, 25))


class ProtocolError(ValueError):
    """An unknown protocol name; the message lists the known ones."""


@dataclass(frozen=True)
class Fold:
    """One fold: sorted actor ids of each split."""

    index: int
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


@dataclass(frozen=True)
class Protocol:
    """A named list of (test actors, validation actors); train is every other actor.

    ``warning`` is set when results under the protocol need a caveat; callers print and log it.
    """

    name: str
    description: str
    splits: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    warning: str | None = None

    def folds(self, actors: Iterable[int] = ACTORS) -> list[Fold]:
        """The folds restricted to the actors present.

        Args:
            actors: actor ids present in the data (1..24).

        Returns:
            One Fold per split, in protocol order, each split sorted.

        Raises:
            ValueError: an actor id outside 1..24.
        """
        present = set(actors)
        unknown = sorted(present - set(ACTORS))
        if unknown:
            raise ValueError(f"actor ids {unknown} are outside 1..24")
        folds = []
        for k, (test, val) in enumerate(self.splits):
            train = present - set(test) - set(val)
            folds.append(Fold(index=k, train=tuple(sorted(train)),
                              val=tuple(a for a in val if a in present),
                              test=tuple(a for a in test if a in present)))
        return folds


def _block(b: int) -> tuple[int, ...]:
    return tuple(range(4 * b + 1, 4 * b + 5))


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="ravdess-6fold",
            description="test block k (actors 4k+1..4k+4), validation block k+1 mod 6, "
                        "train the other 16 actors",
            splits=tuple((_block(k), _block((k + 1) % 6)) for k in range(6)),
        ),
        Protocol(
            name="hicmae-6fold",
            description="test block k, no validation actors, train the other 20 (HiCMAE, "
                        "Sun et al. 2024)",
            splits=tuple((_block(k), ()) for k in range(6)),
            warning="hicmae-6fold has no validation actors: selecting epochs or settings on it "
                    "selects on the test fold, so its scores are optimistic; use it for "
                    "comparison with published numbers only",
        ),
        Protocol(
            name="mer-5fold",
            description="(test, val) = (1-4, 5-8), (5-8, 9-12), (9-12, 13-16), (13-16, 17-20), "
                        "(17-20, 21-24) (Chumachenko et al. 2022)",
            splits=tuple((_block(k), _block(k + 1)) for k in range(5)),
            warning="mer-5fold never tests actors 21-24 (they are only trained or validated on): "
                    "its scores cover actors 1-20 only",
        ),
    )
}
DEFAULT_PROTOCOL = "ravdess-6fold"


def get_protocol(name: str) -> Protocol:
    """Look a protocol up by name.

    Raises:
        ProtocolError: unknown name, listing the known ones.
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ProtocolError(f"unknown protocol {name!r}; known: {', '.join(sorted(PROTOCOLS))}") from None
