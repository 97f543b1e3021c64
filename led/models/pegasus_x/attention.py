"""PEGASUS-X encoder self-attention: block-local attention plus learned global tokens, linear in length.

The math (identical to `transformers`' PegasusXGlobalLocalAttention):
  * the token sequence (padded to a multiple of `block_size`) is cut into blocks of `block_size` tokens;
  * a token query attends, in one softmax, to [all G global tokens; the non-pad tokens of its own block];
  * a global query attends, in one softmax, to [all G global tokens; every non-pad token];
  * both streams use the same q/k/v/out projections (no biases); queries are scaled by 1/sqrt(head_dim).
There is always at least one global key (num_global_tokens >= 1), so no row is empty and pad queries (whose
outputs are cut off at the end) still get finite values, as in `transformers`.

`transformers` materialises the (block x (G + block)) scores per block with einsums. Here the keys and values
are laid out once as (B, blocks, G + block, H, D): every block's keys after a copy of the G global keys. That
one buffer serves both `scaled_dot_product_attention` calls without another copy:
  * token rows: block b is batch row b, queries (B * blocks, H, block, D) against its (G + block) keys;
  * global rows: the whole buffer is one key sequence of blocks * (G + block) keys, in which the copies of the
    global keys in blocks 1.. are masked (each global key is seen once, as in one softmax over [globals; tokens]).
The fused kernels keep the softmax in fp32 (also under bf16 autocast), the flash / memory-efficient kernels on
GPU never hold the scores, and no shape depends on the data (no host sync). Against a layout with separate
full-length keys and values for the global rows plus a blocked copy of them for the token rows, and a copy of
the outputs before out_proj, this keeps three fewer (L x d_model) tensors per layer for backward: at PEGASUS-X's
small shape and 16,384 tokens, 197 MB fewer at the step's peak than that layout (bench/bench_model.py's count).
The global rows pay for it with 25% more (masked) keys: +0.04 s of SDPA per layer and step at 16,384 tokens.

`dense_attention` is the same math as one masked ((G + L) x (G + L)) attention: a readable reference for the
tests and for debugging, selected with `PegasusXGlobalLocalAttention.implementation = "dense"`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def blocked_attention(q_glob: Tensor, q_tok: Tensor, k: Tensor, v: Tensor, key_ok: Tensor, block: int,
                      dropout_p: float) -> tuple[Tensor, Tensor]:
    """q_glob: (B, G, H, D) global queries; q_tok: (B, L, H, D) token queries, L a multiple of `block`;
    k, v: (B, G + L, H, D), the G global rows first; key_ok: (B, L) bool, False for pad tokens.
    Returns the outputs of the global rows (B, G, H, D) and of the token rows (B, L, H, D)."""
    batch, num_global, heads, dim = q_glob.shape
    length = q_tok.shape[1]
    blocks = length // block

    def blocked(t: Tensor) -> Tensor:  # (B, G + L, H, D) -> (B, nb, G + block, H, D): the one copy
        # split, not two slices: its backward is one concatenation, where every slice's backward would build a
        # zero-filled gradient of t's full size (fill_ takes 1.7% of a step at 16,384 tokens here, 3.4% with slices).
        glob, tok = t.split([num_global, length], dim=1)
        glob = glob[:, None].expand(batch, blocks, num_global, heads, dim)
        return torch.cat([glob, tok.unflatten(1, (blocks, block))], dim=2)

    k_blocks, v_blocks = blocked(k), blocked(v)
    # Global keys are never masked; pad tokens are, everywhere.
    block_ok = torch.cat([key_ok.new_ones(batch, blocks, num_global), key_ok.view(batch, blocks, block)], dim=2)

    # Token rows: block b of every row becomes batch row (B * nb), keys [globals; block b].
    per_block = (batch * blocks, num_global + block, heads, dim)
    tok_out = F.scaled_dot_product_attention(
        q_tok.reshape(batch * blocks, block, heads, dim).transpose(1, 2), k_blocks.view(per_block).transpose(1, 2),
        v_blocks.view(per_block).transpose(1, 2), attn_mask=block_ok.view(batch * blocks, 1, 1, -1),
        dropout_p=dropout_p)  # (B * nb, H, block, D)

    # Global rows: every global key once (block 0's copy) and every non-pad token.
    glob_ok = torch.cat([block_ok[:, :1], F.pad(block_ok[:, 1:, num_global:], (num_global, 0), value=False)], 1)
    whole = (batch, blocks * (num_global + block), heads, dim)
    glob_out = F.scaled_dot_product_attention(
        q_glob.transpose(1, 2), k_blocks.view(whole).transpose(1, 2), v_blocks.view(whole).transpose(1, 2),
        attn_mask=glob_ok.view(batch, 1, 1, -1), dropout_p=dropout_p)  # (B, H, G, D)
    # A view on CPU, where the kernel writes (B * nb, block, H, D) rows.
    return glob_out.transpose(1, 2), tok_out.transpose(1, 2).reshape(batch, length, heads, dim)


def dense_attention(q_glob: Tensor, q_tok: Tensor, k: Tensor, v: Tensor, key_ok: Tensor,
                    block: int) -> tuple[Tensor, Tensor]:
    """Reference for `blocked_attention` (same arguments and outputs): the same keys per query as one
    ((G + L) x (G + L)) masked attention."""
    num_global, length = q_glob.shape[1], key_ok.shape[1]
    is_global = torch.arange(num_global + length, device=k.device) < num_global
    block_id = (torch.arange(num_global + length, device=k.device) - num_global).div(block, rounding_mode="floor")
    all_ok = F.pad(key_ok, (num_global, 0), value=True)  # (B, G + L)
    same_block = block_id[:, None] == block_id[None, :]
    sees = is_global[:, None] | is_global[None, :] | same_block  # (G + L, G + L): query row, key column
    mask = sees[None] & all_ok[:, None, :]  # (B, G + L, G + L)
    q = torch.cat([q_glob, q_tok], dim=1)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask[:, None]).transpose(1, 2)
    return out.split([num_global, length], dim=1)


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

    def forward(self, tokens: Tensor, globals_: Tensor, key_ok: Tensor, shift: int = 0) -> tuple[Tensor, Tensor]:
        """tokens: (B, L, d_model); globals_: (B, G, d_model); key_ok: (B, L) bool. `shift` pad tokens go before
        and after the tokens (staggered blocks), so that L + 2 * shift is a multiple of block_size; they are cut
        from the output. Returns the attention outputs of both streams, after out_proj: (B, L, d_model),
        (B, G, d_model)."""
        batch, length, d_model = tokens.shape
        num_global = globals_.shape[1]
        heads, dim = self.heads, d_model // self.heads
        # One projection of both streams (the weights are shared and every row is projected alike), the stagger
        # padding placed by the same copy.
        pad = tokens.new_zeros(batch, shift, d_model)
        x = torch.cat([globals_, pad, tokens, pad], dim=1)  # (B, G + Lp, d_model)
        key_ok = F.pad(key_ok, (shift, shift), value=False)  # (B, Lp)
        k = self.k_proj(x).view(batch, -1, heads, dim)  # (B, G + Lp, H, D)
        v = self.v_proj(x).view(batch, -1, heads, dim)
        q = self.q_proj(x).view(batch, -1, heads, dim)
        # A copy of the few global queries, so that only the token rows' attention keeps q (as a view).
        q_glob, q_tok = q.split([num_global, q.shape[1] - num_global], dim=1)
        q_glob = q_glob.contiguous()
        if self.implementation == "dense":
            glob, tok = dense_attention(q_glob, q_tok, k, v, key_ok, self.block_size)
        else:
            dropout_p = self.dropout if self.training else 0.0
            glob, tok = blocked_attention(q_glob, q_tok, k, v, key_ok, self.block_size, dropout_p)
        # out_proj on each stream's rows as the attention returned them: no (G + L) concatenation to keep.
        tok = tok.reshape(batch, -1, d_model)
        if shift:
            tok = tok.split([shift, length, shift], dim=1)[1]
        return self.out_proj(tok), self.out_proj(glob.reshape(batch, num_global, d_model))
