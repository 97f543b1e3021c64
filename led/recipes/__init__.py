"""What the entry points run: `train(cfg)` (train.py) and `evaluate(cfg)` (evaluate.py), each a plain function of the
Hydra config that tests can call."""
