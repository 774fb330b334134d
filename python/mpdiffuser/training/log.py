"""Loss logs a user can read: one CSV row every `log_every` steps (the mean over those steps), and
the same values to TensorBoard when the optional `tensorboard` package is installed."""

from __future__ import annotations

import csv
from pathlib import Path


class LossLog:
    """`<directory>/<name>.csv` with columns step, the given value columns, steps_per_s; and
    `<directory>/tensorboard/<name>/` when tensorboard is importable and `tensorboard` is true.
    A resumed run first drops the rows past its checkpoint, so the log has each step once."""

    def __init__(self, directory: str | Path, name: str, columns: list[str], tensorboard: bool = True):
        self.path = Path(directory) / f"{name}.csv"
        self.columns = ["step", *columns, "steps_per_s"]
        self.name = name
        self._tb_dir = Path(directory) / "tensorboard" / name if tensorboard else None
        self._file = self._writer = self._tb = None

    def resume(self, step: int) -> None:
        """Open for writing after `step` (0: a fresh log)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if step > 0 and self.path.exists():
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames == self.columns:
                    kept = [row for row in reader if int(row["step"]) <= step]
        self._file = self.path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, self.columns)
        self._writer.writeheader()
        self._writer.writerows(kept)
        self._file.flush()
        if self._tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the optional extra is not installed: the CSV is the log
                self._tb = None
            else:
                self._tb = SummaryWriter(str(self._tb_dir), purge_step=step + 1 if step else None)

    def write(self, step: int, values: dict[str, float], steps_per_s: float) -> None:
        unknown = set(values) - set(self.columns)
        if unknown:
            raise KeyError(f"log {self.path}: no column for {sorted(unknown)}")
        self._writer.writerow({"step": step, **{k: f"{v:.6g}" for k, v in values.items()},
                               "steps_per_s": f"{steps_per_s:.4g}"})
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"{self.name}/{key}", value, step)
            self._tb.add_scalar(f"{self.name}/steps_per_s", steps_per_s, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The rows of a CSV loss log as numbers (empty cells: NaN)."""
    with Path(path).open(newline="") as f:
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]
