import json, numpy as np
for lam in ("0", "0.5", "1"):
    s = np.array([e["normalized_score"] for k in (0, 1, 2)
                  for e in json.load(open(f"docs/results/full/planner-study/more-episodes/eval20-s{k}-l{lam}.json"))["episodes"]])
    print(f"lambda {lam}: {len(s)} episodes, score {s.mean():.1f} +- {s.std(ddof=1) / np.sqrt(len(s)):.1f}")
