"""Training around the model library: the LightningModule, optimisation, callbacks, loggers, checkpoints and resume,
multi-process strategies, sweeps. No entry points: `led.recipes.train` composes these."""
