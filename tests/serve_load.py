"""A bounded load test of a `fastdet serve` endpoint on this machine: client threads POST images
to 127.0.0.1 (nowhere else), each on its own keep-alive connection, for a fixed number of
requests or until a deadline, whichever comes first; every answer is kept with its latency.
Used by tests/test_ray_serve.py (correctness under load) and benchmarks/ray_scaleout.py (the
recorded figures)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LOOPBACK = "127.0.0.1"


@dataclass
class Answer:
    """One request's outcome: which payload it sent, the HTTP status, the JSON body, seconds."""

    payload: int
    status: int
    body: dict[str, Any]
    seconds: float


@dataclass
class LoadRun:
    clients: int
    planned: int
    wall_s: float
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # transport failures (no HTTP answer)

    def summary(self) -> dict[str, float]:
        """Requests answered, p50 / p99 / mean latency (ms) and requests per second."""
        seconds = np.array([a.seconds for a in self.answers]) * 1e3
        p50, p99 = np.percentile(seconds, [50, 99]) if len(seconds) else (np.nan, np.nan)
        return {
            "clients": self.clients,
            "planned": self.planned,
            "answered": len(self.answers),
            "transport_errors": len(self.errors),
            "wall_s": round(self.wall_s, 3),
            "p50_ms": round(float(p50), 2),
            "p99_ms": round(float(p99), 2),
            "mean_ms": round(float(seconds.mean()), 2) if len(seconds) else float("nan"),
            "requests_per_s": round(len(self.answers) / self.wall_s, 2) if self.wall_s else 0.0,
        }


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    connection: http.client.HTTPConnection | None = None,
    timeout: float = 60.0,
) -> tuple[int, dict[str, Any]]:
    """One request to 127.0.0.1:port; the status and the JSON answer."""
    own = connection is None
    conn = connection or http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        if own:
            conn.close()


def run_load(
    port: int,
    payloads: list[bytes],
    *,
    clients: int,
    requests: int,
    deadline_s: float,
    path: str = "/detect",
) -> LoadRun:
    """`requests` POSTs of the payloads in turn, spread over `clients` threads; each thread
    stops early at the deadline, so the run is bounded in time whatever the server does."""
    run = LoadRun(clients=clients, planned=requests, wall_s=0.0)
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client(first: int) -> None:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=deadline_s)
        try:
            for n in range(first, requests, clients):
                if time.monotonic() > stop_at:
                    return
                index = n % len(payloads)
                started = time.perf_counter()
                try:
                    status, body = request(port, "POST", path, payloads[index], conn)
                except (OSError, http.client.HTTPException, ValueError) as error:
                    with lock:
                        run.errors.append(f"request {n}: {type(error).__name__}: {error}")
                    conn.close()
                    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=deadline_s)
                    continue
                answer = Answer(index, status, body, time.perf_counter() - started)
                with lock:
                    run.answers.append(answer)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, stop_at - time.monotonic()) + 30)
    run.wall_s = time.perf_counter() - started
    return run
