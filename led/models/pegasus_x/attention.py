"""PEGASUS-X encoder self-attention: block-local attention plus learned global tokens, linear in length.

The math (identical to `transformers`' PegasusXGlobalLocalAttention):
  * the token sequence (padded to a multiple of `block_size`) is cut into blocks of `block_size` tokens;
  * a token query attends, in one softmax, to [all G global tokens; the non-pad tokens of its own block];
  * a global query attends, in one softmax, to [all G global tokens; every non-pad token];
  * both streams use the same q/k/v/out projections (no biases); queries are scaled by 1/sqrt(head_dim).
There is always at least one global key (num_global_tokens >= 1), so no row is empty and pad queries (whose
outputs are cut off at the end) still get finite values, as in `transformers`.

`transformers` materialises the (block x (G + block)) scores per block with einsums. Here each block is one
row of a batched `scaled_dot_product_attention` call, (B * blocks, H, block, D) queries against
(B * blocks, H, G + block, D) keys, and the global rows are one more call: the fused kernels keep the softmax
in fp32 (also under bf16 autocast), the flash / memory-efficient kernels on GPU never hold the scores, and no
shape depends on the data (no host sync).

`dense_attention` is the same math as one masked ((G + L) x (G + L)) attention: a readable reference for the
tests and for debugging, selected with `PegasusXGlobalLocalAttention.implementation = "dense"`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def blocked_attention(q: Tensor, k: Tensor, v: Tensor, key_ok: Tensor, num_global: int, block: int,
                      dropout_p: float) -> Tensor:
    """q, k, v: (B, H, G + L, D), the G global rows first; key_ok: (B, L) bool, False for pad tokens; L a
    multiple of `block`. Returns (B, H, G + L, D)."""
    batch, heads, total, dim = q.shape
    length = total - num_global
    blocks = length // block
    q_glob, q_tok = q.split([num_global, length], dim=2)
    k_glob, k_tok = k.split([num_global, length], dim=2)
    v_glob, v_tok = v.split([num_global, length], dim=2)
    # Global keys are never masked; pad tokens are, everywhere.
    all_ok = F.pad(key_ok, (num_global, 0), value=True)  # (B, G + L)

    # Global rows: every global and every non-pad token.
    glob_out = F.scaled_dot_product_attention(q_glob, k, v, attn_mask=all_ok[:, None, None, :],
                                              dropout_p=dropout_p)  # (B, H, G, D)

    # Token rows: block b of every row becomes batch row (B * blocks), keys [globals; block b].
    def blocked(t: Tensor) -> Tensor:  # (B, H, L, D) -> (B * nb, H, block, D)
        return t.view(batch, heads, blocks, block, dim).transpose(1, 2).reshape(batch * blocks, heads, block, dim)

    def with_globals(glob: Tensor, tok: Tensor) -> Tensor:  # -> (B * nb, H, G + block, D)
        glob = glob[:, None].expand(batch, blocks, heads, num_global, dim).reshape(batch * blocks, heads,
                                                                                    num_global, dim)
        return torch.cat([glob, blocked(tok)], dim=2)

    block_ok = F.pad(key_ok.view(batch * blocks, block), (num_global, 0), value=True)  # (B * nb, G + block)
    tok_out = F.scaled_dot_product_attention(blocked(q_tok), with_globals(k_glob, k_tok),
                                             with_globals(v_glob, v_tok), attn_mask=block_ok[:, None, None, :],
                                             dropout_p=dropout_p)  # (B * nb, H, block, D)
    tok_out = tok_out.view(batch, blocks, heads, block, dim).transpose(1, 2).reshape(batch, heads, length, dim)
    return torch.cat([glob_out, tok_out], dim=2)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, key_ok: Tensor, num_global: int, block: int) -> Tensor:
    """Reference for `blocked_attention`: the same keys per query as one ((G + L) x (G + L)) masked attention."""
    length = key_ok.shape[1]
    is_global = torch.arange(num_global + length, device=q.device) < num_global
    block_id = (torch.arange(num_global + length, device=q.device) - num_global).div(block, rounding_mode="floor")
    all_ok = F.pad(key_ok, (num_global, 0), value=True)  # (B, G + L)
    same_block = block_id[:, None] == block_id[None, :]
    sees = is_global[:, None] | is_global[None, :] | same_block  # (G + L, G + L): query row, key column
    mask = sees[None] & all_ok[:, None, :]  # (B, G + L, G + L)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])


class PegasusXGlobalLocalAttention(nn.Module):
    """`self_attn` of an encoder layer (state-dict names as in `transformers`): q/k/v/out shared by the token
    and global streams, without biases."""

    implementation: str = "blocked"  # or "dense": the O(L^2) reference, for tests and debugging

    def __init__(self, d_model: int, heads: int, block_size: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.block_size = block_size
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, tokens: Tensor, globals_: Tensor, key_ok: Tensor) -> tuple[Tensor, Tensor]:
        """tokens: (B, L, d_model), L a multiple of block_size; globals_: (B, G, d_model); key_ok: (B, L) bool.
        Returns the attention outputs of both streams, after out_proj: (B, L, d_model), (B, G, d_model)."""
        batch, length, d_model = tokens.shape
        num_global = globals_.shape[1]
        # One projection of both streams: the weights are shared and every row is projected alike.
        x = torch.cat([globals_, tokens], dim=1)  # (B, G + L, d_model)
        shape = (batch, num_global + length, self.heads, d_model // self.heads)
        q, k, v = (proj(x).view(shape).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))
        if self.implementation == "dense":
            out = dense_attention(q, k, v, key_ok, num_global, self.block_size)
        else:
            dropout_p = self.dropout if self.training else 0.0
            out = blocked_attention(q, k, v, key_ok, num_global, self.block_size, dropout_p)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, num_global + length, d_model))
        return out[:, num_global:], out[:, :num_global]
