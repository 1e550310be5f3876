"""An lm-eval model over llama.cpp: a GGUF file scored by llama.cpp's own logits, not dequantised into transformers.

Text is split into context and continuation exactly as lm-eval's HF model does (trailing spaces of the context move
to the continuation; the continuation's tokens are those of context + continuation after the context's), so a GGUF
and its source model are scored on the same tokens (tests/test_gguf.py checks the tokenizers agree).
"""
from __future__ import annotations

import os

import numpy as np
from lm_eval.api.model import LM


class LlamaCppLM(LM):
    def __init__(self, path: str, n_ctx: int = 1024):
        super().__init__()
        from llama_cpp import Llama
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, verbose=False,
                         n_threads=os.cpu_count())

    def tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def logprobs(self, tokens: list[int]) -> np.ndarray:
        """Row i: log-probabilities of the token after tokens[i]."""
        self.llm.reset()
        self.llm.eval(tokens)
        logits = np.asarray(self.llm.scores[: len(tokens)], dtype=np.float64)
        top = logits.max(-1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))

    def score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        if not context:
            context = [self.llm.token_eos()]
        rows = self.logprobs(context + continuation)[len(context) - 1:-1]
        picked = rows[np.arange(len(continuation)), continuation]
        return float(picked.sum()), bool((rows.argmax(-1) == np.asarray(continuation)).all())

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        results = []
        for context, continuation in (r.args for r in requests):
            spaces = len(context) - len(context.rstrip())
            if spaces:
                context, continuation = context[:-spaces], context[-spaces:] + continuation
            whole, head = self.tokens(context + continuation), self.tokens(context)
            results.append(self.score(head, whole[len(head):]))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return [self.score([], self.tokens(r.args[0]))[0] for r in requests]

    def generate_until(self, requests, disable_tqdm: bool = False):
        replies = []
        for context, kwargs in (r.args for r in requests):
            out = self.llm(context, max_tokens=kwargs.get("max_gen_toks", 256), temperature=0.0,
                           stop=kwargs.get("until") or None)
            replies.append(out["choices"][0]["text"])
        return replies
