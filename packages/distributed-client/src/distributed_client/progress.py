"""``progress(futures)``: a tqdm bar that fills as futures finish."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress"]


def progress(futures: Iterable, *, desc: str | None = None, **tqdm_kwargs: Any) -> None:
    """Show a progress bar until every future is done; returns the futures.

    Works with Futures of a blocking Executor; with an asynchronous one,
    ``await progress(futures)``. Extra keyword arguments go to ``tqdm``.
    """
    from tqdm.auto import tqdm

    from .executor import as_completed

    futures = list(futures)
    tqdm_kwargs.setdefault("unit", "task")
    if futures and futures[0].executor.asynchronous:

        async def run():
            with tqdm(total=len(futures), desc=desc, **tqdm_kwargs) as bar:
                async for _ in as_completed(futures):
                    bar.update(1)
            return futures

        return run()
    with tqdm(total=len(futures), desc=desc, **tqdm_kwargs) as bar:
        for _ in as_completed(futures):
            bar.update(1)
    return futures
