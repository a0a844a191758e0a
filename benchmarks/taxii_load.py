"""Load test of the TAXII 2.1 server on loopback: requests/s and latency percentiles it holds.

Starts `casefile serve` as its own process (one uvicorn worker) on 127.0.0.1 with fresh state,
seeds a collection, then runs client threads with a fixed request mix until `--requests` are done
or `--seconds` have passed, whichever comes first (bounded in count and in time):

    70% GET objects (limit 100, paging with next), 15% GET manifest, 10% GET one object,
    5% POST an envelope of 10 new indicators

Usage:  .venv/bin/python benchmarks/taxii_load.py [--requests 4000] [--seconds 60] [--clients 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from casefile.web import Role, TaxiiState
from casefile.web.server import free_port

TAXII = "application/taxii+json;version=2.1"


def indicator(tag: str, n: int) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid5(uuid.NAMESPACE_URL, f'{tag}-{n}')}",
        "created": "2022-07-10T00:00:00.000Z",
        "modified": "2022-07-10T00:00:00.000Z",
        "valid_from": "2022-07-10T00:00:00Z",
        "pattern": f"[ipv4-addr:value = '10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}']",
        "pattern_type": "stix",
    }


def wait_up(url: str, token: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(
                    f"{url}/taxii2/", headers={"Accept": TAXII, "Authorization": f"Bearer {token}"}
                ).status_code
                == 200
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=4000, help="stop after this many requests")
    ap.add_argument("--seconds", type=float, default=60, help="stop after this many seconds")
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--seed-objects", type=int, default=2000, help="objects in the collection before the run")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="taxii-load-"))
    state = TaxiiState(data)
    token = state.add_user("loader", Role.ANALYST)
    cid = state.add_collection("load", read=["loader"], write=["loader"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    casefile = Path(sys.executable).with_name("casefile")
    server = subprocess.Popen(
        [str(casefile), "serve", "--host", "127.0.0.1", "--port", str(port), "--data", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_up(url, token)
        headers = {"Accept": TAXII, "Content-Type": TAXII, "Authorization": f"Bearer {token}"}
        col = f"{url}/api/collections/{cid}"
        seed = [indicator("seed", n) for n in range(args.seed_objects)]
        with httpx.Client(headers=headers, timeout=60) as c:
            for i in range(0, len(seed), 500):
                c.post(
                    f"{col}/objects/", content=json.dumps({"objects": seed[i : i + 500]})
                ).raise_for_status()

        latencies: list[tuple[str, float]] = []
        errors: list[str] = []
        lock = threading.Lock()
        budget = iter(range(args.requests))
        stop_at = time.monotonic() + args.seconds

        def worker(wid: int) -> None:
            rnd = random.Random(wid)
            cursor: str | None = None
            posted = 0
            with httpx.Client(headers=headers, timeout=30) as c:
                while time.monotonic() < stop_at:
                    with lock:
                        if next(budget, None) is None:
                            return
                    roll = rnd.random()
                    t0 = time.perf_counter()
                    if roll < 0.70:
                        kind = "get objects"
                        r = c.get(
                            f"{col}/objects/", params={"limit": "100", **({"next": cursor} if cursor else {})}
                        )
                        if r.status_code == 200:
                            body = r.json()
                            cursor = body.get("next") if body.get("more") else None
                    elif roll < 0.85:
                        kind = "get manifest"
                        r = c.get(f"{col}/manifest/", params={"limit": "100"})
                    elif roll < 0.95:
                        kind = "get object"
                        r = c.get(f"{col}/objects/{seed[rnd.randrange(len(seed))]['id']}/")
                    else:
                        kind = "post 10"
                        objs = [indicator(f"w{wid}", posted * 10 + k) for k in range(10)]
                        posted += 1
                        r = c.post(f"{col}/objects/", content=json.dumps({"objects": objs}))
                    elapsed = time.perf_counter() - t0
                    with lock:
                        latencies.append((kind, elapsed))
                        if r.status_code not in (200, 202):
                            errors.append(f"{kind}: HTTP {r.status_code}")

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
        t_start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t_start
    finally:
        server.terminate()
        server.wait(timeout=15)

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    all_lat = [lat for _, lat in latencies]
    print(f"clients={args.clients} requests={len(all_lat)} errors={len(errors)} wall={wall:.1f}s")
    print(f"throughput: {len(all_lat) / wall:.0f} requests/s")
    print(
        f"latency ms: p50={pct(all_lat, 50):.1f} p95={pct(all_lat, 95):.1f} p99={pct(all_lat, 99):.1f} "
        f"max={max(all_lat) * 1000:.1f} mean={statistics.mean(all_lat) * 1000:.1f}"
    )
    for kind in sorted({k for k, _ in latencies}):
        lat = [v for k, v in latencies if k == kind]
        print(f"  {kind:13s} n={len(lat):5d} p50={pct(lat, 50):6.1f} p99={pct(lat, 99):6.1f} ms")
    if errors:
        print("errors:", errors[:5])
        raise SystemExit(1)


if __name__ == "__main__":
    main()
