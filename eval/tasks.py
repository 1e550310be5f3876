"""lm-eval-harness task files for medforge's held-out sets.

Prompts are rendered once with the model's own chat template, so every model variant is scored on the
same text by lm-eval's own log-likelihood machinery:
  medforge_mcq         multiple-choice accuracy: question and lettered options shown, each option's text scored by
                       log-likelihood (acc, and length-normalised acc_norm)
  medforge_preference  held-out preference accuracy: log p(chosen) > log p(rejected)
  medforge_answer_ppl  per-token perplexity of held-out assistant answers, conditioned on their conversation
"""
from __future__ import annotations

import shutil
from pathlib import Path

from medforge import chat
from medforge.formats import mcq_prompt, read_canonical, to_chat, to_mcq, to_preference
from medforge.io import write_jsonl

UTILS = Path(__file__).with_name("lm_eval_utils.py")

MULTIPLE_CHOICE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: prompt
doc_to_choice: choices
doc_to_target: target
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""

ANSWER_PPL = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood
doc_to_text: prompt
doc_to_target: answer
target_delimiter: ""
process_results: !function lm_eval_utils.answer_ppl_results
metric_list:
  - metric: answer_ppl
    aggregation: !function lm_eval_utils.token_perplexity
    higher_is_better: false
"""


def render(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    return chat.render(tokenizer, messages, tools, add_generation_prompt=True)


def continuation_tokens(tokenizer, prompt: str, answer: str) -> int:
    """Tokens lm-eval scores for `answer` after `prompt` (it moves the prompt's trailing spaces to the answer)."""
    stripped = prompt.rstrip()
    return len(tokenizer.encode(prompt + answer)) - len(tokenizer.encode(stripped))


def answer_docs(tokenizer, conversations):
    """One doc per assistant turn: the exact text the template renders for that turn, after its history."""
    for conv in conversations:
        messages = conv["messages"]
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            prompt = render(tokenizer, messages[:i])
            full = tokenizer.apply_chat_template(messages[:i + 1], tokenize=False)
            # The turn as rendered (answer + end-of-turn token), minus the template's filler after it.
            answer = full[len(prompt):].rstrip() if full.startswith(prompt) else m["content"]
            yield {"prompt": prompt, "answer": answer, "n_tokens": continuation_tokens(tokenizer, prompt, answer)}


def write_tasks(directory: Path, tokenizer, mcq_file: str, chat_file: str, preference_file: str | None) -> list[str]:
    """Write data + YAML for each held-out set into `directory`; return the task names."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(UTILS, directory / UTILS.name)
    tasks = {}
    mcq = [{"prompt": render(tokenizer, [{"role": "user", "content": mcq_prompt(q)}]),
            "choices": list(q["options"].values()), "target": list(q["options"]).index(q["answer"])}
           for q in read_canonical(mcq_file, to_mcq)]
    tasks["medforge_mcq"] = (MULTIPLE_CHOICE, mcq)
    if preference_file:
        pairs = [{"prompt": render(tokenizer, p["prompt"]), "choices": [p["chosen"], p["rejected"]], "target": 0}
                 for p in read_canonical(preference_file, to_preference)]
        tasks["medforge_preference"] = (MULTIPLE_CHOICE, pairs)
    tasks["medforge_answer_ppl"] = (ANSWER_PPL, list(answer_docs(tokenizer, read_canonical(chat_file, to_chat))))
    for name, (template, docs) in tasks.items():
        data = directory / f"{name}.jsonl"
        write_jsonl(data, docs)
        (directory / f"{name}.yaml").write_text(template.format(task=name, data=data.resolve()), encoding="utf-8")
    return list(tasks)
