import json, sys, numpy as np
def load(dirs):
    eps = []
    for d in dirs:
        eps += json.load(open(f"{d}/locomotion.json"))["episodes"]
    return eps
P = "docs/results/full/planner-study/"
wide = {"512, weight 1 (seeds 0, 1)": [P + "hopper-w512-s0", P + "hopper-w512-s1"]}
weak = {"weak data, 256, weight 1": [P + "hopper-weak-base"], "weak data, 512, u_0 weight 10": [P + "hopper-weak-w512a10"]}
groups = {"256, weight 1 (baseline)": ["docs/results/full/planner-study/hopper-base"], "256, u_0 weight 10": ["docs/results/full/planner-study/hopper-aw10"],
          "512, u_0 weight 10": ["docs/results/full/planner-study/hopper-w512a10-s01", "docs/results/full/planner-study/hopper-w512a10-s2"]}
for name, dirs in (groups | wide | weak).items():
    try: eps = load(dirs)
    except FileNotFoundError: print(name, "missing"); continue
    cells = []
    for m in ("MPDiffuser", "planner only (lambda=0)", "behaviour cloning"):
        s = np.array([e["score"] for e in eps if e["method"] == m]); L = np.mean([e["length"] for e in eps if e["method"] == m])
        per_seed = [np.mean([e["score"] for e in eps if e["method"] == m and e["seed"] == k]) for k in (0, 1, 2) if any(e["seed"] == k for e in eps)]
        cells.append(f"{s.mean():.1f} +- {s.std(ddof=1)/np.sqrt(len(s)):.1f} [{', '.join(f'{v:.1f}' for v in per_seed)}] ({L:.0f})")
    print(f"| {name} | " + " | ".join(cells) + f" |  n={len(s)}")
