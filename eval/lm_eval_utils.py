"""Metric hooks lm-eval loads from medforge's task YAML (`!function lm_eval_utils.<name>`)."""
import math


def answer_ppl_results(doc, results):
    loglikelihood, _ = results[0]
    return {"answer_ppl": (loglikelihood, doc["n_tokens"])}


def token_perplexity(items):
    """exp(-total log-likelihood / total tokens) over all answers: per-token, not per-answer, perplexity."""
    return math.exp(-sum(ll for ll, _ in items) / sum(n for _, n in items))
