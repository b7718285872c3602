#!/usr/bin/env python3
"""Traffic for bench/soak.sh: a fixed rate of mixed requests through the balancer.

Open loop at RATE requests/s (spread over THREADS keep-alive connections; a thread that
falls behind catches up): GET /soak/N, and a share of POSTs with a random body of 1 B to
64 KiB. The soak backends run with --sink, so a POST's answer is its body length: a wrong
length counts as an error like a non-2xx answer or a failed connection. Stdlib only.

Writes a JSON summary to --out when --duration is over: total, ok, status counts, and
every error with its time (unix seconds), so soak.sh can tell errors inside the windows
of its own disruptions from the others.
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time


def worker(i, args, t0, end, lock, stats, blob):
    rng = random.Random(i)
    conn = None
    k = 0
    while True:
        due = t0 + (k * args.threads + i) / args.rate
        k += 1
        if due >= end:
            break
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        post = rng.random() < args.post_share
        n = rng.randint(1, len(blob)) if post else 0
        err = None
        status = None
        try:
            if conn is None:
                conn = http.client.HTTPConnection(args.host, args.port, timeout=10)
            if post:
                conn.request("POST", f"/soak/{i}/{k}", body=blob[:n],
                             headers={"Content-Type": "application/octet-stream"})
            else:
                conn.request("GET", f"/soak/{i}/{k}?q={k}")
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
            if not 200 <= status < 300:
                err = f"status {status} {body[:80]!r}"
            elif body.strip() != str(n).encode():
                err = f"body {body[:40]!r} for a {n}-byte request"
            if resp.will_close:
                conn.close()
                conn = None
        except Exception as e:  # noqa: BLE001 - every failure is an error to count
            err = f"{type(e).__name__}: {e}"
            if conn is not None:
                conn.close()
            conn = None
        with lock:
            stats["total"] += 1
            key = str(status) if status is not None else "no_answer"
            stats["status"][key] = stats["status"].get(key, 0) + 1
            if err is None:
                stats["ok"] += 1
            else:
                stats["errors"].append([time.time(), "POST" if post else "GET", err])
    if conn is not None:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--post-share", type=float, default=0.2)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    blob = bytes(random.Random(7).getrandbits(8) for _ in range(64 * 1024))
    lock = threading.Lock()
    stats = {"total": 0, "ok": 0, "status": {}, "errors": []}
    t0 = time.time()
    end = t0 + args.duration
    threads = [
        threading.Thread(target=worker, args=(i, args, t0, end, lock, stats, blob), daemon=True)
        for i in range(args.threads)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["start"] = t0
    stats["seconds"] = time.time() - t0
    with open(args.out, "w") as f:
        json.dump(stats, f)
    print(f"soak client: {stats['total']} requests, {len(stats['errors'])} errors", file=sys.stderr)


if __name__ == "__main__":
    main()
