"""GRPO reward functions, in TRL's reward-function signature.

Each gets the batch's completions plus the dataset columns `answer`, `match` (how the answer is checked, per
question: "choice", "numeric" or "exact"; medforge/formats.to_question), and for multiple choice `keys` (option
letters) and `options` (option texts, in the same order; empty lists otherwise), and returns one float per
completion. Without `match`, every question is multiple choice.
"""
from __future__ import annotations

import re
import unicodedata
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


NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")


def numbers_in(text: str) -> list[float]:
    """The numbers in `text`, in order: "1,234.5" is one; full-width digits count."""
    return [float(n.replace(",", "")) for n in NUMBER.findall(unicodedata.normalize("NFKC", text))
            if n.replace(",", "").strip("+-.")]


def same_number(reply: str, answer: str) -> bool:
    """The reply's last number is the answer (GSM8K's rule: the final number counts), to 1e-6 relative."""
    found, want = numbers_in(reply), numbers_in(answer)
    return bool(found and want) and abs(found[-1] - want[-1]) <= 1e-6 * max(1.0, abs(want[-1]))


def normalised(text: str) -> str:
    """Case, full-/half-width forms, punctuation and white space removed: "心内科。" == "心内科"."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(c for c in text if not (c.isspace() or unicodedata.category(c).startswith("P")))


def accurate(reply: str, answer: str, match: str, keys: list[str], options: list[str]) -> bool:
    if match == "choice":
        return chosen_option(reply, keys, options) == answer
    if match == "numeric":
        return same_number(reply, answer)
    return normalised(reply) == normalised(answer)


def correctness(completions, keys, options, answer, match=None, **_) -> list[float]:
    """1 when the reply is right by its question's rule, else 0: multiple choice, the correct option and no other;
    numeric, its last number equals the answer; exact, equal after normalisation."""
    match = match or ["choice"] * len(completions)
    return [float(accurate(text_of(c), a, m, k, o)) for c, k, o, a, m in zip(completions, keys, options, answer, match)]


def answer_format(completions, keys, options, answer=None, match=None, **_) -> list[float]:
    """How exactly the reply is an answer and nothing else. Multiple choice: 1 for an option's letter or exact text,
    else its similarity to the closest option text (0..1), 0 when it names several options. Numeric: 1 for a bare
    number, 0.5 for a reply with numbers in it. Exact: the reply's similarity to the answer."""
    match = match or ["choice"] * len(completions)
    answer = answer or [None] * len(completions)
    scores = []
    for c, k, o, a, m in zip(completions, keys, options, answer, match):
        reply = text_of(c)
        if m == "numeric":
            bare = NUMBER.fullmatch(unicodedata.normalize("NFKC", reply).strip(PUNCTUATION))
            scores.append(1.0 if bare else 0.5 if numbers_in(reply) else 0.0)
        elif m == "exact":
            scores.append(similarity(reply, a))
        elif _norm(reply) in {_norm(x) for x in o} | {x.lower() for x in k}:
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
