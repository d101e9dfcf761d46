"""BoundedMemo: a dict that never grows past its limit, under either policy."""

from __future__ import annotations

from costwatch._core.memo import BoundedMemo


def test_remember_answers_past_the_limit_without_remembering_the_new_key() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    assert [memo.remember(k, v) for k, v in [("a", 1), ("b", 2), ("c", 3)]] == [1, 2, 3]
    assert memo == {"a": 1, "b": 2}  # the first ones seen stay


def test_keep_forgets_everything_when_full_and_keeps_the_new_key() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    for key, value in [("a", 1), ("b", 2), ("c", 3)]:
        assert memo.keep(key, value) == value
    assert memo == {"c": 3}  # the newest is the one worth keeping


def test_keep_replaces_a_known_key_in_a_full_memo_without_forgetting_the_others() -> None:
    memo: BoundedMemo[str, int] = BoundedMemo(2)
    memo.keep("a", 1)
    memo.keep("b", 2)
    memo.keep("a", 10)
    assert memo == {"a": 10, "b": 2}
