"""The sampler: logits of a batch -> the next token of each sequence (``sampling_params`` says how).

Greedy rows are one batched argmax; sampled rows draw from their own seeded generator, after
temperature, top-k, then top-p (nucleus, Holtzman et al. 2019). A grammar's token mask is
applied first (``generation.grammar``). Numerical safety is described in ``sampling_params``.
"""

from __future__ import annotations

import torch

from parainfer.generation.outputs import TokenLogprob
from parainfer.generation.sampling_params import MIN_TEMPERATURE, SamplingParams  # noqa: F401
from parainfer.generation.sequence import Sequence


def sample(logits: torch.Tensor, seqs: list[Sequence]) -> list[int | Exception]:
    """Pick the next token of each sequence.

    Args:
        logits: [B, vocab] float logits, row i for ``seqs[i]``.
        seqs: the B sequences (their ``params`` and ``generator`` are used).

    Returns:
        B token ids; in place of a row whose sampling raised, the exception (the engine fails
        that one sequence, the others go on).

    A sequence with a grammar (``seq.grammar``) has its row masked first; one that asked for
    logprobs gets ``seq.pending_logprob`` (a :class:`TokenLogprob`, taken by ``append_token``).
    """
    logits = logits.float().nan_to_num(nan=float("-inf"))  # a NaN logit is never the argmax
    want_lp = [i for i, seq in enumerate(seqs) if seq.params.logprobs is not None]
    raw_lp = torch.log_softmax(logits[want_lp], dim=-1) if want_lp else None  # before any mask
    failed = mask_rows(logits, seqs)
    out: list[int | Exception] = list(logits.argmax(dim=-1).tolist())
    for i, seq in enumerate(seqs):
        if i in failed:
            out[i] = failed[i]
        elif not seq.params.greedy:
            out[i] = _sample_row_or_error(logits[i], seq)
    for j, i in enumerate(want_lp):
        if not isinstance(out[i], Exception):
            seqs[i].pending_logprob = token_logprob(raw_lp[j], int(out[i]), seqs[i].params.logprobs)
    return out


def mask_rows(logits: torch.Tensor, seqs: list[Sequence]) -> dict[int, Exception]:
    """Apply each constrained sequence's grammar mask to its row of ``logits`` [B, vocab], in
    place (``grammar.mask_logits``); returns {row: exception} for rows whose mask failed."""
    states = [getattr(seq, "grammar", None) for seq in seqs]
    if all(state is None for state in states):
        return {}
    from parainfer.generation.grammar import mask_logits

    return mask_logits(logits, states)


def token_logprob(row_lp: torch.Tensor, token: int, k: int) -> TokenLogprob:
    """The chosen ``token``'s log-probability in ``row_lp`` ([vocab] log-softmax) and the top ``k``."""
    top: list[tuple[int, float]] = []
    if k:
        values, ids = torch.topk(row_lp, k)
        top = list(zip(ids.tolist(), values.tolist()))
    return TokenLogprob(token, float(row_lp[token]), top)


def _sample_row_or_error(row: torch.Tensor, seq: Sequence) -> int | Exception:
    """``_sample_row`` for one sequence; its exception is returned, not raised (isolation)."""
    try:
        return _sample_row(row, seq.params, seq.generator)
    except Exception as exc:  # noqa: BLE001 - fails only this sequence, see LLMEngine.step
        return exc


def _sample_row(row: torch.Tensor, params: SamplingParams, gen: torch.Generator | None) -> int:
    """Temperature, top-k, top-p, then one multinomial draw. ``row`` is [vocab] fp32."""
    row = row / params.temperature
    if params.top_k > 0 and params.top_k < row.numel():
        kth = torch.topk(row, params.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    if params.top_p < 1.0:
        row = _top_p_filter(row, params.top_p)
    probs = _finite_probs(row)
    if probs is None:
        return int(row.argmax().item())
    return int(torch.multinomial(probs, 1, generator=gen).item())


def _top_p_filter(row: torch.Tensor, top_p: float) -> torch.Tensor:
    """``row`` with the tokens outside the nucleus set to -inf; the most likely token is always
    kept (a tiny ``top_p`` means "only the top token", never "no token")."""
    sorted_logits, order = torch.sort(row, descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs >= top_p  # keep the token that crosses p
    drop[0] = False
    row = row.clone()
    row[order[drop]] = float("-inf")
    return row


def _finite_probs(row: torch.Tensor) -> torch.Tensor | None:
    """softmax(row), or None when it is not a distribution (NaN/inf logits, all -inf)."""
    probs = row.softmax(-1)
    if not bool(torch.isfinite(probs).all()) or not float(probs.sum()) > 0:
        return None
    return probs
