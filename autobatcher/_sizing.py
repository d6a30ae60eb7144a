"""How large a request body will be once JSON-encoded, known before encoding it.

A request larger than a whole batch file must be refused, and refusing it *after* encoding
costs what the encoding costs: a 250 MB body blocked the event loop for ~1.1 s and peaked near
1 GB before it was turned away. :func:`encoded_size_at_least` walks the body instead, counting
what its encoding must at least hold, and stops the moment that passes the cap — a huge string
or list is sized by ``len()``, never copied, never encoded.

It is a lower bound, exact for plain ASCII text without escapes: every character of a string
takes at least one byte, every list element at least one byte plus its comma. Text that the
encoder escapes (non-ASCII characters become ``\\uXXXX``, control characters, quotes) can come
out up to six times longer; such a request is still refused, after it has been encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["encoded_size_at_least"]


def encoded_size_at_least(value: Any, limit: int) -> int:
    """A lower bound on ``len(json.dumps(value, separators=(",", ":")))``.

    The walk stops as soon as the bound exceeds ``limit`` (and then returns it), so a request
    that is too large costs time in proportion to the part walked before the cap was passed.
    Values the JSON hook converts later (dates, models, iterators) count for nothing here.
    """
    total = 0
    pending: list[Any] = [value]
    pop = pending.pop
    while pending:
        item = pop()
        cls = item.__class__
        if cls is str:
            total += len(item) + 2
        elif cls is list or cls is tuple:
            count = len(item)
            first = item[0] if count else None
            if first.__class__ is int or first.__class__ is float:
                # Numbers (token ids, vectors): one byte each at least, plus the commas. Not
                # visiting them keeps a 16M-token embedding request cheap to size.
                total += 1 + 2 * count
            else:
                total += 1 + count  # brackets and commas; each element adds its own size
                if total + count > limit:
                    return total + count
                pending.extend(item)
        elif cls is dict or isinstance(item, Mapping):
            # {"key":value,...}: braces, and per item two quotes, a colon and a comma (one less)
            total += 1 + 4 * len(item)
            for key in item:
                total += len(key) if key.__class__ is str else 1
            pending.extend(item.values())
        else:
            total += 1
            continue
        if total > limit:
            return total
    return total
