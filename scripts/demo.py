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

# A real, if small, training run: Keras 3 (torch backend) fitting a classifier
# on synthetic data, with autologging on, as a user's script would.
TRAINING = r'''
import numpy as np, keras, runai.reporter.keras

rng = np.random.default_rng(0)
x = rng.normal(size=(4096, 16)).astype("float32")
y = (x[:, :4].sum(axis=1) + 0.3 * rng.normal(size=4096) > 0).astype("float32")
model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=100, decay_rate=0.7)
model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy", metrics=["accuracy"])

with runai.reporter.keras.Reporter(autolog=True) as reporter:
    model.fit(x, y, batch_size=64, epochs=8, validation_split=0.2, verbose=2)
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
        env = dict(os.environ, KERAS_BACKEND="torch", podUUID="demo-pod", reporterGatewayURL=address,
                   reporterSpoolDir=os.path.join(work, "spool"))
        print("==> training a small Keras model with runai.reporter.keras autologging")
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
