"""The lifecycle and scale lines of scripts/bench: envctl beside bash, interleaved round by round so both see the
same moment of a shared machine; every row prints ours, the baseline and the ratio of the medians.

Usage: bench_lifecycle.py lifecycle|scale ENVCTL WORK  (WORK holds the one/, ten/ and scale/ repositories)
"""

import json
import os
import statistics
import subprocess
import sys
import time


def ms(cmd, cwd=None):
    began = time.perf_counter_ns()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter_ns() - began) / 1e6


def row(section, what, ours, base, goal):
    print(f"{section}: {what:46} ours {ours:8.1f} ms  baseline {base:7.1f} ms  ratio {ours / base:5.2f}x  (goal {goal})")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def pss_mib(pid):
    # Proportional set size: a page shared by n processes counts 1/n in each, so the sum is what the tree costs.
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) / 1024


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            out += [int(c) for c in f.read().split()]
    return out


def host_pid(bin, cwd):
    out = subprocess.run([bin, "show-state", "--json"], cwd=cwd, check=True, capture_output=True).stdout
    return json.loads(out)["run_state"]["host"]["pid"]


def lifecycle(bin, work):
    pids = os.path.join(work, "pids")

    def bash_start(n):
        return ms(["bash", "-c", f"for i in $(seq {n}); do sleep 1000 & echo $! >> {pids}; done"])

    def kill_bash_started():
        subprocess.run(["bash", "-c", f"kill $(cat {pids})"], check=True)
        os.remove(pids)

    def bash_kill_wait(n):
        # The sleeps run under a shell that waits for them (so a killed one is gone, not a zombie); the timed shell
        # kills them and waits until all are gone.
        subprocess.Popen(["bash", "-c", f"for i in $(seq {n}); do sleep 1000 & echo $! >> {pids}; done; wait"],
                         start_new_session=True)
        while not os.path.exists(pids) or len(open(pids).read().split()) < n:
            time.sleep(0.001)
        took = ms(["bash", "-c", f"p=$(cat {pids}); kill $p; while kill -0 $p 2>/dev/null; do sleep 0.001; done"])
        os.remove(pids)
        return took

    one, ten = f"{work}/one", f"{work}/ten"
    runs = {k: [] for k in ("bash1", "ours1", "bash10", "ours10", "kill10", "stop10")}
    for _ in range(3):
        ms([bin, "start", "-q"], ten), ms([bin, "stop", "-q"], ten)
    for _ in range(20):
        runs["bash1"].append(bash_start(1))
        kill_bash_started()
        runs["ours1"].append(ms([bin, "start", "-q"], one))
        ms([bin, "stop", "-q"], one)
        runs["bash10"].append(bash_start(10))
        kill_bash_started()
        runs["ours10"].append(ms([bin, "start", "-q"], ten))
        runs["stop10"].append(ms([bin, "stop", "-q"], ten))
        runs["kill10"].append(bash_kill_wait(10))
    m = {k: statistics.median(v) for k, v in runs.items()}
    row("lifecycle", "start 10 until ready ÷ bash & of the 10", m["ours10"], m["bash10"], "<= 1.3x")
    row("lifecycle", "stop 10 until gone ÷ bash kill + wait", m["stop10"], m["kill10"], "<= 1.5x")
    row("lifecycle", "start 1 (host spawn included) ÷ bash &", m["ours1"], m["bash1"], "fixed cost <= 3 ms")
    print(f"lifecycle: {'start 1: fixed cost above bash':46} {m['ours1'] - m['bash1']:8.1f} ms  (goal <= 3 ms)")
    # The process tree with 10 services: the host and everything under it.
    ms([bin, "start", "-q"], ten)
    host = host_pid(bin, ten)
    tree, queue = [], [host]
    while queue:
        pid = queue.pop()
        tree.append(pid)
        queue += children(pid)
    names = [os.path.basename(os.readlink(f"/proc/{p}/exe")) for p in tree]
    shells = sum(1 for n in names if n.endswith("sh"))
    total, pss = sum(rss_mib(p) for p in tree), sum(pss_mib(p) for p in tree)
    print(f"lifecycle: {'process tree with 10 services':46} {len(tree)} processes ({shells} sh), "
          f"{pss:.1f} MiB PSS ({total:.1f} MiB RSS summed), host {rss_mib(host):.1f} MiB RSS  (goal <= 12 MiB, no sh per service)")
    ms([bin, "stop", "-q"], ten)


def scale(bin, work):
    repo = f"{work}/scale"

    def config(n):
        with open(f"{repo}/.envctl", "w") as f:
            f.write("".join(f'[services.s{i}]\ncommand = "sleep 1000"\n\n' for i in range(n)))

    pids = f"{work}/scale-pids"
    base = ms(["bash", "-c", f"for i in $(seq 1000); do sleep 1000 & echo $! >> {pids}; done"])
    subprocess.run(["bash", "-c", f"kill $(cat {pids})"], check=True)
    os.remove(pids)
    config(1000)
    ours = ms([bin, "start", "-q"], repo)
    row("scale", "start 1,000 until ready ÷ bash & of the 1,000", ours, base, "<= 3 s")
    host = host_pid(bin, repo)
    rss = rss_mib(host)
    began = time.perf_counter_ns()
    os.kill(host, 15)
    while os.path.exists(f"/proc/{host}") and ") Z" not in open(f"/proc/{host}/stat").read():
        time.sleep(0.001)
    gone = (time.perf_counter_ns() - began) / 1e6
    print(f"scale: {'SIGTERM to host exit, 1,000 services':46} {gone:8.1f} ms  (host RSS before {rss:.1f} MiB; goal <= 1 s)")
    coalesced(bin, work, repo, config)
    # Two repositories running side by side, 1 and 200 services, and every round asks each in turn.
    small = f"{work}/scale-one"
    os.makedirs(small, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", small], check=True)
    with open(f"{small}/.envctl", "w") as f:
        f.write('[services.s0]\ncommand = "sleep 1000"\n')
    config(200)
    ms([bin, "start", "-q"], repo)
    ms([bin, "start", "-q"], small)
    commands = (["show-config", "--json"], ["explain-startup", "--json"], ["show-state", "--json"])
    times = {(d, c[0]): [] for d in (small, repo) for c in commands}
    for round in range(33):
        for c in commands:
            for d in (small, repo):
                took = ms([bin, *c], d)
                if round >= 3:
                    times[(d, c[0])].append(took)
    ms([bin, "stop", "-q"], repo)
    ms([bin, "stop", "-q"], small)
    for c in commands:
        one, many = statistics.median(times[(small, c[0])]), statistics.median(times[(repo, c[0])])
        row("scale", f"{' '.join(c)}: 200 services ÷ 1", many, one, "<= 2x")

def saves_of_run(bin, cwd):
    """The `state.saved` events of the latest run of the repository in `cwd` (its start's writes of the state)."""
    state = json.loads(subprocess.run([bin, "show-state", "--json"], cwd=cwd, check=True, capture_output=True).stdout)
    run_id = state["run_state"]["run_id"]
    scopes = os.path.join(os.environ["ENVCTL_RUNTIME_DIR"], "scopes")
    name = os.path.basename(cwd)
    count = 0
    for scope in os.listdir(scopes):
        if scope.rsplit("-", 1)[0] != name:
            continue
        with open(os.path.join(scopes, scope, "events.jsonl")) as events:
            for line in events:
                event = json.loads(line)
                count += event["event"] == "state.saved" and event["run_id"] == run_id
    return count


def coalesced(bin, work, repo, config):
    """State writes coalesced: how often a start writes the state, and what one change (a service restarted) costs,
    at 1,000 services beside at 10."""
    ten = f"{work}/scale-ten"
    os.makedirs(ten, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main", ten], check=True)
    with open(f"{ten}/.envctl", "w") as f:
        f.write("".join(f'[services.s{i}]\ncommand = "sleep 1000"\n\n' for i in range(10)))
    config(1000)
    ms([bin, "start", "-q"], repo)
    ms([bin, "start", "-q"], ten)
    time.sleep(0.5)
    many, few = saves_of_run(bin, repo), saves_of_run(bin, ten)
    print(f"scale: {'state writes by a start: 1,000 services ÷ 10':46} ours {many:8d}     baseline {few:7d}     "
          f"ratio {many / few:5.2f}x  (goal <= 1x: as many)")
    times = {ten: [], repo: []}
    for round in range(13):
        for d in (ten, repo):
            took = ms([bin, "restart", "--service", "s0", "-q"], d)
            if round >= 3:
                times[d].append(took)
    row("scale", "a change (restart s0): 1,000 services ÷ 10", statistics.median(times[repo]),
        statistics.median(times[ten]), "<= 1.5x")
    ms([bin, "stop", "-q"], repo)
    ms([bin, "stop", "-q"], ten)


if __name__ == "__main__":
    section, bin, work = sys.argv[1:4]
    {"lifecycle": lifecycle, "scale": scale}[section](bin, work)
