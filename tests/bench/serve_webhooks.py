"""The load generator of serve_webhooks.sh (not a test).

  serve_webhooks.py hooks HOST SECRET COUNT SECONDS
      posts COUNT signed GitHub push deliveries (distinct delivery ids and
      commits) to HOST's /hooks/github, spread evenly over SECONDS, from 32
      threads; prints how many were answered 202 and the p50, p99 and max
      time to the answer, in ms.

  serve_webhooks.py latency HOST SECRET COMMIT CLONE_URL COUNT
      with an idle runner: posts COUNT pushes of COMMIT one at a time and
      reads each run's first job's start from the API; prints the p50 and
      max time from the 202 to that job starting, in ms.
"""
import hashlib
import hmac
import http.client
import json
import sys
import threading
import time


def post(host, secret, delivery, commit, clone_url):
    body = json.dumps({
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": commit,
        "created": False,
        "deleted": False,
        "head_commit": {"id": commit, "message": "bench"},
        "repository": {"id": 1, "full_name": "bench/app", "clone_url": clone_url},
        "sender": {"login": "bench"},
    }).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    conn = http.client.HTTPConnection(host, timeout=60)
    start = time.monotonic()
    conn.request("POST", "/hooks/github", body, {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature,
        "Content-Type": "application/json",
    })
    response = conn.getresponse()
    answer = response.read()
    elapsed = (time.monotonic() - start) * 1000
    conn.close()
    return response.status, elapsed, answer, time.time() * 1000


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def hooks(host, secret, count, seconds):
    results = []
    lock = threading.Lock()
    start = time.monotonic()
    tag = str(time.time_ns())

    def worker(first):
        for n in range(first, count, 32):
            delay = start + n * seconds / count - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            commit = hashlib.sha1(f"{tag}-{n}".encode()).hexdigest()
            status, ms, _, _ = post(host, secret, f"bench-{tag}-{n}", commit, "http://127.0.0.1:9/none.git")
            with lock:
                results.append((status, ms))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    accepted = [ms for status, ms in results if status == 202]
    print(f"{len(accepted)}/{count} answered 202 in {took:.1f} s; time to 202: "
          f"p50 {percentile(accepted, 0.5):.1f} ms, p99 {percentile(accepted, 0.99):.1f} ms, "
          f"max {max(accepted):.1f} ms")


def latency(host, secret, commit, clone_url, count):
    waits = []
    for n in range(count):
        status, _, answer, answered_at = post(host, secret, f"latency-{time.time_ns()}-{n}", commit, clone_url)
        assert status == 202, answer
        run = json.loads(answer)["run_id"]
        while True:
            conn = http.client.HTTPConnection(host, timeout=60)
            conn.request("GET", f"/api/runs/{run}/jobs")
            jobs = json.loads(conn.getresponse().read())
            conn.close()
            started = [j["started_at_ms"] for j in jobs if j.get("started_at_ms")]
            if started:
                waits.append(min(started) - answered_at)
                break
            time.sleep(0.02)
        while True:
            conn = http.client.HTTPConnection(host, timeout=60)
            conn.request("GET", f"/api/runs/{run}")
            status = json.loads(conn.getresponse().read())["status"]
            conn.close()
            if status not in ("queued", "running"):
                break
            time.sleep(0.1)
    print(f"202 to the first job started (idle runner, {count} runs): "
          f"p50 {percentile(waits, 0.5):.0f} ms, max {max(waits):.0f} ms")


if __name__ == "__main__":
    if sys.argv[1] == "hooks":
        hooks(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        latency(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
