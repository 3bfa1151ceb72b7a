"""Speaker-independent protocols: the splits the issue names, written out here by hand."""

from __future__ import annotations

from collections import Counter

import pytest

from fer.data.protocols import PROTOCOLS, Fold, ProtocolError, get_protocol

ALL = set(range(1, 25))
B = {k: tuple(range(4 * k + 1, 4 * k + 5)) for k in range(6)}  # block k = actors 4k+1..4k+4

# (test, val) per fold, as issue 2 states them.
EXPECTED = {
    "ravdess-6fold": [((1, 2, 3, 4), (5, 6, 7, 8)), ((5, 6, 7, 8), (9, 10, 11, 12)),
                      ((9, 10, 11, 12), (13, 14, 15, 16)), ((13, 14, 15, 16), (17, 18, 19, 20)),
                      ((17, 18, 19, 20), (21, 22, 23, 24)), ((21, 22, 23, 24), (1, 2, 3, 4))],
    "hicmae-6fold": [(B[k], ()) for k in range(6)],
    "mer-5fold": [((1, 2, 3, 4), (5, 6, 7, 8)), ((5, 6, 7, 8), (9, 10, 11, 12)),
                  ((9, 10, 11, 12), (13, 14, 15, 16)), ((13, 14, 15, 16), (17, 18, 19, 20)),
                  ((17, 18, 19, 20), (21, 22, 23, 24))],
}


def test_every_protocol_is_tested_here():
    assert set(PROTOCOLS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_splits_match_the_issue_and_train_is_the_rest(name):
    folds = get_protocol(name).folds()
    assert [(f.test, f.val) for f in folds] == EXPECTED[name]
    for k, f in enumerate(folds):
        assert f.index == k
        assert f.train == tuple(sorted(ALL - set(f.test) - set(f.val)))


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_no_actor_in_two_splits_of_a_fold(name):
    for f in get_protocol(name).folds():
        splits = [set(f.train), set(f.val), set(f.test)]
        assert sum(len(s) for s in splits) == len(set().union(*splits)) == 24
        assert all(list(s) == sorted(s) for s in (f.train, f.val, f.test))


def test_ravdess_6fold_tests_every_actor_once_with_balanced_blocks():
    folds = get_protocol("ravdess-6fold").folds()
    assert Counter(a for f in folds for a in f.test) == {a: 1 for a in ALL}
    for f in folds:
        assert len(f.train) == 16
        for block in (f.test, f.val):
            assert sum(a % 2 == 1 for a in block) == 2  # odd actors are male
            assert sum(a % 2 == 0 for a in block) == 2
    assert get_protocol("ravdess-6fold").warning is None


def test_hicmae_has_no_validation_and_says_selection_is_on_test():
    p = get_protocol("hicmae-6fold")
    assert all(f.val == () and len(f.train) == 20 for f in p.folds())
    assert "test fold" in p.warning and "optimistic" in p.warning and "published" in p.warning


def test_mer_never_tests_actors_21_to_24_and_says_so():
    p = get_protocol("mer-5fold")
    tested = {a for f in p.folds() for a in f.test}
    assert tested == ALL - {21, 22, 23, 24}
    assert "never tests actors 21-24" in p.warning


def test_fewer_actors_keep_the_blocks_and_drop_the_absent():
    folds = get_protocol("ravdess-6fold").folds([2, 1, 6, 9])
    assert folds[0] == Fold(index=0, train=(9,), val=(6,), test=(1, 2))
    assert folds[1] == Fold(index=1, train=(1, 2), val=(9,), test=(6,))
    assert folds[3] == Fold(index=3, train=(1, 2, 6, 9), val=(), test=())
    assert folds[5] == Fold(index=5, train=(6, 9), val=(1, 2), test=())


def test_out_of_range_actor_is_rejected():
    with pytest.raises(ValueError, match=r"\[0, 25\]"):
        get_protocol("ravdess-6fold").folds([0, 1, 25])


def test_unknown_protocol_lists_known_names():
    with pytest.raises(ProtocolError) as err:
        get_protocol("ravdess-5fold")
    assert "ravdess-5fold" in str(err.value)
    assert all(n in str(err.value) for n in EXPECTED)
