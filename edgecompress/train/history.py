"""What a training run records: one row per epoch (mean loss, learning rate, seconds, validation metrics where
measured), the validation of the starting weights and which weights were kept, and the ``train.csv`` of those rows."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import write_text

# train.csv's first columns, then one column per validation metric (e.g. map50, map50_95)
CSV_COLUMNS = ("epoch", "loss", "lr", "seconds")


@dataclass
class EpochRecord:
    """One epoch: its number (from 1), mean training loss, the learning rate of its last step (the first parameter
    group's), training seconds, and the validation metrics of the weights it ended with (empty when not measured)."""

    epoch: int
    loss: float
    lr: float
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The record as one flat row: ``epoch``, ``loss``, ``lr``, ``seconds``, then the metrics."""
        return {"epoch": self.epoch, "loss": round(self.loss, 5), "lr": self.lr, "seconds": round(self.seconds, 2), **self.metrics}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochRecord:
        return cls(int(data["epoch"]), float(data["loss"]), float(data["lr"]), float(data["seconds"]),
                   {name: float(value) for name, value in data.get("metrics", {}).items()})


@dataclass
class TrainHistory:
    """Every epoch's record and the epoch training resumed from (0 for a fresh start). With validation, also the
    metrics of the weights training started from (``start_metrics``) and, when the best weights were kept,
    ``kept_epoch``: the epoch whose weights the model ends with (0: the starting weights)."""

    epochs: list[EpochRecord] = field(default_factory=list)
    resumed_from_epoch: int = 0
    start_metrics: dict[str, float] = field(default_factory=dict)
    kept_epoch: int | None = None

    @property
    def epoch_losses(self) -> list[float]:
        return [record.loss for record in self.epochs]

    def metrics_of(self, epoch: int) -> dict[str, float]:
        """The validation metrics of the weights of ``epoch`` (0: those training started from)."""
        return self.start_metrics if epoch == 0 else self.epochs[epoch - 1].metrics

    def kept_metrics(self) -> dict[str, float]:
        """The validation metrics of the weights the model ended with, when the best were kept."""
        return self.metrics_of(self.kept_epoch)

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per epoch (:meth:`EpochRecord.row`), for a manifest."""
        return [record.row() for record in self.epochs]

    def plain(self) -> list[dict[str, Any]]:
        """The records as plain data, for a checkpoint."""
        return [asdict(record) for record in self.epochs]


def write_train_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """``train.csv``: one line per epoch, the columns of :data:`CSV_COLUMNS` then every metric any row has."""
    metrics = list(dict.fromkeys(name for row in rows for name in row if name not in CSV_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*CSV_COLUMNS, *metrics], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
    return path
