"""An `auris eval` sweep spread over a Ray cluster: one Ray task per `--shard K/N`, on whichever
node has a free CPU, retried when its node dies; then `auris eval report` merges the shards and
the report is printed.

Every node runs `auris` itself, so the binary, the model folder, the manifest and the audio
must be at the same paths on every node (a shared file system, or the same files copied or
fetched with `auris download` on each node), and so must WORK_DIR, where the shards'
predictions files are written: a shard retried on another node resumes from what the dead one
wrote (FILE.partial), and a shard whose predictions file exists is done.

    scripts/ray_eval.sh --address auto --shards 12 --work-dir /shared/run1 \
        --out report.json -- eval mmau --model /shared/models/tiny-chat \
        --manifest /shared/mmau/mmau-test-mini.json --audio-dir /shared/mmau

Without --address (or with --address local) it starts a Ray instance on this machine.
auris itself knows nothing of Ray: each task runs the command line a Kubernetes Indexed Job or
a Slurm array would run.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import ray


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--address", default="local",
                    help="a running cluster (HOST:PORT or auto), or local to start one here")
    ap.add_argument("--shards", type=int, required=True, help="N: the number of shards")
    ap.add_argument("--work-dir", required=True,
                    help="where the shards' files go (the same path on every node)")
    ap.add_argument("--auris", default=os.path.abspath("target/release/auris"),
                    help="the auris binary (the same path on every node)")
    ap.add_argument("--cpus-per-shard", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1, help="auris --threads of each shard")
    ap.add_argument("--max-retries", type=int, default=3,
                    help="attempts of a shard after the first (its node died, or auris failed)")
    ap.add_argument("--out", help="the merged report (JSON)")
    ap.add_argument("--markdown", help="the merged table (markdown)")
    ap.add_argument("--no-timings", action="store_true",
                    help="pass --no-timings to the shards and the merge")
    ap.add_argument("command", nargs=argparse.REMAINDER,
                    help="-- eval mmau|captions|transcribe ARGS... (without --shard and --predictions)")
    a = ap.parse_args()
    a.command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if a.shards < 1 or not a.command or a.command[0] != "eval":
        ap.error("give --shards N >= 1 and the auris command after --, starting with eval")
    if any(x in ("--shard", "--predictions") for x in a.command):
        ap.error("the script sets --shard and --predictions itself")
    return a


def shard_file(work_dir, k, n):
    return os.path.join(work_dir, f"shard-{k:04d}-of-{n:04d}.jsonl")


@ray.remote
def run_shard(auris, command, threads, k, n, work_dir, no_timings):
    """Runs shard k of n; a shard whose predictions file exists is done already."""
    predictions = shard_file(work_dir, k, n)
    attempt = {"shard": k, "node": ray.get_runtime_context().get_node_id(),
               "host": socket.gethostname(), "pid": os.getpid(), "start": time.time()}
    with open(os.path.join(work_dir, "attempts.jsonl"), "a") as f:
        f.write(json.dumps(attempt) + "\n")
    if os.path.exists(predictions):
        return {**attempt, "status": "done before", "seconds": 0.0}
    cmd = [auris, *command, "--shard", f"{k}/{n}", "--predictions", predictions,
           "--threads", str(threads), "--quiet"]
    if no_timings:
        cmd.append("--no-timings")
    start = time.time()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        # An exception makes Ray retry the task (retry_exceptions), like a dead node does.
        raise RuntimeError(f"shard {k}/{n}: {' '.join(cmd)} exited {r.returncode}: {r.stderr[-2000:]}")
    return {**attempt, "status": "ran", "seconds": time.time() - start}


def main():
    a = parse_args()
    os.makedirs(a.work_dir, exist_ok=True)
    work_dir = os.path.abspath(a.work_dir)
    ray.init(address=None if a.address == "local" else a.address, log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    print(f"ray: {len(nodes)} nodes, {ray.cluster_resources().get('CPU', 0):g} CPUs; "
          f"{a.shards} shards", file=sys.stderr)
    task = run_shard.options(num_cpus=a.cpus_per_shard, max_retries=a.max_retries,
                             retry_exceptions=True)
    start = time.time()
    refs = [task.remote(a.auris, a.command, a.threads, k, a.shards, work_dir, a.no_timings)
            for k in range(1, a.shards + 1)]
    results = ray.get(refs)
    wall = time.time() - start
    with open(os.path.join(work_dir, "attempts.jsonl")) as f:
        attempts = [json.loads(line) for line in f if line.strip()]
    summary = {
        "shards": a.shards,
        "nodes": len(nodes),
        "attempts": len(attempts),
        "retries": len(attempts) - a.shards,
        "nodes_used": len({r["node"] for r in results}),
        "wall_s": round(wall, 1),
    }
    with open(os.path.join(work_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"ray: {json.dumps(summary)}", file=sys.stderr)
    report = [a.auris, "eval", "report", "--predictions",
              *[shard_file(work_dir, k, a.shards) for k in range(1, a.shards + 1)]]
    for flag, value in (("--out", a.out), ("--markdown", a.markdown)):
        if value:
            report += [flag, value]
    if a.no_timings:
        report.append("--no-timings")
    sys.exit(subprocess.run(report).returncode)


if __name__ == "__main__":
    main()
