"""Learning-rate schedules: a linear warmup, then a decay. Each is the multiplier of the base lr at each optimizer
step, for `torch.optim.lr_scheduler.LambdaLR`.

`conf/scheduler/<name>.yaml` names one of these with `_partial_: true`; `LEDSummarizer.configure_optimizers` calls it
with `total_steps` (the Trainer's estimate of the run's optimizer steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from led.errors import ConfigError

Schedule = Callable[[int], float]


def linear(total_steps: int, warmup_steps: int | None = None, warmup_ratio: float | None = None,
           min_lr_ratio: float = 0.0) -> Schedule:
    """Linear warmup, then linear decay to `min_lr_ratio` x lr at the last step."""
    return _warmup_then(total_steps, warmup_steps, warmup_ratio, min_lr_ratio, lambda progress: 1.0 - progress)


def cosine(total_steps: int, warmup_steps: int | None = None, warmup_ratio: float | None = None,
           min_lr_ratio: float = 0.0) -> Schedule:
    """Linear warmup, then cosine decay to `min_lr_ratio` x lr at the last step."""
    return _warmup_then(total_steps, warmup_steps, warmup_ratio, min_lr_ratio,
                        lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)))


def constant(total_steps: int, warmup_steps: int | None = None, warmup_ratio: float | None = None) -> Schedule:
    """Linear warmup, then the base lr."""
    return _warmup_then(total_steps, warmup_steps, warmup_ratio, 1.0, lambda progress: 1.0)


def _warmup_then(total_steps: int, warmup_steps: int | None, warmup_ratio: float | None, min_lr_ratio: float,
                 decay: Callable[[float], float]) -> Schedule:
    """`warmup_steps` (or `warmup_ratio` x total_steps) steps rising linearly to the base lr, then
    `min_lr_ratio + (1 - min_lr_ratio) * decay(progress)`, progress going from 0 to 1 over the remaining steps."""
    if warmup_steps is not None and warmup_ratio is not None:
        raise ConfigError(f"scheduler.warmup_steps={warmup_steps} and warmup_ratio={warmup_ratio} are both given: "
                          "set scheduler.warmup_steps or scheduler.warmup_ratio, not both (the other null)")
    warmup = int(warmup_steps if warmup_steps is not None else round((warmup_ratio or 0.0) * total_steps))
    if warmup < 0:
        given = f"warmup_steps={warmup_steps}" if warmup_steps is not None else f"warmup_ratio={warmup_ratio}"
        raise ConfigError(f"scheduler.{given} is not valid: the warmup must be >= 0 steps")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"scheduler.min_lr_ratio={min_lr_ratio} is not valid: it must be in [0, 1]")
    total = max(total_steps, warmup + 1)

    def multiplier(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay(progress)

    return multiplier
