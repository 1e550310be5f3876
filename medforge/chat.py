"""Assistant-only loss under the model's own chat template: which tokens of a rendered conversation are the
assistant's.

An assistant turn's tokens run from the end of the conversation rendered up to that turn with the generation prompt
(what the model has seen when it starts to speak) through the first end-of-turn token (the tokenizer's eos) after
it, that token included: the model learns to stop. The text trained on is the real template's rendering of the
whole conversation, so no substitute template is needed and none can disagree with the real one: Qwen3's template,
which keeps the thinking block of the last turn only, is trained as it renders. This needs no `{% generation %}`
markers, which real templates (Llama 3.1, Qwen3) lack and TRL cannot add to them. A template for which the turns
cannot be found this way stops training with a TemplateError naming the turn, never trains on every token.
"""
from __future__ import annotations


class TemplateError(ValueError):
    pass


def render(tokenizer, messages: list[dict], tools: list[dict] | None = None, **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **kwargs)


def assistant_spans(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> tuple[str, list[tuple]]:
    """The rendered conversation and the (start, end) character span of each assistant turn in it."""
    text = render(tokenizer, messages, tools)
    end_of_turn = tokenizer.eos_token
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        if not text.startswith(head):
            raise TemplateError(
                f"the chat template cannot mark assistant turns: the conversation rendered up to turn {i + 1} with "
                f"the generation prompt is not the start of the whole conversation's rendering, so the assistant's "
                f"tokens cannot be told from the rest ({tokenizer.name_or_path})")
        end = text.find(end_of_turn, len(head))
        if end < 0:
            raise TemplateError(f"the chat template does not end assistant turn {i + 1} with the tokenizer's eos "
                                f"{end_of_turn!r}: set eos_token to the end-of-turn token ({tokenizer.name_or_path})")
        spans.append((len(head), end + len(end_of_turn)))
    return text, spans


def tokenize(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> dict:
    """`input_ids` of the rendered conversation and `assistant_masks` (1 on the assistant's tokens), the columns TRL
    builds its labels from."""
    text, spans = assistant_spans(tokenizer, messages, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    starts, ends = {a for a, _ in offsets}, {b for _, b in offsets}
    for start, end in spans:
        if start not in starts or end not in ends:
            raise TemplateError(f"a token straddles the edge of an assistant turn ({text[max(start - 20, 0):start]!r}"
                                f" | {text[start:start + 20]!r}): its loss cannot be masked exactly "
                                f"({tokenizer.name_or_path})")
    mask = [int(any(start <= a < end for start, end in spans)) for a, _ in offsets]
    return {"input_ids": encoded["input_ids"], "assistant_masks": mask}
