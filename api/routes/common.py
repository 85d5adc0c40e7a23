"""What every route needs: the caller's client id, the process's StepContext, and cursor pages.

Pages are keyset pages on the resource's id, newest first. Ids are ULIDs, which sort by creation
time, so a row created while a client walks the pages has a larger id than any cursor handed out
and never shifts the pages after it: no duplicates, no gaps. The cursor is opaque to clients
(base64url of the last id on the page).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from api.auth import client_id_of
from api.errors import ApiError
from pipeline.errors import InvalidId
from pipeline.ids import check_id
from pipeline.steps import StepContext

ClientId = Annotated[str, Depends(client_id_of)]
Limit = Annotated[int, Query(ge=1, le=100, description="page size, 1-100")]
Cursor = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]
DEFAULT_LIMIT = 50
Row = TypeVar("Row")


def context_of(request: Request) -> StepContext:
    """The StepContext the app was built with (by default this process's `workers.runtime.context()`)."""
    provider: Callable[[], StepContext] = request.app.state.context
    return provider()


Context = Annotated[StepContext, Depends(context_of)]


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, kind: str) -> str:
    """The id a cursor stands for; 422 validation_error (field cursor) for anything else."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return check_id(kind, base64.urlsafe_b64decode(padded.encode("ascii")).decode("ascii"))
    except (InvalidId, binascii.Error, UnicodeError, ValueError):
        raise ApiError(422, "validation_error", "cursor is not a cursor this API returned", "cursor") from None


def page(session: Session, query: Select[tuple[Row]], id_column: InstrumentedAttribute[str], kind: str,
         limit: int, cursor: str | None, render: Callable[[Row], dict[str, Any]]) -> dict[str, Any]:
    """One page of `query` (already scoped to the client), newest first: {"data", "next_cursor"}."""
    if cursor is not None:
        query = query.where(id_column < decode_cursor(cursor, kind))
    rows: Sequence[Row] = session.scalars(query.order_by(id_column.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    shown = rows[:limit]
    last = getattr(shown[-1], id_column.key) if more and shown else None
    return {"data": [render(row) for row in shown], "next_cursor": encode_cursor(last) if last else None}


def owned(row: Any, client_id: str) -> Any:
    """`row` if it exists and is the client's; 404 otherwise (the same answer for both)."""
    if row is None or getattr(row, "client_id", None) != client_id:
        raise ApiError(404, "not_found", "no such resource")
    return row


def checked_id(kind: str, value: str) -> str:
    """A path id; a malformed one is 404 not_found, like a missing one."""
    try:
        return check_id(kind, value)
    except InvalidId:
        raise ApiError(404, "not_found", "no such resource") from None
