"""What the Lightning tests share: a tiny module and its data (the same source the subprocesses run), and
the reports."""

from __future__ import annotations

from typing import Any

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

from tests._helpers import spool_records  # noqa: E402

SAMPLES, BATCH, EPOCHS = 64, 16, 2

STEPS = SAMPLES // BATCH

# The module and data, shared by this process's tests and the subprocesses' scripts.
MODULE = """
import torch
from torch import nn

def make_module(base):
    class Tiny(base):
        def __init__(self, lr=0.05, hidden=8, opt=None, fail_at=-1):
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 1))

        def training_step(self, batch, batch_idx):
            if self.global_step == self.hparams.fail_at:
                raise RuntimeError("the model broke")
            x, y = batch
            loss = nn.functional.mse_loss(self.net(x).squeeze(-1), y)
            self.log("train/loss", loss, on_step=False, on_epoch=True)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
    return Tiny

def loader(samples=64, batch=16):
    x = torch.rand(samples, 4, generator=torch.Generator().manual_seed(0))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1)), batch_size=batch)

QUIET = dict(accelerator="cpu", log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
             enable_model_summary=False)
"""

_ns: dict[str, Any] = {}

exec(MODULE, _ns)  # noqa: S102  # the same source the subprocesses run

Tiny = _ns["make_module"](pl.LightningModule)

loader, QUIET = _ns["loader"], _ns["QUIET"]


def records(pod_dir: str, name: str, kind: str = "metric") -> list[Any]:
    return [r.value for r in spool_records(pod_dir) if r.name == name and r.kind == kind]
