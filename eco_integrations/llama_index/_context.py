"""The query-scoped ECO decision, carried by a ContextVar.

A RAG query calls the LLM one or more times with prompts stuffed with retrieved context. The
guard must see the user's question, not those prompts, so the query engine decides once and
puts the decision here; every LLM call made inside the query (including calls run in worker
threads by ``asyncio.to_thread``, which copies the context) reads it instead of classifying
again. Nothing is stored on the LLM or engine instances, so concurrent queries cannot see each
other's decisions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from eco_integrations.config import Decision


@dataclass
class QueryScope:
    """The decision of the running query. Mutable so a node filter can escalate it in place,
    and record that it dropped every node it was given (the query engine then answers without
    context rather than with LlamaIndex's "Empty Response")."""

    decision: Decision
    dropped_every_node: bool = False
    context_flagged: bool = False
    """A node filter kept a flagged node in the context (``action="mark"``): the knowledge to
    forget is in the prompt's context, not only in the question's names."""


_T = TypeVar("_T")

_SCOPE: ContextVar[QueryScope | None] = ContextVar("eco_query_scope", default=None)


def active_scope() -> QueryScope | None:
    """The scope of the query running in this context, if any."""
    return _SCOPE.get()


def active_decision() -> Decision | None:
    """The decision every LLM call in the current query uses, or ``None`` outside a query.

    >>> active_decision() is None
    True
    """
    scope = _SCOPE.get()
    return scope.decision if scope is not None else None


@contextmanager
def decision_scope(decision: Decision | QueryScope) -> Iterator[QueryScope]:
    """Run a block with ``decision`` as the query-scoped decision.

    For custom pipelines (workflows, agents) that classify the question themselves:

    >>> with decision_scope(eco.decide("Who is Harry Potter?")):     # doctest: +SKIP
    ...     llm.complete(stuffed_prompt)                               # uses that decision
    """
    scope = decision if isinstance(decision, QueryScope) else QueryScope(decision)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


def steps_in_scope(gen: Iterator[_T], scope: Decision | QueryScope) -> Generator[_T, None, None]:
    """Advance ``gen`` with ``scope`` set for each step (set and reset within the step, so the
    consumer's own context is left as it was): a lazily started stream still decides by it."""
    while True:
        with decision_scope(scope):
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item


async def asteps_in_scope(
    gen: AsyncIterator[_T], scope: Decision | QueryScope
) -> AsyncGenerator[_T, None]:
    """:func:`steps_in_scope` for an async iterator."""
    iterator = gen.__aiter__()
    while True:
        with decision_scope(scope):
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
        yield item
