"""A parameter-server cluster on this machine: ps and worker tasks as separate processes speaking gRPC.

`LocalCluster` starts each task as `python -m training.ps_cluster --job ps --index 0 ...`
(a `tf.distribute.Server` on a free 127.0.0.1 port) and hands the coordinator a
cluster resolver. It is what `training.strategy=parameter_server` uses when no
`TF_CONFIG` names a real cluster. Every task dies with the cluster:
`__exit__` terminates them on success, failure or interrupt, and each task also
exits when its parent process goes away (SIGKILL included), so no process or
port outlives the training that started it.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional

from contract.processes import exit_with_parent, free_port

READY_TIMEOUT_SECONDS = 120
STOP_GRACE_SECONDS = 5



def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (Linux) or psutil."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except FileNotFoundError:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


class LocalCluster:
    """`num_ps` parameter servers and `num_workers` workers on loopback, plus the coordinator's (chief) address."""

    def __init__(self, num_ps: int, num_workers: int, ready_dir: str):
        if num_ps < 1 or num_workers < 1:
            raise ValueError(f"a parameter-server cluster needs at least 1 ps and 1 worker, "
                             f"got {num_ps} ps and {num_workers} workers")
        self.spec: Dict[str, List[str]] = {
            "chief": [f"127.0.0.1:{free_port()}"],
            "worker": [f"127.0.0.1:{free_port()}" for _ in range(num_workers)],
            "ps": [f"127.0.0.1:{free_port()}" for _ in range(num_ps)],
        }
        self.ready_dir = ready_dir
        self.processes: Dict[tuple, subprocess.Popen] = {}
        self._cpu_at_start: Dict[tuple, float] = {}

    def __enter__(self) -> "LocalCluster":
        os.makedirs(self.ready_dir, exist_ok=True)
        try:
            for job in ("ps", "worker"):
                for index in range(len(self.spec[job])):
                    self.processes[(job, index)] = subprocess.Popen(
                        [sys.executable, "-m", "training.ps_cluster", "--job", job, "--index", str(index),
                         "--cluster", json.dumps(self.spec), "--ready-file", self._ready_file(job, index),
                         "--parent-pid", str(os.getpid())],
                        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
            self._wait_until_ready()
        except BaseException:
            self.shutdown()
            raise
        self._cpu_at_start = {key: cpu_seconds(p.pid) for key, p in self.processes.items()}
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def _ready_file(self, job: str, index: int) -> str:
        return os.path.join(self.ready_dir, f"{job}-{index}.ready")

    def _wait_until_ready(self) -> None:
        deadline = time.time() + READY_TIMEOUT_SECONDS
        pending = set(self.processes)
        while pending:
            for key in list(pending):
                process = self.processes[key]
                if process.poll() is not None:
                    raise RuntimeError(f"parameter-server cluster task {key[0]}:{key[1]} (pid {process.pid}) exited "
                                       f"with status {process.returncode} before serving; its output is above")
                if os.path.exists(self._ready_file(*key)):
                    pending.discard(key)
            if pending and time.time() > deadline:
                raise RuntimeError(f"parameter-server cluster tasks {sorted(pending)} did not start serving within "
                                   f"{READY_TIMEOUT_SECONDS}s")
            time.sleep(0.1)

    def resolver(self):
        import tensorflow as tf

        return tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(self.spec), rpc_layer="grpc", task_type="chief", task_id=0)

    def tasks(self) -> List[Dict]:
        """Each task's job, index, pid, address and CPU seconds spent since the cluster came up.

        A task that took part in training has spent CPU on it; an idle gRPC server spends next to none.
        """
        described = []
        for (job, index), process in sorted(self.processes.items()):
            alive = process.poll() is None
            described.append({
                "job": job, "index": index, "pid": process.pid, "address": self.spec[job][index], "alive": alive,
                "cpu_seconds": round(cpu_seconds(process.pid) - self._cpu_at_start.get((job, index), 0.0), 3)
                if alive else None,
            })
        return described

    def shutdown(self) -> None:
        """SIGTERM every task, then SIGKILL whichever has not exited after a grace period."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.time() + STOP_GRACE_SECONDS
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve(cluster: Dict[str, List[str]], job: str, index: int, ready_file: Optional[str] = None) -> None:
    """Runs one ps or worker task until the process is stopped."""
    import tensorflow as tf

    server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=job, task_index=index,
                                  protocol="grpc", start=True)
    if ready_file:
        with open(ready_file + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"pid": os.getpid(), "job": job, "index": index}, f)
        os.replace(ready_file + ".tmp", ready_file)
    server.join()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="One task of a local parameter-server cluster.")
    parser.add_argument("--job", choices=("ps", "worker"), required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--cluster", required=True, help="cluster spec as JSON")
    parser.add_argument("--ready-file", help="written once the task's gRPC server is listening")
    parser.add_argument("--parent-pid", type=int, required=True, help="the launcher's pid: the task dies with it")
    args = parser.parse_args(argv)
    exit_with_parent(args.parent_pid)
    # SIGTERM from the cluster's shutdown ends the process at once; there is no state to save.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    serve(json.loads(args.cluster), args.job, args.index, args.ready_file)


if __name__ == "__main__":
    main()
