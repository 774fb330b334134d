import json, re
rows = [("w1", "256 x 3, 30000 steps (baseline)"), ("w10", "256 x 3, 30000 steps, u_0 weight 10"),
        ("s90k", "256 x 3, 90000 steps"), ("l6", "256 x 6, 30000 steps"), ("w512", "512 x 3, 30000 steps"),
        ("w512a10", "512 x 3, 30000 steps, u_0 weight 10")]
print("| planner | train time | one-step u_0 error, k = 10 | sampled u_0 error | sampled x_1 error | u_0 spread within a state | error of the per-state mean |")
print("|---|---:|---:|---:|---:|---:|---:|")
for n, label in rows:
    s = json.load(open(f"docs/results/full/planner-study/spread-{n}.json"))
    log = open(f"runs/aw/train-{n}.log").read()
    t = re.findall(r"planner: \d+ steps, final loss ([\d.]+), (\d+)s", log)[-1]
    k10 = [r for r in s["one_step"] if r["k"] == 10][0]["u0"]
    print(f"| {label} | {t[1]} s | {k10:.3f} | {s['chain']['u0']:.3f} | {s['chain']['x1']:.3f} | {s['spread']['within_state']:.3f} | {s['spread']['mean_error']:.3f} |")
print()
print("| planner | plan u_0 error (lambda 1, N = 1) | N = 1, lambda = 1 | N = 1, lambda = 0 | N = 8, lambda = 1 | N = 8, lambda = 0 |")
print("|---|---:|---:|---:|---:|---:|")
for n, label in rows:
    ae = open(f"docs/results/full/planner-study/action-error-{n}.txt").read()
    e = re.search(r"lambda 1, N = 1\s+RMS error vs the data's action: ([\d.]+)", ae).group(1)
    cells = []
    for N in (1, 8):
        for lam in (1, 0):
            d = json.load(open(f"docs/results/full/planner-study/eval-{n}-N{N}-l{lam}.json"))
            cells.append(f"{d['score_mean']:.1f} +- {d['score_stderr']:.1f}")
    print(f"| {label} | {e} | " + " | ".join(cells) + " |")
