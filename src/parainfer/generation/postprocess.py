"""After the forward: append each sampled token, decide whether the request is done, and
build the outputs the engine hands back (per step and per finished request)."""

from __future__ import annotations

from typing import Any

from parainfer.generation.outputs import GenerationResult, RequestOutput
from parainfer.generation.sequence import Sequence, SequenceStatus


def append_token(seq: Sequence, token: int, eos_ids: set[int], max_model_len: int) -> RequestOutput:
    """Append ``token`` to ``seq``; mark it FINISHED when it should end; return this step's output.

    Ends with "stop" on an EOS token (unless ``ignore_eos``) or a stop string, with "length"
    at ``max_tokens`` or when the sequence fills the context window. The caller frees the
    blocks of a finished sequence (``Scheduler.finish``).
    """
    seq.output_token_ids.append(token)
    hit_stop = seq.detokenizer.add_token(token)
    params = seq.params
    take_logprob(seq, token)
    if seq.grammar is not None:
        seq.grammar.accept(token)  # raises if refused: the engine fails this sequence alone
        hit_stop = hit_stop or seq.grammar.is_terminated  # the value is complete (EOS accepted)
    if (token in eos_ids and not params.ignore_eos) or hit_stop:
        seq.finish_reason = "stop"
    elif seq.num_completion_tokens >= params.max_tokens or seq.num_tokens >= max_model_len:
        seq.finish_reason = "length"
    if seq.finish_reason is not None:
        seq.status = SequenceStatus.FINISHED
    return make_output(seq, [token])


def take_logprob(seq: Sequence, token: int) -> None:
    """Move the sampler's ``pending_logprob`` of ``token`` into ``seq.output_logprobs``."""
    entry, seq.pending_logprob = seq.pending_logprob, None
    if seq.params.logprobs is not None:
        if entry is None or entry.token_id != token:
            raise RuntimeError(f"no logprob was computed for token {token}")
        seq.output_logprobs.append(entry)


def make_output(seq: Sequence, new_ids: list[int]) -> RequestOutput:
    """The step output of ``seq`` (takes the text that became final since the last output)."""
    want = seq.params.logprobs is not None
    return RequestOutput(
        request_id=seq.request_id,
        new_token_ids=new_ids,
        new_text=seq.detokenizer.pop_delta(seq.is_finished),
        finished=seq.is_finished,
        finish_reason=seq.finish_reason,
        prompt_tokens=seq.num_prompt_tokens,
        completion_tokens=seq.num_completion_tokens,
        new_logprobs=seq.output_logprobs[len(seq.output_logprobs) - len(new_ids):] if want else None,
    )


def make_result(seq: Sequence) -> GenerationResult:
    """The whole-request result of a finished ``seq``."""
    return GenerationResult(
        request_id=seq.request_id,
        text=seq.detokenizer.text,
        token_ids=list(seq.output_token_ids),
        prompt_tokens=seq.num_prompt_tokens,
        completion_tokens=seq.num_completion_tokens,
        finish_reason=seq.finish_reason,
        num_preemptions=seq.num_preemptions,
        logprobs=list(seq.output_logprobs) if seq.params.logprobs is not None else None,
    )


def eos_token_ids(hf_model: Any, tokenizer: Any) -> set[int]:
    """EOS ids from the generation config and model config (int or list) and the tokenizer."""
    ids: set[int] = set()
    gen_cfg = getattr(hf_model, "generation_config", None)
    sources = (getattr(gen_cfg, "eos_token_id", None), getattr(hf_model.config, "eos_token_id", None),
               tokenizer.eos_token_id)
    for source in sources:
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(int(t) for t in source)
    return ids
