#!/usr/bin/env python3
"""The `drain` section of scripts/bench: a worker at concurrency 1 draining 10k queued `noop` jobs, envctl on Redis
and on the embedded store beside a Celery worker on the same redis-server, interleaved (ROUNDS rounds, medians).

How each is timed, to be fair to the baseline:
- envctl: the wall time of `envctl worker --drain --concurrency 1` (its process start and its exit included).
- Celery: from the first task's start to the last task's end, as the tasks themselves record them (its own start,
  its connection and its idle wait are left out), `--pool solo --concurrency 1` (Celery's fastest one-slot pool,
  the task in the worker's own process) with `worker_prefetch_multiplier` left at its default.

Usage: bench_drain.py BIN WORK PORT PYTHON   (PYTHON: an interpreter with celery[redis], or "" when none)
"""
import json
import os
import statistics
import subprocess
import sys
import time

N = 10_000
ROUNDS = 3

CELERY_APP = r'''
import os, time
from celery import Celery
app = Celery("drainbench", broker=os.environ["BENCH_BROKER"])
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
done = {"n": 0, "first": None}
@app.task(name="noop")
def noop():
    now = time.perf_counter()
    if done["first"] is None:
        done["first"] = now
    done["n"] += 1
    if done["n"] == int(os.environ["BENCH_N"]):
        end = time.perf_counter()
        with open(os.environ["BENCH_OUT"] + ".tmp", "w") as out:
            out.write(f"{end - done['first']}")
        os.rename(os.environ["BENCH_OUT"] + ".tmp", os.environ["BENCH_OUT"])
'''


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def envctl_drain(bin, cwd, env):
    subprocess.run([bin, "jobs", "purge", "--older-than", "0s", "-q"], cwd=cwd, env=env, check=True)
    subprocess.run([bin, "jobs", "enqueue", "noop", "--count", str(N)], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    t = time.perf_counter()
    subprocess.run([bin, "worker", "--drain", "--concurrency", "1", "-q"], cwd=cwd, env=env, check=True)
    seconds = time.perf_counter() - t
    left = subprocess.run([bin, "jobs", "stats", "--json"], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout
    stats = json.loads(left)
    if stats["succeeded"] != N or stats["queued"] or stats["running"]:
        sys.exit(f"drain: expected {N} succeeded, the store says {stats}")
    return N / seconds


def celery_drain(py, work, port):
    app_dir = os.path.join(work, "celeryapp")
    os.makedirs(app_dir, exist_ok=True)
    with open(os.path.join(app_dir, "drainbench.py"), "w") as f:
        f.write(CELERY_APP)
    out = os.path.join(work, "celery.done")
    if os.path.exists(out):
        os.remove(out)
    env = dict(os.environ, BENCH_BROKER=f"redis://127.0.0.1:{port}/1", BENCH_N=str(N), BENCH_OUT=out,
               PYTHONPATH=app_dir)
    # Enqueue first (the worker is not running), as for envctl.
    subprocess.run([py, "-c", "from drainbench import app, noop\n"
                    "with app.producer_or_acquire() as p:\n"
                    f"    [noop.apply_async(producer=p) for _ in range({N})]"], env=env, check=True)
    worker = subprocess.Popen([py, "-m", "celery", "-A", "drainbench", "worker", "--pool", "solo", "--concurrency",
                               "1", "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                               "--without-heartbeat"], env=env, cwd=app_dir, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not os.path.exists(out):
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            sys.exit("celery worker ended (or took > 300 s) before draining")
        time.sleep(0.05)
    worker.terminate()
    worker.wait()
    with open(out) as f:
        return N / float(f.read())


def trickle(bin, cwd, env, label):
    """An idle worker with 4 slots, 200 jobs enqueued one at a time 10 ms apart: their enqueue-to-start latency (the
    store's own figure) and the worker's RSS once idle again."""
    subprocess.run([bin, "jobs", "purge", "--older-than", "0s", "-q"], cwd=cwd, env=env, check=True)
    worker = subprocess.Popen([bin, "worker", "--concurrency", "4", "-q"], cwd=cwd, env=env)
    time.sleep(0.5)
    for _ in range(200):
        subprocess.run([bin, "jobs", "enqueue", "noop"], cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
        time.sleep(0.01)
    time.sleep(0.3)
    rss = rss_mib(worker.pid)
    worker.send_signal(2)
    worker.wait()
    stats = json.loads(subprocess.run([bin, "jobs", "stats", "--json"], cwd=cwd, env=env, check=True,
                                      capture_output=True, text=True).stdout)
    print(f"drain: {label + ', trickle of 200, enqueue-to-start':46} p50 {stats['start_latency_p50_ms']:.2f} ms, "
          f"p99 {stats['start_latency_p99_ms']:.2f} ms  (goal on redis <= 0.3 / 1 ms)")
    print(f"drain: {label + ', idle worker RSS (4 slots, after it)':46} {rss:.1f} MiB  (goal <= 10 MiB)")


def main():
    bin, work, port, py = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    redis_dir, embedded_dir = os.path.join(work, "drain-redis"), os.path.join(work, "drain-embedded")
    for d in (redis_dir, embedded_dir):
        os.makedirs(d, exist_ok=True)
        subprocess.run(["git", "init", "-q", "-b", "main", d], check=True)
    base = {k: v for k, v in os.environ.items() if k not in ("ENVCTL_JOBS_BACKEND", "ENVCTL_REDIS_URL")}
    redis_env = dict(base, ENVCTL_JOBS_BACKEND="redis", ENVCTL_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    ours_redis, ours_embedded, celery = [], [], []
    for _ in range(ROUNDS):
        ours_redis.append(envctl_drain(bin, redis_dir, redis_env))
        if py:
            celery.append(celery_drain(py, work, port))
        ours_embedded.append(envctl_drain(bin, embedded_dir, base))
    r, e = statistics.median(ours_redis), statistics.median(ours_embedded)
    runs = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)
    if celery:
        c = statistics.median(celery)
        print(f"drain: redis, 10k noop, concurrency 1          ours {r:8,.0f}/s  celery {c:7,.0f}/s  "
              f"ratio {r / c:5.1f}x  (goal >= 20x and >= 25,000/s)  runs: ours {runs(ours_redis)}; celery {runs(celery)}")
        print(f"drain: embedded, 10k noop, concurrency 1       ours {e:8,.0f}/s  celery {c:7,.0f}/s  "
              f"ratio {e / c:5.1f}x  (goal >= 20,000/s)  runs: {runs(ours_embedded)}")
    else:
        print("drain: celery is not installed (no PyPI?), no baseline")
        print(f"drain: redis, 10k noop, concurrency 1          ours {r:8,.0f}/s  (goal >= 25,000/s)  runs: {runs(ours_redis)}")
        print(f"drain: embedded, 10k noop, concurrency 1       ours {e:8,.0f}/s  (goal >= 20,000/s)  runs: {runs(ours_embedded)}")
    trickle(bin, redis_dir, redis_env, "redis")
    trickle(bin, embedded_dir, base, "embedded")


if __name__ == "__main__":
    main()
