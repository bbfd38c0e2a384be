"""The demo: a local Pushgateway, a small training run that reports to it, and what arrived.

Run through ``scripts/demo.sh``, which installs what it needs first.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# A real, if small, training run: logistic regression by gradient descent on
# synthetic data, reporting as a training script would.
TRAINING = r'''
import math, random, runai.reporter

random.seed(0)
points = [(random.gauss(0, 1), random.gauss(0, 1)) for _ in range(2000)]
data = [((x, y), 1.0 if x + 0.5 * y > 0.2 else 0.0) for x, y in points]
w, b, lr, batch = [0.0, 0.0], 0.0, 0.5, 100

with runai.reporter.Reporter() as reporter:
    reporter.reportParameter("optimizer_name", "SGD")
    reporter.reportParameter("learning_rate", lr)
    reporter.reportMetric("batch_size", batch)
    reporter.reportMetric("overall_epochs", 20)
    for epoch in range(20):
        reporter.reportMetric("epoch", epoch)
        for step in range(len(data) // batch):
            chunk = data[step * batch:(step + 1) * batch]
            gw, gb, loss, correct = [0.0, 0.0], 0.0, 0.0, 0
            for (x, y), label in chunk:
                p = 1 / (1 + math.exp(-(w[0] * x + w[1] * y + b)))
                loss -= label * math.log(p + 1e-12) + (1 - label) * math.log(1 - p + 1e-12)
                correct += (p > 0.5) == (label == 1.0)
                gw[0] += (p - label) * x; gw[1] += (p - label) * y; gb += p - label
            w = [w[0] - lr * gw[0] / batch, w[1] - lr * gw[1] / batch]
            b -= lr * gb / batch
            reporter.reportMetric("step", step)
            reporter.reportMetric("loss", loss / batch)
            reporter.reportMetric("accuracy", correct / batch)
        print(f"epoch {epoch:2d}  loss {loss / batch:.4f}  accuracy {correct / batch:.2f}")
    print("finish() delivered everything:", reporter.finish())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the Pushgateway exited at start")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the Pushgateway did not become ready")


def main() -> int:
    binary = shutil.which("prometheus-pushgateway")
    if not binary:
        print("prometheus-pushgateway is not installed; run scripts/demo.sh", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="runai-demo-")
    address = f"127.0.0.1:{free_port()}"
    url = f"http://{address}"
    print(f"==> starting a Pushgateway on {address}")
    gateway = subprocess.Popen([binary, f"--web.listen-address={address}", "--persistence.file="],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, gateway)
        env = dict(os.environ, podUUID="demo-pod", reporterGatewayURL=address,
                   reporterSpoolDir=os.path.join(work, "spool"))
        print("==> training a small model that reports through runai.reporter")
        subprocess.run([sys.executable, "-c", TRAINING], env=env, check=True)

        print(f"\n==> what arrived on the gateway ({url}/metrics, the reporter's series):")
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("reporter_push_gateway_"):
                    print("   ", line)
        with urllib.request.urlopen(url + "/api/v1/metrics", timeout=5) as r:
            groups = json.load(r)["data"]
        pushed = [g for g in groups if g["labels"].get("podUUID") == "demo-pod"]
        print(f"\n==> group job=reporter_pod_info podUUID=demo-pod present: {bool(pushed)}")

        pod_dir = os.path.join(work, "spool", "demo-pod")
        print(f"\n==> the local spool in {pod_dir} (every report, kept for recovery):")
        for name in sorted(os.listdir(pod_dir)):
            print(f"    {name:28s} {os.path.getsize(os.path.join(pod_dir, name)):>9d} bytes")
        return 0 if pushed else 1
    finally:
        gateway.terminate()
        gateway.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        print("\n==> stopped the Pushgateway and removed the demo's files")


if __name__ == "__main__":
    sys.exit(main())
