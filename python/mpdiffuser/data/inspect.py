"""What a dataset holds, for `mpdiffuser data inspect`, and conversion between the formats the
readers take, for `mpdiffuser data convert`.

The report names what a user should know before training on a file: episodes and their lengths,
returns and their D4RL score where reference returns exist, how episodes end (terminals against
time limits), every dimension's range, NaN or infinite values, dimensions that never change, and
actions outside the environment's action space. Problems come as warnings, one line each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mpdiffuser.data.dataset import OfflineDataset, load_dataset


def inspect_dataset(data: OfflineDataset, source: str, env_id: str | None = None) -> dict:
    """A report (plain types, JSON-ready) of `data` read from `source`; env_id overrides the
    dataset's own for the score and the action bounds."""
    from mpdiffuser.envs import SCORE_REFERENCES, action_bounds

    env_id = env_id or data.env_id
    lengths = np.array([e.length for e in data.episodes])
    returns = data.returns()
    obs = np.concatenate([e.observations for e in data.episodes])
    act = np.concatenate([e.actions for e in data.episodes])
    report = {
        "source": source, "env_id": env_id, "episodes": len(data.episodes), "transitions": data.num_transitions,
        "state_dim": data.state_dim, "action_dim": data.action_dim, "has_costs": data.has_costs,
        "length": {"min": int(lengths.min()), "mean": float(lengths.mean()), "max": int(lengths.max())},
        "return": {"min": float(returns.min()), "mean": float(returns.mean()), "max": float(returns.max())},
        "terminated": int(sum(e.terminated for e in data.episodes)),
        "ranges": {name: {"low": np.nanmin(v, axis=0).tolist(), "high": np.nanmax(v, axis=0).tolist()}
                   for name, v in (("observations", obs), ("actions", act))},
        "non_finite": {name: int((~np.isfinite(v)).sum()) for name, v in (("observations", obs), ("actions", act))},
        "warnings": [],
    }
    reference = SCORE_REFERENCES.get(env_id) if env_id else None
    if reference is not None:
        report["d4rl_score"] = {k: reference.normalize(report["return"][k]) for k in ("min", "mean", "max")}
    warnings = report["warnings"]
    if reference is None:
        warnings.append(f"no D4RL reference returns for {env_id or 'an unnamed environment'}: returns are raw")
    for name, count in report["non_finite"].items():
        if count:
            warnings.append(f"{count} {name} values are NaN or infinite: training would fail on them")
    if report["terminated"] == 0:
        warnings.append("no episode ends in a terminal state (all time limits): the models never see a fall")
    if len(data.episodes) > 1 and lengths.max() == lengths.min() and report["terminated"] == len(data.episodes):
        warnings.append("every episode is terminal and of one length: were time limits stored as terminals?")
    if env_id != data.env_id:  # --env given: another robot's data, or the wrong --env (train's message)
        data.for_env(env_id)
    low, high = action_bounds(env_id) if env_id else (None, None)
    with np.errstate(invalid="ignore"):
        warnings += data.problems(low, high)
    return report


RANGES_PER_LINE = 6  # dimension ranges per printed line


def format_report(report: dict) -> str:
    """The report as a few lines of text."""
    r = report
    lines = [f"{r['source']}: {r['env_id'] or 'environment not named'}, {r['episodes']} episodes, {r['transitions']} "
             f"transitions (state {r['state_dim']}, action {r['action_dim']}{', costs' if r['has_costs'] else ''})",
             f"  length  min {r['length']['min']}  mean {r['length']['mean']:.1f}  max {r['length']['max']}; "
             f"{r['terminated']} terminated, {r['episodes'] - r['terminated']} cut by a time limit or the data's end",
             f"  return  min {r['return']['min']:.1f}  mean {r['return']['mean']:.1f}  max {r['return']['max']:.1f}"]
    if "d4rl_score" in r:
        s = r["d4rl_score"]
        lines.append(f"  D4RL score  min {s['min']:.1f}  mean {s['mean']:.1f}  max {s['max']:.1f}")
    for name, bounds in r["ranges"].items():
        pairs = [f"[{lo:.3g}, {hi:.3g}]" for lo, hi in zip(bounds["low"], bounds["high"])]
        if len(pairs) <= RANGES_PER_LINE:
            lines.append(f"  {name} ranges: {', '.join(pairs)}")
            continue
        lines.append(f"  {name} ranges ({len(pairs)} dimensions, {RANGES_PER_LINE} a line):")
        for first in range(0, len(pairs), RANGES_PER_LINE):  # index-labelled lines, not one 6000-character line
            chunk = pairs[first:first + RANGES_PER_LINE]
            lines.append(f"    {first:>4}-{first + len(chunk) - 1:<4} {', '.join(chunk)}")
    lines += [f"  warning: {w}" for w in r["warnings"]]
    return "\n".join(lines)


def convert_dataset(source: str, target: str, env_id: str | None = None, layout: str = "d4rl") -> str:
    """Read `source` (.hdf5/.h5, .npz or minari:<id>) and write it as `target` in its format;
    returns what was written. A Minari target needs the environment (env_id or the data's own).
    layout: an HDF5 target's, "d4rl" (one row per transition) or "episodes" (the authors')."""
    data = load_dataset(source)
    if target.startswith("minari:"):
        env = env_id or data.env_id
        if env is None:
            raise ValueError("a Minari dataset names its environment: pass --env")
        data.save_minari(target[len("minari:"):], env)
        return f"minari dataset {target[len('minari:'):]}"
    suffix = Path(target).suffix.lower()
    if layout != "d4rl" and suffix not in (".hdf5", ".h5"):
        raise ValueError(f"--layout {layout} is an HDF5 layout; the target {target} is not an .hdf5/.h5 file")
    if suffix in (".hdf5", ".h5"):
        return str(data.save_hdf5(target, layout))
    if suffix == ".npz":
        return str(data.save_npz(target))
    raise ValueError(f"unknown target '{target}': expected a .hdf5/.h5 or .npz file, or minari:<dataset_id>")
