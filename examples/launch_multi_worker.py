"""Start N workers of a MultiWorkerMirroredStrategy job on localhost, each with its TF_CONFIG.

    python examples/launch_multi_worker.py --num-workers 2 -- \
        python examples/multi_worker_train.py --work-dir /tmp/mw

Worker ``i`` gets ``TF_CONFIG={"cluster": {"worker": [localhost:p0, localhost:p1, ...]},
"task": {"type": "worker", "index": i}}`` on free ports; worker 0 is the chief. Output
lines are prefixed with ``[worker i]``. Exit status: 0 when every worker succeeded.
On several machines, set the same cluster list (real host names) and each machine's
own task index, and run the training command there.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("localhost", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_configs(num_workers, ports=None):
    ports = ports or free_ports(num_workers)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(num_workers)]


def _pump(stream, prefix, sink):
    for line in stream:
        sink.write(f"{prefix} {line}")
        sink.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: launch_multi_worker.py [--num-workers N] [--timeout S] -- COMMAND ...",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=None, help="seconds before killing all")
    args = p.parse_args(argv[:split])
    command = argv[split + 1:]
    procs, pumps = [], []
    for i, config in enumerate(tf_configs(args.num_workers)):
        env = {**os.environ, "TF_CONFIG": config}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        t = threading.Thread(target=_pump, args=(proc.stdout, f"[worker {i}]", sys.stdout))
        t.start()
        procs.append(proc)
        pumps.append(t)
    codes = []
    try:
        for proc in procs:
            codes.append(proc.wait(timeout=args.timeout))
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        print("launch_multi_worker: timeout, workers killed", file=sys.stderr)
        return 124
    finally:
        for t in pumps:
            t.join(timeout=5)
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
