"""The per-process memory: entries expire, the oldest go first when full."""

from __future__ import annotations

from shared.kernel.memo import Memo


def test_entries_expire_and_are_bounded() -> None:
    now = [0.0]
    memo: Memo[str, int] = Memo(10, max_items=2, clock=lambda: now[0])
    memo.put("a", 1)
    memo.put("b", 2, ttl=1)
    assert memo.get("a") == 1 and memo.get("b") == 2
    now[0] = 5
    assert memo.get("b") is None and memo.get("a") == 1
    memo.put("c", 3)
    memo.put("d", 4)
    assert memo.get("a") is None and memo.get("d") == 4
    memo.put("e", 5, ttl=-1)
    assert memo.get("e") is None
    now[0] = 100
    assert memo.get("c") is None
