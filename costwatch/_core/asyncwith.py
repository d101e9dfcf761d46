"""Context managers whose block never awaits, taken by ``async with`` as by ``with``."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

T = TypeVar("T")


class AsyncToo(Generic[T]):
    """``__aenter__``/``__aexit__`` that run the subclass's ``__enter__``/``__exit__``."""

    __slots__ = ()

    def __enter__(self) -> T:
        raise NotImplementedError

    def __exit__(self, exc_type: object, exc: object, tb: object, /) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> T:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)
