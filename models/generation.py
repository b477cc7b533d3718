"""Continuing a prompt, clean and under interventions, from the same seed, with the model's KV cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from lenstop.models.errors import UsageError
from lenstop.models.interventions import Intervention
from lenstop.models.quiet import drop_cache_renamed_warning
from lenstop.models.results import Continuation, Generation
from lenstop.models.runtime.handle import ModelHandle, check_finite_output
from lenstop.models.runtime.run_plan import RunPlan


def generate(
    handle: ModelHandle,
    prompt: str,
    interventions: Sequence[Intervention] = (),
    *,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    seed: int = 0,
) -> Generation:
    """`Engine.generate`: the prompt continued with and without the interventions, from the same seed."""
    check_options(max_new_tokens, temperature, seed)
    tokens = handle.tokenize(prompt)
    drop_cache_renamed_warning()
    clean = _continue(handle, tokens, (), max_new_tokens, temperature, seed)
    intervened = _continue(handle, tokens, interventions, max_new_tokens, temperature, seed) if interventions else None
    return Generation(
        model=handle.name,
        prompt=prompt,
        clean=clean,
        intervened=intervened,
        interventions=tuple(interventions),
        temperature=temperature,
        seed=seed,
    )


def check_options(max_new_tokens: int, temperature: float, seed: int) -> None:
    """A usage error, in the CLI's words, for options that cannot generate."""
    if max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if temperature < 0:
        raise UsageError("--temperature must be 0 (greedy) or more")
    if not -(2**63) <= seed < 2**64:  # what torch's generator takes
        raise UsageError(f"--seed {seed}: a seed is a whole number from -2**63 to 2**64 - 1")


def _continue(
    handle: ModelHandle,
    tokens: torch.Tensor,
    interventions: Sequence[Intervention],
    max_new: int,
    temperature: float,
    seed: int,
) -> Continuation:
    """Greedy or sampled tokens with a KV cache: the prompt runs once with every intervention, then each new
    token runs alone with the interventions that apply at every position (those limited to a prompt
    position have done their work on the prompt's cached keys and values)."""
    generator = torch.Generator().manual_seed(seed)
    prompt_len = tokens.shape[-1]
    everywhere = [iv for iv in interventions if iv.position is None]
    eos = handle.model.tokenizer.eos_token_id
    new: list[int] = []
    feed, cache = tokens, None
    for _ in range(max_new):
        if prompt_len + len(new) >= handle.n_ctx:
            break
        if cache is None:
            logits, cache = _step(handle, feed, interventions, prompt_len, None)
        else:
            logits, cache = _step(handle, feed, everywhere, 1, cache)
        last = logits[-1].float()
        if temperature == 0:
            next_id = int(last.argmax())
        else:
            probs = (last / temperature).softmax(-1).cpu()
            next_id = int(torch.multinomial(probs, 1, generator=generator))
        new.append(next_id)
        if eos is not None and next_id == eos:
            break
        feed = torch.tensor([[next_id]], device=tokens.device)
    text = handle.model.tokenizer.decode(new, clean_up_tokenization_spaces=False)
    return Continuation(tuple(new), tuple(handle.token_strings(new)), text)


def _step(
    handle: ModelHandle, tokens: torch.Tensor, interventions: Sequence[Intervention], prompt_len: int, cache: Any
) -> tuple[torch.Tensor, Any]:
    """One step of generation: the logits (seq, vocab) of `tokens` after those in `cache`, and the cache."""
    plan = RunPlan.on(handle, interventions, prompt_len)
    past = {} if cache is None else {"past_key_values": cache}
    with handle.guard(tokens.shape[-1]), handle.hooks(plan.hooks):
        logits, cache = handle.model(tokens, return_type="logits_and_cache", use_cache=True, **past)
    return check_finite_output(logits[0], interventions), cache
