"""The TAXII 2.1 server driven over loopback with the real taxii2-client, and with raw HTTP for
the spec's status codes, error bodies, filters and paging."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from taxii2client.exceptions import AccessError
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages

from casefile.web import Role, TaxiiState, running_server

TAXII = "application/taxii+json;version=2.1"


@dataclass(frozen=True)
class Srv:
    url: str
    data: Path
    tokens: dict[str, str]
    shared: str  # collection partner reads, analyst writes
    internal: str  # collection only the analyst reads and writes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srv]:
    data = tmp_path_factory.mktemp("taxii")
    state = TaxiiState(data)
    tokens = {
        "admin": state.add_user("admin", Role.ADMIN),
        "analyst": state.add_user("analyst", Role.ANALYST),
        "partner": state.add_user("partner", Role.PARTNER),
    }
    shared = state.add_collection("Shared with allies", read=["partner", "analyst"], write=["analyst"])
    internal = state.add_collection("CERT internal", read=["analyst"], write=["analyst"])
    with running_server(data) as url:
        yield Srv(url, data, tokens, shared, internal)


def indicator(n: int, modified: str = "2022-07-12T00:00:00.000Z", tag: str = "t") -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid5(uuid.NAMESPACE_URL, f'{tag}-{n}')}",
        "created": "2022-07-10T00:00:00.000Z",
        "modified": modified,
        "valid_from": "2022-07-10T00:00:00Z",
        "pattern": f"[ipv4-addr:value = '198.51.100.{n % 250}']",
        "pattern_type": "stix",
    }


def client(server: Srv, user: str) -> Server:
    return Server(f"{server.url}/taxii2/", user=user, password=server.tokens[user])


def collection(server: Srv, user: str, cid: str) -> Collection:
    return Collection(f"{server.url}/api/collections/{cid}/", user=user, password=server.tokens[user])


def http(server: Srv, user: str | None = None) -> httpx.Client:
    headers = {"Accept": TAXII}
    if user:
        headers["Authorization"] = f"Bearer {server.tokens[user]}"
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def test_discover_list_add_page_and_manifest_with_taxii2_client(server: Srv) -> None:
    api = client(server, "analyst")
    assert api.title == "casefile TAXII server"
    (root,) = api.api_roots
    assert isinstance(root, ApiRoot)
    assert root.versions == [TAXII]
    titles = {c.id: c.title for c in root.collections}
    assert titles == {server.shared: "Shared with allies", server.internal: "CERT internal"}
    shared = next(c for c in root.collections if c.id == server.shared)
    assert shared.can_read and shared.can_write

    objects = [indicator(n, tag="page") for n in range(23)]
    status = shared.add_objects({"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects})
    assert (status.status, status.total_count, status.success_count, status.failure_count) == (
        "complete",
        23,
        23,
        0,
    )

    pages = list(as_pages(shared.get_objects, per_request=5, type="indicator"))
    got = [o["id"] for p in pages for o in p.get("objects", [])]
    assert [len(p["objects"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [p["more"] for p in pages] == [True] * 4 + [False]
    assert got == [o["id"] for o in objects]  # insertion order, nothing lost or repeated

    manifest = [m for p in as_pages(shared.get_manifest, per_request=10) for m in p["objects"]]
    assert [m["id"] for m in manifest] == got
    assert {m["media_type"] for m in manifest} == {"application/stix+json;version=2.1"}
    assert all(m["version"] == "2022-07-12T00:00:00.000Z" for m in manifest)
    added = [m["date_added"] for m in manifest]
    assert added == sorted(added) and len(set(added)) == len(added)


def test_partner_reads_what_is_shared_and_nothing_else(server: Srv) -> None:
    partner = client(server, "partner")
    (root,) = partner.api_roots
    (only,) = root.collections
    assert only.id == server.shared
    assert only.can_read and not only.can_write
    with pytest.raises(AccessError):
        only.add_objects({"objects": [indicator(1, tag="partner")]})
    with pytest.raises(requests.HTTPError) as denied:
        collection(server, "partner", server.internal).get_objects()
    assert denied.value.response is not None and denied.value.response.status_code == 403
    with http(server, "partner") as h:
        assert h.get(f"/api/collections/{server.internal}/").status_code == 403
        assert h.get(f"/api/collections/{server.internal}/objects/").status_code == 403
        assert h.get(f"/api/collections/{server.shared}/objects/").status_code == 200
    admin = collection(server, "admin", server.internal)  # admins may read every collection
    assert admin.get_objects()["more"] is False


def endpoints(server: Srv) -> list[tuple[str, str]]:
    oid = indicator(0, tag="auth")["id"]
    col = f"/api/collections/{server.internal}"
    return [
        ("GET", "/taxii2/"),
        ("GET", "/api/"),
        ("GET", "/api/collections/"),
        ("GET", f"{col}/"),
        ("GET", f"{col}/objects/"),
        ("POST", f"{col}/objects/"),
        ("GET", f"{col}/manifest/"),
        ("GET", f"{col}/objects/{oid}/"),
        ("DELETE", f"{col}/objects/{oid}/"),
        ("GET", f"{col}/objects/{oid}/versions/"),
        ("GET", f"/api/status/{uuid.uuid4()}/"),
    ]


def test_every_endpoint_answers_401_without_credentials_and_403_without_rights(server: Srv) -> None:
    body = '{"objects": []}'
    for method, path in endpoints(server):
        for auth in (None, "Bearer nope", "Basic YW5hbHlzdDp3cm9uZw=="):  # analyst:wrong
            headers = {"Accept": TAXII, "Content-Type": TAXII, **({"Authorization": auth} if auth else {})}
            r = httpx.request(method, server.url + path, headers=headers, content=body, timeout=10)
            assert r.status_code == 401, (method, path, auth)
            assert r.headers["content-type"] == TAXII
            assert r.json()["http_status"] == "401" and r.json()["title"] == "Unauthorized"
            assert "Bearer" in r.headers["www-authenticate"]
        if "/collections/" in path and path != "/api/collections/":
            with http(server, "partner") as h:
                r = h.request(method, path, headers={"Content-Type": TAXII}, content=body)
            assert r.status_code == 403, (method, path)
            assert r.json()["title"] == "Forbidden"


def test_basic_auth_with_user_and_token(server: Srv) -> None:
    ok = httpx.get(
        f"{server.url}/api/collections/",
        auth=("analyst", server.tokens["analyst"]),
        headers={"Accept": TAXII},
        timeout=10,
    )
    assert ok.status_code == 200
    wrong_user = httpx.get(
        f"{server.url}/api/collections/",
        auth=("partner", server.tokens["analyst"]),
        headers={"Accept": TAXII},
        timeout=10,
    )
    assert wrong_user.status_code == 401


def test_paging_while_objects_are_added_loses_and_repeats_nothing(server: Srv) -> None:
    """An ingester pages with `next`, then polls with `added_after` = the last X-TAXII-Date-Added-Last,
    while another client keeps adding objects."""
    first = [indicator(n, tag="race") for n in range(40)]
    late = [indicator(n, tag="race-late") for n in range(40)]
    col = f"/api/collections/{server.internal}/objects/"
    base = {"limit": "7", "match[id]": ",".join(o["id"] for o in first + late)}
    with http(server, "analyst") as h:
        assert h.post(col, content=_envelope(first), headers={"Content-Type": TAXII}).status_code == 202
        writer = threading.Thread(target=_post_each, args=(server, late))
        seen: list[str] = []
        cursor: dict[str, str] = {}
        last_added: str | None = None
        for _ in range(200):
            writer_done = writer.ident is not None and not writer.is_alive()
            r = h.get(col, params={**base, **cursor})
            page = r.json()
            seen.extend(o["id"] for o in page.get("objects", []))
            last_added = r.headers.get("X-TAXII-Date-Added-Last", last_added)
            if writer.ident is None:
                writer.start()  # start adding once the first page is out
            if page["more"]:
                cursor = {"next": page["next"]}
                continue
            if writer_done and not page.get("objects"):
                break
            writer.join()
            cursor = {"added_after": last_added} if last_added else {}
    assert len(seen) == len(set(seen)), "an object was repeated"
    assert sorted(seen) == sorted(o["id"] for o in first + late), "an object was lost"


def _post_each(server: Srv, objects: list[dict[str, Any]]) -> None:
    with http(server, "analyst") as h:
        for i in range(0, len(objects), 5):
            r = h.post(
                f"/api/collections/{server.internal}/objects/",
                content=_envelope(objects[i : i + 5]),
                headers={"Content-Type": TAXII},
            )
            assert r.status_code == 202


def _envelope(objects: list[dict[str, Any]]) -> str:
    import json

    return json.dumps({"objects": objects})


def test_added_after_is_exclusive_and_headers_bound_the_page(server: Srv) -> None:
    objs = [indicator(n, tag="after") for n in range(4)]
    col = f"/api/collections/{server.internal}/objects/"
    ids = ",".join(o["id"] for o in objs)
    with http(server, "analyst") as h:
        h.post(col, content=_envelope(objs), headers={"Content-Type": TAXII})
        r = h.get(col, params={"match[id]": ids, "limit": "2"})
        first_added = r.headers["X-TAXII-Date-Added-First"]
        last_added = r.headers["X-TAXII-Date-Added-Last"]
        assert first_added < last_added
        after = h.get(col, params={"match[id]": ids, "added_after": last_added}).json()
        assert [o["id"] for o in after["objects"]] == [o["id"] for o in objs[2:]]
        assert h.get(col, params={"added_after": "yesterday"}).status_code == 400
        # years before 1000 keep their zeros, so that text order stays time order
        early = h.get(col, params={"match[id]": ids, "added_after": "0999-01-01T00:00:00Z"}).json()
        assert len(early["objects"]) == len(objs)
        # a timestamp whose UTC instant falls before year 1 is refused too, not a server error
        assert h.get(col, params={"added_after": "0001-01-01T00:00:00+01:00"}).status_code == 400


def test_versions_match_version_and_delete(server: Srv) -> None:
    v1 = indicator(1, "2022-07-12T00:00:00.000Z", tag="ver")
    v2 = {**v1, "modified": "2022-07-13T00:00:00Z", "name": "second"}
    oid = v1["id"]
    base = f"/api/collections/{server.internal}/objects/"
    with http(server, "analyst") as h:
        h.post(base, content=_envelope([v1, v2, v1]), headers={"Content-Type": TAXII})
        versions = h.get(f"{base}{oid}/versions/").json()
        assert versions["versions"] == ["2022-07-12T00:00:00.000Z", "2022-07-13T00:00:00Z"]
        assert h.get(f"{base}{oid}/").json()["objects"] == [v2]  # last by default
        assert h.get(f"{base}{oid}/", params={"match[version]": "first"}).json()["objects"] == [v1]
        assert len(h.get(f"{base}{oid}/", params={"match[version]": "all"}).json()["objects"]) == 2
        exact = h.get(base, params={"match[id]": oid, "match[version]": "2022-07-12T00:00:00Z"}).json()
        assert exact["objects"] == [v1]  # same instant written with another precision
        assert h.delete(f"{base}{oid}/", params={"match[version]": "first"}).status_code == 200
        assert h.get(f"{base}{oid}/versions/").json()["versions"] == ["2022-07-13T00:00:00Z"]
        assert h.delete(f"{base}{oid}/").status_code == 200
        gone = h.get(f"{base}{oid}/")
        assert gone.status_code == 404 and gone.json()["http_status"] == "404"
        assert h.delete(f"{base}{oid}/").status_code == 404


def test_post_status_media_types_and_bad_objects(server: Srv) -> None:
    base = f"/api/collections/{server.internal}/objects/"
    good = indicator(5, tag="status")
    # modified before year 1 in UTC: no timestamp datetime holds
    ancient = {**indicator(6, tag="status"), "modified": "0001-01-01T00:00:00.000+01:00"}
    with http(server, "analyst") as h:
        r = h.post(
            base,
            content=_envelope([good, {"type": "indicator", "id": "nope"}, {"id": 3}, ancient]),
            headers={"Content-Type": TAXII},
        )
        assert r.status_code == 202 and r.headers["content-type"] == TAXII
        status = r.json()
        assert (status["success_count"], status["failure_count"], status["pending_count"]) == (1, 3, 0)
        assert [f["id"] for f in status["failures"]] == ["nope", "objects[2]", ancient["id"]]
        assert "not a timestamp" in status["failures"][2]["message"]
        # lone surrogates (JSON escapes) in a value are stored and served back as sent; in a type, refused
        odd = {**indicator(7, tag="status"), "name": "x\ud800"}
        bad_type = {"type": "indic\ud800", "id": "indic\ud800--00000000-0000-4000-8000-000000000077"}
        r = h.post(base, content=_envelope([odd, bad_type]), headers={"Content-Type": TAXII})
        assert r.status_code == 202
        status = r.json()
        assert (status["success_count"], status["failure_count"]) == (1, 1)
        assert status["failures"][0]["id"] == bad_type["id"]
        assert "not a STIX type" in status["failures"][0]["message"]
        (served,) = h.get(base, params={"match[id]": odd["id"]}).json()["objects"]
        assert served["name"] == "x\ud800"
        again = h.get(f"/api/status/{status['id']}/").json()
        assert again == status
        assert h.post(base, content="{}", headers={"Content-Type": "application/json"}).status_code == 415
        assert h.post(base, content="{broken", headers={"Content-Type": TAXII}).status_code == 400
        bomb = "[" * 100_000 + "]" * 100_000
        assert h.post(base, content=bomb, headers={"Content-Type": TAXII}).status_code == 400
        too_many = h.get(base, params={"match[id]": ",".join("x" * 1001)})
        assert too_many.status_code == 400 and too_many.json()["title"] == "Too many filter values"
        assert h.get(base, headers={"Accept": "text/html"}).status_code == 406
        assert h.get(base, params={"match[colour]": "red"}).status_code == 400
        assert h.get(base, params={"limit": "0"}).status_code == 400
        assert h.get(base, params={"next": "!!"}).status_code == 400
        missing = h.get(f"/api/collections/{uuid.uuid4()}/objects/")
        assert missing.status_code == 404 and set(missing.json()) >= {"title", "http_status"}
    with http(server, "partner") as h:  # another account's status is not theirs to see
        assert h.get(f"/api/status/{status['id']}/").status_code == 404


def test_match_type_and_spec_version_filters(server: Srv) -> None:
    marking = {
        "type": "identity",
        "spec_version": "2.1",
        "id": f"identity--{uuid.uuid4()}",
        "created": "2022-07-01T00:00:00Z",
        "modified": "2022-07-01T00:00:00Z",
        "name": "CERT",
    }
    base = f"/api/collections/{server.shared}/objects/"
    with http(server, "analyst") as h:
        h.post(base, content=_envelope([marking]), headers={"Content-Type": TAXII})
        got = h.get(base, params={"match[type]": "identity", "limit": "1000"}).json()["objects"]
        assert [o["id"] for o in got] == [marking["id"]]
        assert (
            h.get(base, params={"match[type]": "identity", "match[spec_version]": "2.0"}).json()["objects"]
            == []
        )


def test_intel_import_pulls_a_taxii_collection_page_by_page(server: Srv, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from casefile.cli import app
    from casefile.share import IntelStore

    objs = [indicator(n, tag="pull") for n in range(1205)]  # more than one 1000-object page
    pull = TaxiiState(server.data).add_collection("pull", read=["partner"], write=["analyst"])
    col = f"/api/collections/{pull}/objects/"
    with http(server, "analyst") as h:
        for i in range(0, len(objs), 500):
            h.post(col, content=_envelope(objs[i : i + 500]), headers={"Content-Type": TAXII})
    store = tmp_path / "pulled.duckdb"
    runner = CliRunner(env={"COLUMNS": "40"})  # narrow: problem lines stay whole whatever the width
    pulled = runner.invoke(
        app,
        [
            "intel",
            "import",
            f"{server.url}/api/collections/{pull}/",
            "--store",
            str(store),
            "--user",
            "partner",
            "--token",
            server.tokens["partner"],
        ],
    )
    assert pulled.exit_code == 0, pulled.output
    # 1205 objects read over two pages; they name 250 addresses, so 250 indicators, 955 merges
    assert "250 new indicators, 955 merged" in pulled.stdout
    with IntelStore.open(store) as intel:
        values = {a.value for i in intel.indicators() for a in i.atoms}
    assert values == {f"198.51.100.{n}" for n in range(250)}
    denied = runner.invoke(
        app,
        [
            "intel",
            "import",
            f"{server.url}/api/collections/{server.internal}/objects/",
            "--store",
            str(store),
        ],
        env={"CASEFILE_INTEL_TOKEN": server.tokens["partner"]},
    )
    assert denied.exit_code == 0
    (warning,) = [line for line in denied.output.splitlines() if line.startswith("warning:")]
    assert "403 Forbidden" in warning
