"""Tiny experiment sizes for the end-to-end tests: seconds each."""

TINY = dict(policy_steps=400, task_transitions=800, random_transitions=500, train_steps=60, ranker_steps=40,
            episodes=2, max_steps=80)
