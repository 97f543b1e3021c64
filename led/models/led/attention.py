"""LED encoder self-attention: a sliding window plus global tokens, in time and memory linear in length.

The math (identical to `transformers`' LEDEncoderSelfAttention / Longformer):
  * tokens are pad (mask 0), local (1) or global (2);
  * a local query i attends, with the local `query/key/value` projections, to
      (a) every global token, and
      (b) every token j with |i - j| <= window // 2 that is neither global nor pad
    so a global token inside the window is counted once (through (a));
  * a global query attends to every non-pad token with `query_global` on itself and
    `key_global/value_global` on all tokens; that row replaces its local row;
  * pad queries output zeros (their rows never reach a real token: pad keys are masked everywhere).
Queries are scaled by 1/sqrt(head_dim); softmax runs in fp32 inside the fused kernels.

`transformers` computes (b) with overlapping chunks that materialise a (2w+1)-wide band of scores and do
about twice the needed work. Here the sequence is cut into blocks of `window // 2` queries; block k
attends to key blocks k-1, k, k+1 (1.5x the band, not 2x) plus the global keys, through
`scaled_dot_product_attention` with an additive mask (built once per forward, shared by the layers), so
no score matrix is ever held in memory and no tensor is quadratic in length.

`dense_attention` is the same math written as one masked (L x L) attention: a readable reference for the
tests and for debugging, selected with `LongformerSelfAttention.implementation = "dense"`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class EncoderMasks:
    """Masks of one padded encoder batch, computed once per forward and shared by every layer."""

    is_pad: Tensor  # (B, L) bool
    is_global: Tensor  # (B, L) bool
    global_index: Tensor  # (B, G) long: positions of the global tokens of each row, ascending
    global_valid: Tensor  # (B, G) bool: False for slots beyond a row's own number of global tokens
    # Additive window masks by (block, dtype), built by the first layer that needs one (window_mask).
    _window_masks: dict[tuple[int, torch.dtype], Tensor] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, attention_mask: Tensor, global_attention_mask: Tensor | None) -> EncoderMasks:
        """`attention_mask`: (B, L), 1 token / 0 pad. `global_attention_mask`: (B, L), 1 global, or None."""
        is_pad = attention_mask == 0
        batch = attention_mask.shape[0]
        if global_attention_mask is None:
            is_global = torch.zeros_like(is_pad)
            num_global = 0
        else:
            is_global = (global_attention_mask != 0) & ~is_pad
            # The one host sync of the forward pass: the number of global slots sets tensor shapes.
            # It happens once here, never inside the attention layers.
            num_global = int(is_global.sum(-1).max())
        # A stable descending sort puts each row's global positions first, in ascending order.
        order = torch.sort(is_global.to(torch.int8), dim=-1, descending=True, stable=True).indices
        global_index = order[:, :num_global]
        global_valid = torch.gather(is_global, 1, global_index)
        global_index = global_index.reshape(batch, num_global)
        return cls(is_pad, is_global, global_index, global_valid)

    @property
    def num_global(self) -> int:
        return self.global_index.shape[1]

    def window_mask(self, block: int, dtype: torch.dtype) -> Tensor:
        """The additive (0 / -inf) mask of `blocked_local_attention` with blocks of `block` queries:
        (B * nb, 1, block, 3 * block + G). Built once per forward and shared by every layer with that window:
        given a boolean mask, SDPA would build this in every layer, and keep one copy per layer for backward."""
        key = (block, dtype)
        if key not in self._window_masks:
            self._window_masks[key] = _window_mask(self, block, dtype)
        return self._window_masks[key]


def _window_mask(masks: EncoderMasks, block: int, dtype: torch.dtype) -> Tensor:
    key_ok = ~(masks.is_pad | masks.is_global)  # (B, L): keys reachable through the window
    batch, length = key_ok.shape
    blocks = -(-length // block)
    # Padding: one block of unreachable keys before the first block and after the last one.
    ok_win = F.pad(key_ok, (block, blocks * block - length + block), value=False).unfold(1, 3 * block, block)
    # Query i of a block sits at column i + block of its 3-block key window (key blocks k-1, k, k+1).
    rows = torch.arange(block, device=key_ok.device)[:, None]
    cols = torch.arange(3 * block, device=key_ok.device)[None, :]
    band = (cols - rows - block).abs() <= block  # (b, 3b)
    # Each query may always see itself, so no row is empty (pad rows are zeroed afterwards).
    diagonal = cols == rows + block
    allowed = (band & ok_win[:, :, None, :]) | diagonal  # (B, nb, b, 3b)
    if masks.num_global:
        glob_ok = masks.global_valid[:, None, None, :].expand(-1, blocks, block, masks.num_global)
        allowed = torch.cat([allowed, glob_ok], dim=-1)
    allowed = allowed.reshape(batch * blocks, 1, block, allowed.shape[-1])
    return torch.zeros(allowed.shape, dtype=dtype, device=key_ok.device).masked_fill_(~allowed, -math.inf)


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x: (B, L, ...), index: (B, G) -> (B, G, ...)."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, expanded)


def blocked_local_attention(q: Tensor, k: Tensor, v: Tensor, masks: EncoderMasks, window: int,
                            dropout_p: float) -> Tensor:
    """Sliding-window attention with the global tokens as extra keys.

    q, k, v: (B, L, H, D), projected with the local projections (q not yet scaled).
    Returns (B, L, H, D); rows of global queries are to be replaced by the caller, pad rows are zero.
    """
    batch, length, heads, dim = q.shape
    block = window // 2
    pad = (-length) % block
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    blocks = (length + pad) // block

    q_blocks = q.view(batch, blocks, block, heads, dim).transpose(2, 3)  # (B, nb, H, b, D)

    def windows(t: Tensor) -> Tensor:
        # (B, L, H, D) -> (B, nb, H, 3b, D): key blocks k-1, k, k+1 for every query block k.
        return F.pad(t, (0, 0, 0, 0, block, block)).unfold(1, 3 * block, block).transpose(-1, -2)

    k_win, v_win = windows(k), windows(v)
    if masks.num_global:
        k_glob = _gather_rows(k[:, :length], masks.global_index).permute(0, 2, 1, 3)  # (B, H, G, D)
        v_glob = _gather_rows(v[:, :length], masks.global_index).permute(0, 2, 1, 3)
        k_win = torch.cat([k_win, k_glob[:, None].expand(-1, blocks, -1, -1, -1)], dim=-2)
        v_win = torch.cat([v_win, v_glob[:, None].expand(-1, blocks, -1, -1, -1)], dim=-2)

    keys = k_win.shape[-2]
    out = F.scaled_dot_product_attention(
        q_blocks.reshape(batch * blocks, heads, block, dim),
        k_win.reshape(batch * blocks, heads, keys, dim),
        v_win.reshape(batch * blocks, heads, keys, dim),
        attn_mask=masks.window_mask(block, q.dtype),
        dropout_p=dropout_p,
    )
    out = out.view(batch, blocks, heads, block, dim).transpose(2, 3).reshape(batch, blocks * block, heads, dim)
    return out[:, :length]


def global_query_attention(hidden: Tensor, masks: EncoderMasks, query: nn.Linear, key: nn.Linear,
                           value: nn.Linear, heads: int, dropout_p: float) -> Tensor:
    """Rows of the global tokens: each attends to every non-pad token. Returns (B, G, H, D)."""
    batch, length, d_model = hidden.shape
    dim = d_model // heads
    g = masks.num_global
    q = query(_gather_rows(hidden, masks.global_index)).view(batch, g, heads, dim)
    key_ok = ~masks.is_pad
    # A row with no token at all (an all-pad sequence) would give NaN; let it see everything instead.
    key_ok = key_ok | ~key_ok.any(-1, keepdim=True)
    if _fold_global_projections(hidden, heads, g, dropout_p):
        return _folded_global_attention(hidden, q, key_ok, key, value)
    q = q.transpose(1, 2)
    k = key(hidden).view(batch, length, heads, dim).transpose(1, 2)
    v = value(hidden).view(batch, length, heads, dim).transpose(1, 2)
    mask = key_ok[:, None, None, :].expand(batch, 1, g, length)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return out.transpose(1, 2)


def _fold_global_projections(hidden: Tensor, heads: int, num_global: int, dropout_p: float) -> bool:
    """Whether the global rows attend to the layer input through folded projections (below): without
    gradients (the training path, and led/memory/account.py's account of it, keep the projections), without
    attention dropout, and while it is the cheaper: per token, the projections of keys and values cost
    2 d_model^2 multiply-adds and the folded attention 2 (H - 1) G d_model more than the projected one; folded
    while the latter is under half the former."""
    return (dropout_p == 0.0 and not (torch.is_grad_enabled() and hidden.requires_grad)
            and (heads - 1) * num_global < hidden.shape[-1] // 2)


def _folded_global_attention(hidden: Tensor, q: Tensor, key_ok: Tensor, key: nn.Linear, value: nn.Linear) -> Tensor:
    """The global rows' attention without key_global/value_global of every token: q . (W_k x + b_k) =
    (W_k^T q) . x + q . b_k, whose last term is the same for every key (softmax ignores it), and
    sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v, as the p_j sum to 1. So the H * G queries W_k^T q
    attend to the layer input itself, and W_v maps what they gather: O(L * d_model * H * G) instead of
    O(L * d_model^2); equal up to float rounding. q: (B, G, H, D) global queries, unscaled -> (B, G, H, D)."""
    batch, g, heads, dim = q.shape
    d_model = hidden.shape[-1]
    folded = torch.einsum("bghd,hdk->bhgk", q, key.weight.view(heads, dim, d_model))
    inputs = hidden[:, None]  # (B, 1, L, d_model): one "head" that all H * G queries share
    gathered = F.scaled_dot_product_attention(folded.reshape(batch, 1, heads * g, d_model), inputs, inputs,
                                              attn_mask=key_ok[:, None, None, :], scale=dim**-0.5)
    out = torch.einsum("bhgk,hdk->bghd", gathered.view(batch, heads, g, d_model),
                       value.weight.view(heads, dim, d_model))
    return out + value.bias.view(heads, dim)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, masks: EncoderMasks, window: int) -> Tensor:
    """Reference for `blocked_local_attention`: the same keys per query as one (L x L) masked attention."""
    length = q.shape[1]
    pos = torch.arange(length, device=q.device)
    in_window = (pos[:, None] - pos[None, :]).abs() <= window // 2  # (L, L)
    key_ok = ~(masks.is_pad | masks.is_global)
    mask = (in_window & key_ok[:, None, :]) | masks.is_global[:, None, :]  # (B, L, L)
    mask = mask | torch.eye(length, dtype=torch.bool, device=q.device)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask[:, None])
    return out.transpose(1, 2)


class LongformerSelfAttention(nn.Module):
    """Windowed + global self-attention of one encoder layer (state-dict names as in `transformers`)."""

    implementation: str = "blocked"  # or "dense": the O(L^2) reference, for tests and debugging

    def __init__(self, d_model: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.window = window
        self.dropout = dropout
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.query_global = nn.Linear(d_model, d_model)
        self.key_global = nn.Linear(d_model, d_model)
        self.value_global = nn.Linear(d_model, d_model)

    def forward(self, hidden: Tensor, masks: EncoderMasks) -> Tensor:
        """hidden: (B, L, d_model) -> (B, L, d_model), before the output projection."""
        batch, length, d_model = hidden.shape
        shape = (batch, length, self.heads, d_model // self.heads)
        q, k, v = self.query(hidden).view(shape), self.key(hidden).view(shape), self.value(hidden).view(shape)
        dropout_p = self.dropout if self.training else 0.0
        if self.implementation == "dense":
            out = dense_attention(q, k, v, masks, self.window)
        else:
            out = blocked_local_attention(q, k, v, masks, self.window, dropout_p)
        out = out.reshape(batch, length, d_model)
        if masks.num_global:
            glob = global_query_attention(hidden, masks, self.query_global, self.key_global, self.value_global,
                                          self.heads, dropout_p).reshape(batch, masks.num_global, d_model)
            # Scatter the global rows into place; unused slots go to a scratch row L that is cut off.
            target = torch.where(masks.global_valid, masks.global_index, length)
            placed = hidden.new_zeros(batch, length + 1, d_model).to(glob.dtype)
            placed = placed.scatter(1, target[..., None].expand(-1, -1, d_model), glob)[:, :length]
            out = torch.where(masks.is_global[..., None], placed, out)
        return out.masked_fill(masks.is_pad[..., None], 0.0)


class LEDEncoderAttention(nn.Module):
    """`self_attn` of an encoder layer: Longformer attention then the output projection."""

    def __init__(self, d_model: int, heads: int, window: int, dropout: float):
        super().__init__()
        self.longformer_self_attn = LongformerSelfAttention(d_model, heads, window, dropout)
        self.output = nn.Linear(d_model, d_model)

    def forward(self, hidden: Tensor, masks: EncoderMasks) -> Tensor:
        return self.output(self.longformer_self_attn(hidden, masks))
