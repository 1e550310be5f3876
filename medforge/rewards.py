"""GRPO reward functions for multiple-choice prompts, in TRL's reward-function signature.

Each gets the batch's completions plus the dataset columns `keys` (option letters), `options` (option texts,
in the same order) and `answer` (the correct letter), and returns one float per completion.
"""
from __future__ import annotations

import re
from difflib import SequenceMatcher

LETTER = re.compile(r"^\(?([A-Za-z])(\)|[.:：、])?(.*)$", re.S)  # "B", "B.", "(B)", "B. text"; not "A doctor"
PUNCTUATION = " \t\n.。,，!！:：;；\"'“”()（）"


def text_of(completion) -> str:
    """A completion as plain text (TRL passes conversational completions as a list of messages)."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion)
    return completion


def _norm(s: str) -> str:
    return s.strip(PUNCTUATION).lower()


def similarity(a: str, b: str) -> float:
    return SequenceMatcher(None, _norm(a), _norm(b)).ratio()


def chosen_option(reply: str, keys: list[str], options: list[str], min_similarity: float = 0.6) -> str | None:
    """The key of the one option a reply names, else None.

    In order: its letter ("B", "B.", "(B)", "B. text"); its exact text; the only option whose text the reply
    contains (two or more contained: None); else the closest option text if at least `min_similarity` alike,
    so a small model's misspelt answer still counts as the option it meant.
    """
    reply = reply.strip()
    m = LETTER.match(reply)
    if m and m.group(1).upper() in keys and (m.group(2) or not m.group(3).strip()):
        return m.group(1).upper()
    exact = [k for k, o in zip(keys, options) if _norm(o) == _norm(reply)]
    if exact:
        return exact[0]
    contained = [k for k, o in zip(keys, options) if _norm(o) in reply.lower()]
    if contained:
        return contained[0] if len(contained) == 1 else None
    score, key = max((similarity(reply, o), k) for k, o in zip(keys, options))
    return key if score >= min_similarity else None


def correctness(completions, keys, options, answer, **_) -> list[float]:
    """1 when the reply names the correct option and no other, else 0."""
    return [float(chosen_option(text_of(c), k, o) == a) for c, k, o, a in zip(completions, keys, options, answer)]


def answer_format(completions, keys, options, **_) -> list[float]:
    """How exactly the reply is one option: 1 for an option's letter or exact text, else its similarity to the
    closest option text (0..1); 0 when it names several options."""
    scores = []
    for c, k, o in zip(completions, keys, options):
        reply = text_of(c)
        if _norm(reply) in {_norm(x) for x in o} | {x.lower() for x in k}:
            scores.append(1.0)
        elif sum(_norm(x) in reply.lower() for x in o) > 1:
            scores.append(0.0)
        else:
            scores.append(max(similarity(reply, x) for x in o))
    return scores


def brevity(completions, target_chars: int = 40, **_) -> list[float]:
    """1 up to `target_chars` characters, then falling linearly to 0 at four times that."""
    return [max(0.0, min(1.0, 1 - (len(text_of(c)) - target_chars) / (3 * target_chars))) for c in completions]


REWARDS = {"correctness": correctness, "format": answer_format, "brevity": brevity}
