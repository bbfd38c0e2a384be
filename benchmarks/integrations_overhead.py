"""Lightning and Transformers integration overhead: training with and without them, in the same run.

    python benchmarks/integrations_overhead.py [--quick] [--only lightning|transformers]

For each framework, training runs alternate between the rows (so drift in
machine load hits every row alike), 15 runs each (5 with --quick):

- Lightning: ``fit`` with no logger, with a no-op ``Logger`` (Lightning's own
  cost of logging every step), and with ``RunaiLogger``, ``log_every_n_steps=1``.
- Transformers: ``train`` without and with ``RunaiCallback``, ``logging_steps=1``.

Every step reports, the worst case. Prints the medians and their ratios, the
integration's own CPU per step (``time.thread_time`` around its hooks, on the
training thread) as a share of a step, and the time ``finish()`` took at the
end of each run, which the fit time includes. Starts its own Pushgateway on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from harness import Pushgateway  # noqa: E402

TARGET = 1.02


class _Clock:
    """CPU seconds spent inside the integration's hooks, and the steps and finishes seen."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.steps = 0
        self.finishes: list[float] = []  # wall seconds of finish() in each run

    def timed(self, call: Callable[[], Any], steps: int = 0) -> None:
        t0 = time.thread_time()
        call()
        self.cpu += time.thread_time() - t0
        self.steps += steps

    def finishing(self, call: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        call()
        self.finishes.append(time.perf_counter() - t0)


def _timed_hook(clock: _Clock, hook: Callable[..., Any], steps: int) -> Callable[..., None]:
    def timed(*args: Any, **kwargs: Any) -> None:
        clock.timed(lambda: hook(*args, **kwargs), steps=steps)

    return timed


def _alternate(makers: dict[str, Callable[[], Callable[[], Any]]], runs: int) -> dict[str, list[float]]:
    """{row: wall seconds of each run}; each maker builds a run (untimed) and returns it."""
    times: dict[str, list[float]] = {label: [] for label in makers}
    rows = list(makers.items())
    for i in range(runs):  # the order alternates, so no row always runs first
        for label, make in rows if i % 2 == 0 else rows[::-1]:
            run = make()
            t0 = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - t0)
    return times


def lightning(settings: dict[str, str], runs: int) -> tuple[dict[str, list[float]], _Clock, int]:
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import Logger
    from torch import nn

    from runai.reporter.lightning import RunaiLogger

    clock = _Clock()

    class Timed(RunaiLogger):
        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            clock.timed(lambda: super(Timed, self).log_metrics(metrics, step))

        def log_graph(self, model: Any, input_array: Any = None) -> None:
            clock.timed(lambda: super(Timed, self).log_graph(model, input_array))
            # The loop's hooks the logger added to the trainer's callbacks: timed too, a step per batch.
            for callback in model.trainer.callbacks:
                if type(callback).__name__ == "_Hooks" and "on_train_batch_end" not in vars(callback):
                    for hook in ("on_train_epoch_start", "on_train_batch_end", "on_train_epoch_end"):
                        setattr(
                            callback,
                            hook,
                            _timed_hook(clock, getattr(callback, hook), steps=int(hook == "on_train_batch_end")),
                        )

        def finalize(self, status: str) -> None:
            clock.finishing(lambda: super(Timed, self).finalize(status))

    class Noop(Logger):
        name, version = "noop", "0"

        def log_metrics(self, metrics: Any, step: Any = None) -> None:
            pass

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 1))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            loss = nn.functional.binary_cross_entropy_with_logits(self.net(x).squeeze(-1), y)
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    x = torch.rand(16384, 64, generator=torch.Generator().manual_seed(0))
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x.mean(1) > 0.5).float()), batch_size=64)
    steps = len(data)

    def fit(logger: Any) -> Callable[[], Any]:
        trainer = pl.Trainer(
            max_epochs=1,
            logger=logger,
            log_every_n_steps=1,
            accelerator="cpu",
            devices=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        model = Model()
        return lambda: trainer.fit(model, data)

    fit(False)()  # warm-up: first-call costs hit no row
    times = _alternate(
        {
            "Lightning, no logger": lambda: fit(False),
            "Lightning, a no-op Logger (Lightning's own logging)": lambda: fit(Noop()),
            "Lightning, RunaiLogger": lambda: fit(Timed(**settings)),
        },
        runs,
    )
    return times, clock, steps


def transformers(settings: dict[str, str], runs: int, work: str) -> tuple[dict[str, list[float]], _Clock, int]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PrinterCallback, Trainer, TrainingArguments

    from runai.reporter.transformers import RunaiCallback

    clock = _Clock()

    class Timed(RunaiCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            clock.timed(lambda: super(Timed, self).on_log(args, state, control, logs=logs, **kwargs))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.timed(lambda: super(Timed, self).on_step_end(args, state, control, **kwargs), steps=1)

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.finishing(lambda: super(Timed, self).on_train_end(args, state, control, **kwargs))

    samples, batch = 2048, 16
    ids = torch.randint(0, 128, (samples, 32), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": ids[i], "labels": ids[i].sum() % 2} for i in range(samples)]
    config = BertConfig(
        vocab_size=128,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=32,
        num_labels=2,
    )

    def train(callbacks: list[Any]) -> Callable[[], Any]:
        args = TrainingArguments(
            output_dir=os.path.join(work, "hf"),
            num_train_epochs=1,
            logging_steps=1,
            per_device_train_batch_size=batch,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = Trainer(
            model=BertForSequenceClassification(config), args=args, train_dataset=dataset, callbacks=callbacks
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log entry: not what is measured
        return trainer.train

    train([])()  # warm-up
    times = _alternate(
        {
            "Transformers, no callback": lambda: train([]),
            "Transformers, RunaiCallback": lambda: train([Timed(**settings)]),
        },
        runs,
    )
    return times, clock, samples // batch


def _table(times: dict[str, list[float]], clock: _Clock, steps: int, runs: int) -> list[str]:
    (base_label, base), (label, logged) = next(iter(times.items())), list(times.items())[-1]
    base_median = statistics.median(base)
    lines = [f"\n{base_label.split(',')[0] + ': ' + str(steps) + ' steps per run':56s}  {'median':>16s}  {'min':>16s}"]
    for row, xs in times.items():
        lines.append(
            f"{row:56s}  {statistics.median(xs):7.3f}s {statistics.median(xs) / base_median:6.3f}x  "
            f"{min(xs):7.3f}s {min(xs) / min(base):6.3f}x"
        )
    ratio = statistics.median(logged) / base_median
    lines.append(
        f"overhead of {label.split(', ')[1]} (ratio of medians): {ratio:.4f}x, target <= {TARGET}x; {runs} runs each"
    )
    per_step = clock.cpu / max(1, clock.steps)
    share = per_step / (base_median / steps) * 100
    lines.append(
        f"its own CPU per step: {per_step * 1e6:.0f} us = {share:.2f}% of a step (target <= 2%), on the training thread"
    )
    if len(clock.finishes) == len(logged):  # the same run's finish(), which waits for the gateway
        less = [t - f for t, f in zip(logged, clock.finishes, strict=True)]
        lines.append(
            f"{label + ', less its finish()':56s}  {statistics.median(less):7.3f}s "
            f"{statistics.median(less) / base_median:6.3f}x  {min(less):7.3f}s {min(less) / min(base):6.3f}x"
        )
        lines.append(
            f"finish() at the end of a run (delivery included): median "
            f"{statistics.median(clock.finishes) * 1e3:.0f} ms, once per run, in the run's time above"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs per row instead of 15")
    parser.add_argument("--only", choices=("lightning", "transformers"))
    args = parser.parse_args(argv)
    runs = 5 if args.quick else 15
    import torch

    torch.set_num_threads(1)  # steadier on a shared machine; the same for every row
    with tempfile.TemporaryDirectory(prefix="runai-integrations-bench-") as work:
        gateway = Pushgateway(work).start()
        try:
            settings = {"pod_uuid": "integrations-bench", "gateway_url": gateway.address, "spool_dir": work}
            lines: list[str] = []
            if args.only in (None, "lightning"):
                lines += _table(*lightning(settings, runs), runs)
            if args.only in (None, "transformers"):
                lines += _table(*transformers(settings, runs, work), runs)
        finally:
            gateway.stop()
    print("\n".join(lines))
    return 0


def rows(quick: bool) -> list[tuple[str, str, str]]:
    """benchmarks/run.py's rows, from this script in its own process (the frameworks are heavy)."""
    try:
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *(["--quick"] if quick else [])],
            capture_output=True,
            text=True,
            timeout=1200,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [("Lightning / Transformers integrations", f"not measured ({exc})", f"<= {TARGET}x")]
    found = []
    for line in out.splitlines():
        if line.startswith("overhead of "):
            what, ratio = line.split(" (ratio of medians): ")
            found.append(
                (f"{what[len('overhead of ') :]} with/without (every step)", ratio.split(",")[0], f"<= {TARGET}x")
            )
        elif line.startswith("its own CPU per step"):
            found.append(("  its own CPU per step", line.split(": ", 1)[1].split(" (target")[0], "<= 2% of a step"))
    return found


if __name__ == "__main__":
    sys.exit(main())
