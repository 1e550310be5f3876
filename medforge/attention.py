"""`attn_implementation: varlen`: padding-free batches where packed documents never attend to each other.

TRL's padding-free collator flattens a batch into one row and passes each document's boundaries
(`cu_seq_lens_q`, `max_length_q`). On a GPU this runs PyTorch's own variable-length flash-attention kernel
(`torch.nn.attention.varlen`), with no dense mask and no quadratic cost across documents; flash-attn itself has
no wheels and hub kernels need a download. On a CPU each document goes through SDPA separately: the same result
as SDPA with a block-diagonal mask over the row, 1.7-2.0x faster on the tiny default's SFT. Batches without
boundaries (padded batches, generation) take plain SDPA.
"""
from __future__ import annotations

import inspect

import torch

NAME = "varlen"


def _flash_varlen(q, k, v, cu, max_len: int, scale: float | None, groups: int):
    from torch.nn.attention.varlen import varlen_attn
    accepted = inspect.signature(varlen_attn).parameters  # the signature moved between torch 2.9 and 2.12
    kwargs = {"scale": scale} if "scale" in accepted else {}
    kwargs.update({"is_causal": True} if "is_causal" in accepted else {"window_size": (-1, 0)})
    if groups > 1:
        if "enable_gqa" in accepted:
            kwargs["enable_gqa"] = True
        else:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, **kwargs)


def _per_document_sdpa(q, k, v, cu, scale: float | None, groups: int):
    out = torch.empty_like(q)
    for start, end in zip(cu[:-1].tolist(), cu[1:].tolist()):
        doc = [t[start:end].transpose(0, 1) for t in (q, k, v)]  # (heads, length, dim)
        out[start:end] = torch.nn.functional.scaled_dot_product_attention(
            *doc, is_causal=True, scale=scale, enable_gqa=groups > 1).transpose(0, 1)
    return out


def boundaries(position_ids: torch.Tensor) -> torch.Tensor:
    """Document starts of one flattened row, from position ids that restart at 0 for each document."""
    starts = (position_ids[0] == 0).nonzero().flatten()
    return torch.cat([starts, starts.new_tensor([position_ids.shape[1]])]).to(torch.int32)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    cu = kwargs.get("cu_seq_lens_q")
    position_ids = kwargs.get("position_ids")
    if (cu is None and attention_mask is None and position_ids is not None and query.shape[0] == 1
            and query.shape[2] == key.shape[2] and position_ids[0, 0] == 0):  # a flattened row, no KV cache
        cu = boundaries(position_ids)
    if cu is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if dropout:
        raise ValueError("varlen attention does not support attention dropout")
    cu = cu.to(query.device, torch.int32)
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    groups = q.shape[1] // k.shape[1]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):  # the flash kernel's dtypes
        max_len = kwargs.get("max_length_q") or int(cu.diff().max())
        out = _flash_varlen(q, k, v, cu, max_len, scaling, groups)
    else:
        out = _per_document_sdpa(q, k, v, cu, scaling, groups)
    return out.unsqueeze(0), None  # (1, tokens, heads, dim), as transformers' other attention functions return


def varlen_mask(*args, attention_mask=None, **kwargs):
    """No mask for padding-free rows (boundaries travel separately); SDPA's mask for padded batches."""
    from transformers.masking_utils import sdpa_mask
    if attention_mask is None:
        return None
    return sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


def register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, varlen_mask)
