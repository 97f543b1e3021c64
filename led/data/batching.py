"""Batches of tokenised summarization records: padding (`SummarizationCollator`), length-grouped batches sharded
over ranks (`LengthGroupedBatchSampler`), and a DataLoader that resumes inside an epoch (`ResumableDataLoader`).

See docs/CONTRACTS.md ("Batches") for what a batch holds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from led.errors import ConfigError
from led.signals import stop_signals_blocked

log = logging.getLogger(__name__)


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ---------------------------------------------------------------------------------------------- collation
@dataclass
class SummarizationCollator:
    """Pads a list of tokenised examples into the batch dict of docs/CONTRACTS.md.

    `global_attention`: "first" (the `<s>` token), "none", or token ids whose positions get global attention
    in addition to the first token (e.g. section-marker ids); None: batches have no `global_attention_mask` (a
    family without one, PEGASUS-X).
    """

    pad_token_id: int
    pad_to_multiple_of: int = 1
    global_attention: str | tuple[int, ...] | None = "first"

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        source_len = round_up(max(len(e["input_ids"]) for e in examples), self.pad_to_multiple_of)
        target_len = max(len(e["labels"]) for e in examples)
        batch_size = len(examples)
        input_ids = torch.full((batch_size, source_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, source_len), dtype=torch.long)
        labels = torch.full((batch_size, target_len), -100, dtype=torch.long)
        for row, example in enumerate(examples):
            n, t = len(example["input_ids"]), len(example["labels"])
            input_ids[row, :n] = torch.as_tensor(example["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
            labels[row, :t] = torch.as_tensor(example["labels"], dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "ids": torch.tensor([int(e["id"]) for e in examples], dtype=torch.long),
        }
        if self.global_attention is not None:
            batch["global_attention_mask"] = self._global_mask(input_ids, attention_mask)
        return batch

    def _global_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(input_ids)
        if self.global_attention == "none":
            return mask
        if not isinstance(self.global_attention, str):
            marker_ids = torch.tensor(self.global_attention, dtype=torch.long)
            mask = torch.isin(input_ids, marker_ids).long() * attention_mask
        mask[:, 0] = 1  # the first token is always global: its projections then always get gradients (DDP)
        return mask


# ---------------------------------------------------------------------------------------------- sampling
class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length, shuffled, split over data-parallel ranks.

    Training (`shuffle=True`): each epoch the indices are shuffled and cut into mega-batches of
    `mega_batch_mult` batches per rank; each mega-batch is sorted by length (longest first) and cut into
    batches, so padding is small yet batches stay random. With `max_tokens`, a batch takes as many examples as
    fit `count * round_up(longest, pad_to_multiple_of) <= max_tokens` instead of `batch_size`; those batches are
    composed once (from `seed`) and only their order changes per epoch, so every epoch has the same number of
    batches (Lightning sizes progress, validation interval and LR schedule from it).
    With `curriculum_epochs=N`, the first N training epochs run their steps from the shortest to the longest
    instead of in random order (a length curriculum; the batches themselves are composed as above).
    Evaluation (`shuffle=False`): all indices sorted by length, longest first, no randomness.

    Every rank builds the same list of steps (same seed) and takes its own batch of each step.
    With `batch_size`, a step is one global batch of `batch_size * num_replicas` examples cut exactly as one
    process with that batch size would cut it, then split into `num_replicas` consecutive pieces: the ranks'
    batches at step k together are the one-process batch k, so DDP trains step for step like one process
    (with the module's global-token loss). Only an epoch's last, short global batch splits unevenly, and if it
    has fewer examples than ranks, some of them repeat. With `max_tokens`, each rank's batch fills the budget
    and consecutive batches (similar lengths) form a step; the batch list is padded to a multiple of
    `num_replicas` by repeating its first batches.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int = 1,
        *,
        max_tokens: int | None = None,
        pad_to_multiple_of: int = 1,
        shuffle: bool = True,
        group_by_length: bool = True,
        curriculum_epochs: int = 0,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        mega_batch_mult: int = 50,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        if curriculum_epochs < 0:
            raise ConfigError(f"curriculum_epochs={curriculum_epochs} must be >= 0 (0: no length curriculum)")
        self.lengths = [int(n) for n in lengths]
        if max_tokens is not None and self.lengths and max_tokens < round_up(max(self.lengths), pad_to_multiple_of):
            raise ConfigError(
                f"max_tokens={max_tokens} is below the padded length of the longest example "
                f"({round_up(max(self.lengths), pad_to_multiple_of)}); raise it or lower the input length"
            )
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.curriculum_epochs = curriculum_epochs
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0
        self.skip = 0  # batches the next pass leaves out: set by ResumableDataLoader to resume mid-epoch
        self._cache: tuple[int, list[list[list[int]]]] | None = None

    @property
    def sampler(self) -> LengthGroupedBatchSampler:
        # Lightning calls `set_epoch` on `dataloader.batch_sampler.sampler` at every epoch start; pointing it
        # here reshuffles each epoch (and resumes with the right order) without a wrapper sampler.
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._steps()) if self.lengths else 0

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        for step in self._steps()[skip:]:
            yield step[self.rank]

    def _steps(self) -> list[list[list[int]]]:
        """All ranks' batches, one list of `num_replicas` batches per step (memoised per epoch)."""
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        batches = self._batches()
        if not batches:
            return []
        if self.max_tokens is None:
            steps = [self._split(batch) for batch in batches]
        else:
            missing = (-len(batches)) % self.num_replicas
            padded = batches + [batches[i % len(batches)] for i in range(missing)]
            steps = [padded[i : i + self.num_replicas] for i in range(0, len(padded), self.num_replicas)]
        if self.shuffle and self.epoch < self.curriculum_epochs:
            # Length curriculum: the epoch runs from its shortest steps to its longest. A model trained from scratch
            # learns to find and copy facts in short documents far sooner, and keeps the skill as they grow.
            steps.sort(key=lambda step: max(self.lengths[i] for batch in step for i in batch))
        elif self.shuffle:
            order = torch.randperm(len(steps), generator=self._generator(self.epoch + 1_000_003)).tolist()
            steps = [steps[i] for i in order]
        self._cache = (self.epoch, steps)
        return steps

    def _batches(self) -> list[list[int]]:
        """The epoch's batches before sharding (global batches with `batch_size`): identical on every rank."""
        n = len(self.lengths)
        if not self.shuffle:
            order = list(range(n))
            if self.group_by_length:
                order.sort(key=lambda i: -self.lengths[i])
            return self._cut(order)
        # Budget batches are composed once so their count is fixed; fixed-size ones are regrouped each epoch.
        composition_seed = self.seed if self.max_tokens is not None else self.seed + self.epoch
        order = torch.randperm(n, generator=self._generator(composition_seed)).tolist()
        if not self.group_by_length:
            return self._cut(order)
        mega = self.mega_batch_mult * self._examples_per_batch() * self.num_replicas
        batches: list[list[int]] = []
        for start in range(0, n, mega):
            chunk = sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            batches.extend(self._cut(chunk))
        return batches

    def _cut(self, order: list[int]) -> list[list[int]]:
        """Consecutive slices of `order`: `batch_size * num_replicas` each, or filling one rank's token budget."""
        if self.max_tokens is None:
            size = self.batch_size * self.num_replicas
            return [order[i : i + size] for i in range(0, len(order), size)]
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for index in order:
            candidate = max(longest, round_up(self.lengths[index], self.pad_to_multiple_of))
            if current and (len(current) + 1) * candidate > self.max_tokens:
                batches.append(current)
                current, candidate = [], round_up(self.lengths[index], self.pad_to_multiple_of)
            current.append(index)
            longest = candidate
        if current:
            batches.append(current)
        return batches

    def _split(self, batch: list[int]) -> list[list[int]]:
        """A global batch as `num_replicas` consecutive pieces whose sizes differ by at most one; a batch with
        fewer examples than ranks repeats its own examples so that every rank has one (DDP needs every rank
        to step)."""
        world = self.num_replicas
        if len(batch) < world:
            batch = batch + [batch[i % len(batch)] for i in range(world - len(batch))]
        size, extra = divmod(len(batch), world)
        bounds = [rank * size + min(rank, extra) for rank in range(world + 1)]
        return [batch[bounds[rank] : bounds[rank + 1]] for rank in range(world)]

    def _examples_per_batch(self) -> int:
        if self.max_tokens is None:
            return self.batch_size
        mean_len = sum(round_up(n, self.pad_to_multiple_of) for n in self.lengths) / max(1, len(self.lengths))
        return max(1, int(self.max_tokens // max(1.0, mean_len)))

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `LengthGroupedBatchSampler` whose place in the epoch is saved in Lightning checkpoints,
    so a run resumed mid-epoch trains on the batches an uninterrupted run would, not the epoch's first ones again.

    Lightning keeps `state_dict()` of a training loader that has `state_dict`/`load_state_dict` with the fit
    loop's state. The state is the epoch and how many of its batches were handed out; after `load_state_dict`,
    the pass over that same epoch starts after them (the sampler skips them: nothing is loaded for them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._epoch = 0
        self._handed_out = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches) from a checkpoint

    def __iter__(self) -> Iterator[Any]:
        # A generator: this body runs at the first `next`, after Lightning's `set_epoch` for the epoch.
        sampler = self.batch_sampler
        resume_at, self._resume_at = self._resume_at, None
        skip = resume_at[1] if resume_at is not None and resume_at[0] == sampler.epoch else 0
        sampler.skip = skip
        self._epoch, self._handed_out = sampler.epoch, skip
        with stop_signals_blocked(self.num_workers > 0):  # workers start here; SIGTERM is for the main process
            batches = super().__iter__()
        for batch in batches:
            self._handed_out += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._handed_out}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))
