"""The real families' path on their fixtures (medforge/fixtures.py: real vocabulary, real chat template, small random
weights): the assistant-only loss mask token by token under each real template, SFT on it, a template that cannot
mark turns, and GGUF conversion that recognises the family's pre-tokenizer and tokenizes as transformers does."""
import pytest
import torch

from medforge import chat, params
from medforge.fixtures import FAMILIES
from medforge.modeling import load_model, load_tokenizer

FP32 = params.load("model", dtype="float32", attn_implementation="sdpa")
SYSTEM = {"role": "system", "content": "你是一名谨慎的医疗助手。"}
TURNS = [{"role": "user", "content": "高血压应该挂哪个科？"},
         {"role": "assistant", "content": "心内科。"},
         {"role": "user", "content": "What warning signs need urgent care?"},
         {"role": "assistant", "content": "Chest pain or fainting: seek urgent care."}]
CONVERSATIONS = {"without system": TURNS, "with system": [SYSTEM, *TURNS], "one turn": TURNS[:2]}
TEXT = "高血压应该挂哪个科？心内科。如出现胸痛，请立即就医！ Which department treats hypertension? 1234567 mg 🚀"
PRE_TOKENIZER = {"qwen2.5": "qwen2", "qwen3": "qwen2", "llama3.1": "llama-bpe"}  # llama.cpp's names


TOOLS = [{"type": "function", "function": {"name": "find_department", "description": "诊治某种疾病的科室",
                                           "parameters": {"type": "object",
                                                          "properties": {"condition": {"type": "string"}}}}}]
TOOL_USE = [{"role": "user", "content": "高血压应该挂哪个科？"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "find_department", "arguments": {"condition": "高血压"}}}]},
            {"role": "tool", "content": '{"department": "心内科"}'},
            {"role": "assistant", "content": "请挂心内科。"}]
# The assistant's turns of TOOL_USE as each real template renders them, written out by hand: Qwen's <tool_call> JSON
# (Qwen3 adds the empty thinking block to the last turn only), Llama 3.1's bare JSON with "parameters".
TOOL_TURNS = {
    "qwen2.5": ['<tool_call>\n{"name": "find_department", "arguments": {"condition": "高血压"}}\n</tool_call><|im_end|>',
                "请挂心内科。<|im_end|>"],
    "qwen3": ['<tool_call>\n{"name": "find_department", "arguments": {"condition": "高血压"}}\n</tool_call><|im_end|>',
              "<think>\n\n</think>\n\n请挂心内科。<|im_end|>"],
    "llama3.1": ['{"name": "find_department", "parameters": {"condition": "高血压"}}<|eot_id|>', "请挂心内科。<|eot_id|>"],
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, real_family_dir):
    return request.param, real_family_dir(request.param)


def expected_turns(name: str, messages: list[dict]) -> list[str]:
    """Each assistant turn as the family's real template renders it, end-of-turn token included (written out here
    by hand from the templates, independently of medforge.chat). Qwen3 shows the (empty) thinking block only on
    the turns after the last user message."""
    eos = FAMILIES[name].eos
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [("<think>\n\n</think>\n\n" if name == "qwen3" and i > last_user else "") + m["content"] + eos
            for i, m in enumerate(messages) if m["role"] == "assistant"]


def mask_errors(tokenizer, input_ids: list[int], mask: list[int], expected: list[str]) -> list[str]:
    """What is wrong with `mask`: its runs of 1s must be exactly the tokens of the `expected` assistant turns."""
    runs, run = [], []
    for token, bit in zip(input_ids, mask, strict=True):
        if bit:
            run.append(token)
        elif run:
            runs.append(run)
            run = []
    runs += [run] if run else []
    want = [tokenizer.encode(text, add_special_tokens=False) for text in expected]
    if len(runs) != len(want):
        return [f"{len(runs)} masked runs for {len(want)} assistant turns"]
    return [f"turn {i + 1}: masked {tokenizer.decode(got)!r}, expected {tokenizer.decode(w)!r}"
            for i, (got, w) in enumerate(zip(runs, want)) if got != w]


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_the_mask_covers_exactly_the_assistant_tokens(family, conversation):
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    messages = CONVERSATIONS[conversation]
    out = chat.tokenize(tokenizer, messages)
    # the text trained on is the real template's rendering, token for token
    assert tokenizer.decode(out["input_ids"]) == tokenizer.apply_chat_template(messages, tokenize=False)
    assert mask_errors(tokenizer, out["input_ids"], out["assistant_masks"], expected_turns(name, messages)) == []


def test_the_mask_covers_tool_calls_and_never_tool_results(family):
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    out = chat.tokenize(tokenizer, TOOL_USE, TOOLS)
    rendered = tokenizer.apply_chat_template(TOOL_USE, tools=TOOLS, tokenize=False)
    assert tokenizer.decode(out["input_ids"]) == rendered and "心内科" in rendered.split("高血压应该挂哪个科？")[1]
    assert mask_errors(tokenizer, out["input_ids"], out["assistant_masks"], TOOL_TURNS[name]) == []


def test_a_wrong_mask_is_caught(family):
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    out = chat.tokenize(tokenizer, TURNS)
    expected = expected_turns(name, TURNS)
    mask = out["assistant_masks"]
    first = mask.index(1)
    last = len(mask) - 1 - mask[::-1].index(1)
    shifted = mask[1:] + [0]
    without_stop = mask[:last] + [0] + mask[last + 1:]
    with_prompt = mask[:first - 1] + [1] + mask[first:]
    for wrong in (shifted, without_stop, with_prompt, [1] * len(mask)):
        assert mask_errors(tokenizer, out["input_ids"], wrong, expected), wrong


def test_a_template_that_cannot_mark_turns_stops(real_family_dir):
    tokenizer = load_tokenizer(real_family_dir("qwen2.5"), FP32)
    turns = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    # the generation prompt carries a thinking block the rendered assistant turns lack
    tokenizer.chat_template = turns + "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n" \
                                      "{%- endif %}"
    with pytest.raises(chat.TemplateError, match="cannot mark assistant turns"):
        chat.tokenize(tokenizer, TURNS)
    # turns end with a token other than the eos
    tokenizer.chat_template = turns.replace("<|im_end|>", "<|endoftext|>") + \
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    with pytest.raises(chat.TemplateError, match="does not end assistant turn 2"):
        chat.tokenize(tokenizer, TURNS)


def test_sft_on_such_a_template_stops_in_one_line(real_family_dir, tmp_path):
    import shutil

    from medforge.train import make_trainer
    checkpoint = shutil.copytree(real_family_dir("qwen2.5"), tmp_path / "checkpoint")
    (checkpoint / "chat_template.jinja").write_text(
        "{%- for m in messages %}{{ m.content }}{%- endfor %}"  # no roles, no end of turn
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")
    p = params.load("sft", init=str(checkpoint), finetuning="lora", max_steps=1)
    with pytest.raises(SystemExit, match=f"{checkpoint}: the chat template cannot mark assistant turns"):
        make_trainer(p, [{"messages": TURNS}], None, str(tmp_path / "out"), assistant_only_loss=True, mp=FP32)


@pytest.mark.parametrize("finetuning", ["lora", "qlora"])
def test_sft_trains_on_the_assistant_tokens(family, finetuning, tmp_path):
    from medforge.train import make_trainer
    name, path = family
    p = params.load("sft", init=str(path), finetuning=finetuning, packing=False, max_length=256, batch_size=3,
                    max_steps=2, logging_steps=1, epochs=1)
    records = [{"messages": m} for m in CONVERSATIONS.values()]
    trainer = make_trainer(p, records, None, str(tmp_path), assistant_only_loss=True, mp=FP32)
    tokenizer = trainer.processing_class
    for row, messages in zip(trainer.train_dataset, CONVERSATIONS.values(), strict=True):
        labelled = [label for label in row["labels"] if label != -100]
        assert labelled == [t for text in expected_turns(name, messages)
                            for t in tokenizer.encode(text, add_special_tokens=False)]
    result = trainer.train()
    assert result.global_step == 2 and torch.isfinite(torch.tensor(result.training_loss))


def test_dpo_trains_on_tool_calling_pairs(family, tmp_path):
    from trl import DPOConfig

    from medforge.preference import tokenized, tokenized_dpo_trainer
    from tests.test_alignment import records
    from medforge.train import load_trainable, peft_config, training_args
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    call = {"role": "assistant", "content": "", "tool_calls": TOOL_USE[1]["tool_calls"]}
    pairs = [{"prompt": TOOL_USE[:1], "chosen": call, "rejected": "随便挂一个科。", "tools": TOOLS},
             {"prompt": TOOL_USE[:3], "chosen": "请挂心内科。", "rejected": "请挂骨科。", "tools": TOOLS}]
    rows = [tokenized(tokenizer, pair) for pair in pairs]
    # an answer is the conversation's last turn: Qwen3 gives it the empty thinking block
    last = "<think>\n\n</think>\n\n" if name == "qwen3" else ""
    turns = [last + TOOL_TURNS[name][0], TOOL_TURNS[name][1]]
    for row, turn in zip(rows, turns, strict=True):  # the answer's tokens: the turn, then what the template puts
        assert tokenizer.decode(row["chosen_ids"]).startswith(turn)  # after it (a newline for Qwen)
    assert TOOL_TURNS[name][0] not in tokenizer.decode(rows[0]["prompt_ids"])
    p = params.load("dpo", init=str(path), finetuning="lora", max_steps=1, batch_size=2, logging_steps=1,
                    precompute_ref_log_probs=False)
    trainer = tokenized_dpo_trainer()(
        model=load_trainable(p, FP32), args=DPOConfig(**training_args(p, str(tmp_path)), max_length=1024),
        train_dataset=records(p, tokenizer, pairs, tmp_path, True), processing_class=tokenizer,
        peft_config=peft_config(p))
    assert trainer.train().global_step == 1


@pytest.fixture(scope="module")
def gguf(family, tmp_path_factory):
    from stages.gguf import convert
    name, path = family
    out = tmp_path_factory.mktemp(f"gguf-{name}") / "model-f16.gguf"
    convert(path, out)
    return out


def test_gguf_recognises_the_pre_tokenizer_and_keeps_template_and_stop(family, gguf):
    from transformers import AutoTokenizer

    from conversion.base import TextModel  # llama.cpp's converter (on sys.path once stages.gguf.convert ran)
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    # the converter's own recognition, without medforge's fallback for vocabularies trained here
    assert TextModel.get_vocab_base_pre(None, AutoTokenizer.from_pretrained(path)) == PRE_TOKENIZER[name]
    metadata = llama(gguf, vocab_only=True).metadata
    assert metadata["tokenizer.ggml.pre"] == PRE_TOKENIZER[name]
    assert metadata["tokenizer.chat_template"] == tokenizer.chat_template
    assert int(metadata["tokenizer.ggml.eos_token_id"]) == tokenizer.convert_tokens_to_ids(FAMILIES[name].eos)


def test_llama_cpp_tokenizes_and_scores_like_transformers(family, gguf):
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    rendered = tokenizer.apply_chat_template(TURNS, tokenize=False)
    for text in (TEXT, rendered):
        assert llama(gguf, vocab_only=True).tokenize(text.encode(), add_bos=False, special=True) == \
            tokenizer(text, add_special_tokens=False)["input_ids"], text
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = load_model(path, FP32)(torch.tensor([ids])).logits[0].numpy()
    model = llama(gguf, logits_all=True)
    model.eval(ids)
    got = model.scores[: len(ids)]
    # the tolerance of the tiny model's GGUF test (tests/test_gguf.py)
    assert abs(got - expected).max() <= 2e-3 * (expected.max() - expected.min())
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.98


def test_the_served_reply_ends_on_the_end_of_turn_token(family, gguf, start_server):
    """`make serve` on the family's GGUF: llama.cpp must end the reply at the end-of-turn token and leave it out of
    the text. The random model would rarely pick it, so a logit bias forces it; another special token forced the
    same way runs on to max_tokens, which shows the check can fail."""
    import requests
    name, path = family
    tokenizer = load_tokenizer(path, FP32)
    url = start_server(gguf, "--api-key", "k", "--system-prompt", "")

    def reply(token: str) -> dict:
        bias = {str(tokenizer.convert_tokens_to_ids(token)): 100}
        response = requests.post(f"{url}/v1/chat/completions", headers={"Authorization": "Bearer k"}, timeout=60,
                                 json={"messages": TURNS[:1], "max_tokens": 4, "temperature": 0, "logit_bias": bias})
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]

    ended = reply(FAMILIES[name].eos)
    assert (ended["finish_reason"], ended["message"]["content"]) == ("stop", "")
    other = {"qwen2.5": "<|im_start|>", "qwen3": "<|im_start|>", "llama3.1": "<|start_header_id|>"}[name]
    assert reply(other)["finish_reason"] == "length"


def llama(path, **kwargs):
    from llama_cpp import Llama
    return Llama(model_path=str(path), n_ctx=512, verbose=False, **kwargs)
