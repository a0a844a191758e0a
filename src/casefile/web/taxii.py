"""The TAXII 2.1 API (OASIS taxii-v2.1, sections 4-5) over `TaxiiState`, as a FastAPI app.

Handlers parse the request, call one state method and render; every error is the spec's error
resource with the TAXII media type. Every endpoint needs an account (HTTP Bearer token, or HTTP
Basic with the user name and token as password): 401 without one, 403 without the right.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from casefile.errors import CasefileError
from casefile.web.state import (
    Account,
    Collection,
    ObjectFilter,
    StoredObject,
    TaxiiState,
    timestamp_key,
    utf8_json,
)

log = logging.getLogger(__name__)

TAXII_MEDIA = "application/taxii+json;version=2.1"
STIX_MEDIA = "application/stix+json;version=2.1"
#: Largest POST body accepted (announced as the API root's max_content_length).
MAX_CONTENT_LENGTH = 10 * 1024 * 1024
#: Most objects one page returns, whatever `limit` asks.
MAX_PAGE = 1000
DEFAULT_PAGE = 100
#: Most values one match[...] filter takes (each is a bound SQL parameter).
MAX_MATCH_VALUES = 1000
API_ROOT = "api"


class TaxiiError(Exception):
    """A TAXII error resource to send (status, title, description)."""

    def __init__(self, status: int, title: str, description: str | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.description = description


class TaxiiResponse(JSONResponse):
    media_type = TAXII_MEDIA

    def render(self, content: Any) -> bytes:
        return utf8_json(content, separators=(",", ":"))  # a client's lone surrogate (an id in a status)


def _error(status: int, title: str, description: str | None = None) -> TaxiiResponse:
    body: dict[str, Any] = {"title": title, "http_status": str(status)}
    if description:
        body["description"] = description
    headers = (
        {"WWW-Authenticate": 'Bearer realm="casefile", Basic realm="casefile"'} if status == 401 else None
    )
    return TaxiiResponse(body, status_code=status, headers=headers)


def _accepts_taxii(accept: str | None) -> bool:
    if not accept:
        return True
    for part in accept.split(","):
        media = part.split(";q=")[0].replace(" ", "").lower()
        if media in ("application/taxii+json;version=2.1", "application/taxii+json"):
            return True
    return False


# -- request parsing ------------------------------------------------------------------------------
def _csv_param(request: Request, name: str) -> tuple[str, ...]:
    values: list[str] = []
    for raw in request.query_params.getlist(name):
        values.extend(v.strip() for v in raw.split(",") if v.strip())
    if len(values) > MAX_MATCH_VALUES:
        raise TaxiiError(400, "Too many filter values", f"{name} takes at most {MAX_MATCH_VALUES} values")
    return tuple(values)


def _filter(request: Request, *, allow: Sequence[str]) -> ObjectFilter:
    known = {"added_after", "limit", "next", *(f"match[{k}]" for k in allow)}
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise TaxiiError(400, "Unsupported query parameter", f"not supported here: {', '.join(unknown)}")
    added_after = request.query_params.get("added_after")
    versions = _csv_param(request, "match[version]") or ("last",)
    try:
        added_key = timestamp_key(added_after) if added_after else None
        version_keys = tuple(v if v in ("first", "last", "all") else timestamp_key(v) for v in versions)
    except ValueError:
        raise TaxiiError(
            400,
            "Invalid timestamp",
            "added_after and match[version] take RFC 3339 timestamps "
            "(or first, last, all for match[version])",
        ) from None
    return ObjectFilter(
        added_after=added_key,
        ids=_csv_param(request, "match[id]"),
        types=_csv_param(request, "match[type]"),
        versions=version_keys,
        spec_versions=_csv_param(request, "match[spec_version]"),
    )


def _paging(request: Request) -> tuple[int, int]:
    """(limit, seq after which to continue) from `limit` and the opaque `next` cursor."""
    raw_limit = request.query_params.get("limit")
    try:
        limit = int(raw_limit) if raw_limit is not None else DEFAULT_PAGE
    except ValueError:
        raise TaxiiError(400, "Invalid limit", "limit must be a positive integer") from None
    if limit < 1:
        raise TaxiiError(400, "Invalid limit", "limit must be a positive integer")
    cursor = request.query_params.get("next")
    after = 0
    if cursor:
        try:
            after = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode().removeprefix("seq:"))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TaxiiError(400, "Invalid next", "next must be a value returned by this server") from None
    return min(limit, MAX_PAGE), after


def _cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _date_headers(page: Sequence[StoredObject]) -> dict[str, str]:
    if not page:
        return {}
    return {"X-TAXII-Date-Added-First": page[0].date_added, "X-TAXII-Date-Added-Last": page[-1].date_added}


def _envelope(page: Sequence[StoredObject], more: bool) -> Response:
    """The objects envelope, splicing the stored JSON texts in as they are: parsing and
    re-serialising every object of every page was most of a GET's time."""
    head = json.dumps(_page_body(page, more), separators=(",", ":"))[:-1]
    parts = [head, ',"objects":[', ",".join(o.json for o in page), "]}"]
    return Response("".join(parts).encode("utf-8"), media_type=TAXII_MEDIA, headers=_date_headers(page))


def _page_body(page: Sequence[StoredObject], more: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"more": more}
    if more and page:
        body["next"] = _cursor(page[-1].seq)
    return body


# -- the app ---------------------------------------------------------------------------------------
def create_app(data_dir: str | Path, *, title: str = "casefile TAXII server") -> FastAPI:
    """The TAXII 2.1 server app over the state in `data_dir`."""
    state = TaxiiState(data_dir)
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.taxii = state

    @app.exception_handler(TaxiiError)
    async def _taxii_error(request: Request, exc: TaxiiError) -> Response:
        return _error(exc.status, exc.title, exc.description)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, "Not found" if exc.status_code == 404 else str(exc.detail))

    @app.exception_handler(CasefileError)
    async def _state_error(request: Request, exc: CasefileError) -> Response:
        log.error("TAXII %s %s failed: %s", request.method, request.url.path, exc)
        return _error(500, "Server error", "the server could not complete the request; see its log")

    @app.exception_handler(sqlite3.Error)
    async def _db_error(request: Request, exc: sqlite3.Error) -> Response:
        log.error("TAXII %s %s: database error: %s", request.method, request.url.path, exc)
        return _error(503, "Service unavailable", "the server's store is busy or failing; retry later")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error(400, "Invalid request", str(exc.errors())[:500])

    @app.middleware("http")
    async def _negotiate(request: Request, call_next: Any) -> Response:
        if not _accepts_taxii(request.headers.get("accept")):
            return _error(406, "Not acceptable", f"this server answers {TAXII_MEDIA}")
        response: Response = await call_next(request)
        return response

    def account(request: Request) -> Account:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        found: Account | None = None
        if scheme.lower() == "bearer" and credentials:
            found = state.authenticate(credentials.strip())
        elif scheme.lower() == "basic" and credentials:
            try:
                user, _, password = (
                    base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
                )
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if user and password:
                found = state.authenticate(password, name=user)
        if found is None:
            raise TaxiiError(
                401, "Unauthorized", "send a Bearer token, or HTTP Basic with user name and token"
            )
        return found

    def collection(request: Request, cid: str, *, write: bool = False, read: bool = False) -> Collection:
        who = account(request)
        col = state.collection(cid, who)
        if col is None:
            raise TaxiiError(404, "Collection not found", f"no collection {cid}")
        if (
            (read and not col.can_read)
            or (write and not col.can_write)
            or not (col.can_read or col.can_write)
        ):
            need = "write" if write else "read"
            raise TaxiiError(403, "Forbidden", f"{who.name} may not {need} collection {cid}")
        return col

    @app.get("/taxii2/")
    def discovery(request: Request) -> Response:
        account(request)
        root = str(request.base_url) + f"{API_ROOT}/"
        return TaxiiResponse(
            {
                "title": title,
                "description": "TAXII 2.1 server of casefile",
                "default": root,
                "api_roots": [root],
            }
        )

    @app.get(f"/{API_ROOT}/")
    def api_root(request: Request) -> Response:
        account(request)
        return TaxiiResponse(
            {
                "title": "casefile",
                "versions": [TAXII_MEDIA],
                "max_content_length": MAX_CONTENT_LENGTH,
            }
        )

    @app.get(f"/{API_ROOT}/status/{{status_id}}/")
    def status(request: Request, status_id: str) -> Response:
        body = state.status(status_id, account(request))
        if body is None:
            raise TaxiiError(404, "Status not found", f"no status {status_id} for this account")
        return TaxiiResponse(body)

    @app.get(f"/{API_ROOT}/collections/")
    def collections(request: Request) -> Response:
        cols = state.collections(account(request))
        return TaxiiResponse({"collections": [c.resource() for c in cols]} if cols else {})

    @app.get(f"/{API_ROOT}/collections/{{cid}}/")
    def get_collection(request: Request, cid: str) -> Response:
        return TaxiiResponse(collection(request, cid).resource())

    @app.get(f"/{API_ROOT}/collections/{{cid}}/manifest/")
    def manifest(request: Request, cid: str) -> Response:
        collection(request, cid, read=True)
        flt = _filter(request, allow=("id", "type", "version", "spec_version"))
        limit, after = _paging(request)
        page, more = state.query(cid, flt, after_seq=after, limit=limit)
        body = _page_body(page, more)
        body["objects"] = [
            {"id": o.id, "date_added": o.date_added, "version": o.version, "media_type": STIX_MEDIA}
            for o in page
        ]
        return TaxiiResponse(body, headers=_date_headers(page))

    @app.get(f"/{API_ROOT}/collections/{{cid}}/objects/")
    def get_objects(request: Request, cid: str) -> Response:
        collection(request, cid, read=True)
        flt = _filter(request, allow=("id", "type", "version", "spec_version"))
        limit, after = _paging(request)
        page, more = state.query(cid, flt, after_seq=after, limit=limit)
        return _envelope(page, more)

    @app.post(f"/{API_ROOT}/collections/{{cid}}/objects/")
    async def add_objects(request: Request, cid: str) -> Response:
        col = collection(request, cid, write=True)
        media = request.headers.get("content-type", "").replace(" ", "").lower()
        if media not in (TAXII_MEDIA, STIX_MEDIA):
            raise TaxiiError(415, "Unsupported media type", f"POST an envelope as {TAXII_MEDIA}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_CONTENT_LENGTH:
            raise TaxiiError(413, "Request too large", f"at most {MAX_CONTENT_LENGTH} bytes")
        raw = bytearray()
        async for chunk in request.stream():
            raw.extend(chunk)
            if len(raw) > MAX_CONTENT_LENGTH:
                raise TaxiiError(413, "Request too large", f"at most {MAX_CONTENT_LENGTH} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting bombs
            raise TaxiiError(400, "Invalid JSON", str(exc)[:200]) from None
        if not isinstance(body, dict) or not isinstance(body.get("objects"), list):
            raise TaxiiError(400, "Invalid envelope", "send an envelope or bundle with an 'objects' list")
        status_body = state.add_objects(col.id, account(request), body["objects"])
        return TaxiiResponse(status_body, status_code=202)

    @app.get(f"/{API_ROOT}/collections/{{cid}}/objects/{{object_id}}/")
    def get_object(request: Request, cid: str, object_id: str) -> Response:
        collection(request, cid, read=True)
        flt = _filter(request, allow=("version", "spec_version"))
        limit, after = _paging(request)
        page, more = state.query(cid, flt, after_seq=after, limit=limit, object_id=object_id)
        if not page and after == 0:
            raise TaxiiError(404, "Object not found", f"no {object_id} in collection {cid} matches")
        return _envelope(page, more)

    @app.delete(f"/{API_ROOT}/collections/{{cid}}/objects/{{object_id}}/")
    def delete_object(request: Request, cid: str, object_id: str) -> Response:
        collection(request, cid, read=True, write=True)
        flt = _filter(request, allow=("version", "spec_version"))
        if "match[version]" not in request.query_params:
            flt = ObjectFilter(versions=("all",), spec_versions=flt.spec_versions)
        if state.delete_object(cid, object_id, flt) == 0:
            raise TaxiiError(404, "Object not found", f"no {object_id} in collection {cid} matches")
        return Response(status_code=200, media_type=TAXII_MEDIA)

    @app.get(f"/{API_ROOT}/collections/{{cid}}/objects/{{object_id}}/versions/")
    def versions(request: Request, cid: str, object_id: str) -> Response:
        collection(request, cid, read=True)
        flt = _filter(request, allow=("spec_version",))
        limit, after = _paging(request)
        page, more = state.query(
            cid, flt, after_seq=after, limit=limit, object_id=object_id, all_versions=True
        )
        if not page and after == 0:
            raise TaxiiError(404, "Object not found", f"no {object_id} in collection {cid}")
        body = _page_body(page, more)
        body["versions"] = [o.version for o in page]
        return TaxiiResponse(body, headers=_date_headers(page))

    return app
