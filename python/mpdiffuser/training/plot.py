"""Training a user can watch: one PNG per model of a bundle from its CSV loss log (training.log),
with the loss (and the planner's first-action loss), the validation columns when the run validated,
the closed-loop return when it evaluated (--eval-every), and the steps per second."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpdiffuser.training.log import read_log


def plot_training(bundle_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Plots of every `<bundle>/logs/<model>.csv` (fine-tuning logs too) into `out_dir` (default
    `<bundle>/plots`); returns the PNG paths. FileNotFoundError when the bundle has no log."""
    from mpdiffuser.experiments.common import pyplot

    logs = sorted((Path(bundle_dir) / "logs").glob("*.csv"))
    if not logs:
        raise FileNotFoundError(f"{bundle_dir} has no training logs (logs/<model>.csv): train it first")
    out = Path(out_dir) if out_dir is not None else Path(bundle_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    written = []
    for log in logs:
        rows = read_log(log)
        if not rows:
            continue
        column = lambda name: np.array([r.get(name, np.nan) for r in rows])  # noqa: E731
        step = column("step")
        losses = [c for c in rows[0] if c.endswith("loss") and not c.startswith("val_")]
        checks = [c for c in rows[0] if c.startswith("val_")]
        scores = [c for c in ("eval_return",) if c in rows[0]]  # closed-loop evaluation (--eval-every)
        panels = [("training loss", losses, True)] + ([("validation", checks, True)] if checks else []) \
            + ([("closed-loop return", scores, False)] if scores else []) + [("steps per second", ["steps_per_s"], False)]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
        for ax, (title, names, log_scale) in zip(np.atleast_1d(axes), panels):
            for name in names:
                values = column(name)
                seen = np.isfinite(values)
                if seen.any():
                    ax.plot(step[seen], values[seen], label=name)
            if log_scale and all((column(n)[np.isfinite(column(n))] > 0).all() for n in names):
                ax.set_yscale("log")
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        fig.suptitle(f"{Path(bundle_dir).name}: {log.stem}", fontsize=10)
        fig.tight_layout()
        path = out / f"{log.stem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
