"""Personal data in training records: what `prepare` looks for (params.yaml `data.phi`), counts, masks or rejects.

Kinds, each a pattern plus a check that keeps look-alike numbers out (boundaries are ASCII letters and digits, so
a number right after a Chinese character is found):
  email       name@domain.tld
  phone       Chinese mobile numbers (1[3-9] + 9 digits, optionally +86), landlines with an area code (010-12345678),
              international numbers written with a + and separators, North American 647-717-5780
  cn_id       Chinese resident identity numbers: 18 characters whose birth date is a real date and whose check
              character is right (ISO 7064 MOD 11-2)
  passport    Chinese passport numbers (E, G, D, S, P or H + 8 digits; E + letter + 7 digits)
  bank_card   16-19 digit card numbers that pass the Luhn check
Masking replaces a finding with its kind in brackets ("[phone]"), so a model learns the shape of the text, not the
person.
"""
from __future__ import annotations

import re
from collections import Counter
from datetime import date

PATTERN = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in {
    "email": r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z0-9-])",
    "cn_id": r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])",
    "bank_card": r"(?<![0-9A-Za-z])\d{16,19}(?![0-9A-Za-z])",
    "phone": r"(?<![0-9A-Za-z+])(?:(?:\+?86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}|0\d{2,3}-\d{7,8}"
             r"|\+\d{1,3}(?:[ -]\d{2,4}){2,4}|\(?[2-9]\d{2}\)?[-. ]\d{3}[-. ]\d{4})(?![0-9A-Za-z])",
    "passport": r"(?<![0-9A-Za-z])(?:[EGDSPH]\d{8}|E[A-HJ-NP-Z]\d{7})(?![0-9A-Za-z])",
}.items()))
ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def valid_cn_id(number: str) -> bool:
    try:
        date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    check = "10X98765432"[sum(int(d) * w for d, w in zip(number, ID_WEIGHTS)) % 11]
    return number[17].upper() == check


def luhn(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits)) % 10 == 0


CHECKS = {"cn_id": valid_cn_id, "bank_card": luhn}


CANDIDATE = re.compile(r"[0-9@]")  # every kind has a digit or an @: most text is passed over at C speed


def findings(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each piece of personal data in `text`."""
    if not CANDIDATE.search(text):
        return []
    found = []
    for m in PATTERN.finditer(text):
        kind = m.lastgroup
        if CHECKS.get(kind, bool)(m.group()):
            found.append((kind, m.start(), m.end()))
    return found


def mask(text: str, spans: list[tuple[str, int, int]]) -> str:
    for kind, start, end in reversed(spans):
        text = text[:start] + f"[{kind}]" + text[end:]
    return text


def leaves(value) -> list[str]:
    """The strings in a record of strings, lists and dicts."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def masked(value):
    if isinstance(value, str):
        return mask(value, findings(value))
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


def scan(record, masking: bool) -> tuple[object, Counter]:
    """(`record`, its strings masked if `masking` and anything was found; its findings by kind) for a canonical record
    of strings, lists and dicts."""
    counts = Counter(kind for text in leaves(record) for kind, *_ in findings(text))
    return (masked(record) if masking and counts else record), counts
