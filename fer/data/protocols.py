"""Speaker-independent cross-validation protocols: actors in blocks, one block tested per fold.

The RAVDESS protocols (``PROTOCOLS``) are fixed: folds are defined over actor ids 1..24 in
blocks of four (block b = actors 4b+1..4b+4, two male and two female, since odd actors are
male). ``Protocol.folds(actors)`` keeps only the actors present, without moving the blocks: on
a small synthetic set with actors 1..6, fold 0 tests actors 1-4 and fold 1 tests 5-6, and folds
whose block is absent have an empty test set. Fold numbering is therefore the same on every
dataset.

A protocol whose blocks depend on the data (CREMA-D's, dealt by sex from the demographics
file) is built by its dataset with :func:`rotating` over :func:`round_robin` blocks; it names
its own actor ids (``Protocol.actors``) instead of 1..24.
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
    ``actors`` are the ids the protocol knows (RAVDESS: 1..24); ``actors_from`` names the file
    they were read from, for errors, when the protocol was built from the data.
    """

    name: str
    description: str
    splits: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    warning: str | None = None
    actors: tuple[int, ...] = ACTORS
    actors_from: str | None = None

    def folds(self, actors: Iterable[int] | None = None) -> list[Fold]:
        """The folds restricted to the actors present.

        Args:
            actors: actor ids present in the data; None for all of ``self.actors``.

        Returns:
            One Fold per split, in protocol order, each split sorted.

        Raises:
            ValueError: an actor id the protocol does not know.
        """
        present = set(self.actors if actors is None else actors)
        unknown = sorted(present - set(self.actors))
        if unknown:
            if self.actors == ACTORS:
                raise ValueError(f"actor ids {unknown} are outside 1..24")
            raise ValueError(f"actor ids {unknown} are not among the {len(self.actors)} actors of "
                             f"protocol {self.name} (from {self.actors_from or 'its definition'})")
        folds = []
        for k, (test, val) in enumerate(self.splits):
            train = present - set(test) - set(val)
            folds.append(Fold(index=k, train=tuple(sorted(train)),
                              val=tuple(a for a in val if a in present),
                              test=tuple(a for a in test if a in present)))
        return folds


def _block(b: int) -> tuple[int, ...]:
    return tuple(range(4 * b + 1, 4 * b + 5))


def round_robin(ordered: Iterable[int], n_blocks: int) -> tuple[tuple[int, ...], ...]:
    """Deal actors in the given order to blocks 0, 1, ..., n_blocks - 1, 0, 1, ...

    Returns:
        ``n_blocks`` blocks, each sorted.
    """
    blocks: list[list[int]] = [[] for _ in range(n_blocks)]
    for i, actor in enumerate(ordered):
        blocks[i % n_blocks].append(actor)
    return tuple(tuple(sorted(b)) for b in blocks)


def rotating(name: str, description: str, blocks: tuple[tuple[int, ...], ...],
             actors_from: str | None = None) -> Protocol:
    """Fold k tests block k, validates on block k + 1 (mod the block count), trains on the rest.

    Args:
        name, description: the protocol's.
        blocks: actor ids per block; together they are the protocol's actors.
        actors_from: the file the blocks were dealt from, named in errors.
    """
    n = len(blocks)
    return Protocol(name=name, description=description,
                    splits=tuple((blocks[k], blocks[(k + 1) % n]) for k in range(n)),
                    actors=tuple(sorted(a for b in blocks for a in b)), actors_from=actors_from)


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
