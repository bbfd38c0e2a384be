"""A stand-in for a training loop, reporting as a real one would: docs/quickstart.md runs it.

It reports a parameter, the loss and the global step every step, and a
validation loss every 20 steps, then waits for delivery with finish().
"""

import argparse
import math
import random
import time

import runai.reporter


def main() -> None:
    parser = argparse.ArgumentParser(description="A stand-in training loop that reports through runai.reporter.")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default: 200)")
    args = parser.parse_args()
    rng = random.Random(0)
    reporter = runai.reporter.Reporter()
    reporter.reportParameter("optimizer", "adam")
    for step in range(1, args.steps + 1):
        time.sleep(0.01)  # the step's work
        reporter.reportMetric("loss", 2.0 * math.exp(-step / 50) + 0.1 * rng.random())
        reporter.reportMetric("global_step", step)
        if step % 20 == 0:
            reporter.reportMetric("val_loss", 2.2 * math.exp(-step / 60) + 0.15)
    print(f"finish() returned {reporter.finish()}")  # True: delivered (or, with no receiver, kept)


if __name__ == "__main__":
    main()
