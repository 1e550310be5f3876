"""What SFT actually trains on: labels exactly on assistant tokens of every turn, and packing that keeps
conversations apart (each packed document attends only to itself)."""
import torch

from medforge import params
from medforge.modeling import load_tokenizer
from medforge.train import make_trainer

CONVERSATIONS = [
    {"messages": [{"role": "system", "content": "You are a careful medical assistant."},
                  {"role": "user", "content": "I have fever and cough."},
                  {"role": "assistant", "content": "It may be influenza. Please see respiratory medicine."},
                  {"role": "user", "content": "怎么治疗？"},
                  {"role": "assistant", "content": "休息、补液，必要时抗病毒治疗。"}]},
    {"messages": [{"role": "user", "content": "Which department treats hypertension?"},
                  {"role": "assistant", "content": "Cardiology"}]},
    {"messages": [{"role": "user", "content": "高血压应该挂哪个科？"},
                  {"role": "assistant", "content": "心内科"},
                  {"role": "user", "content": "What warning signs need urgent care?"},
                  {"role": "assistant", "content": "Seek urgent care if you notice chest pain."}]},
]
FP32 = params.load("model", dtype="float32", attn_implementation="sdpa")
TOOLS = [{"type": "function", "function": {"name": "find_department", "description": "The department for a condition",
                                           "parameters": {"type": "object",
                                                          "properties": {"condition": {"type": "string"}}}}}]
CALL = {"type": "function", "function": {"name": "find_department", "arguments": {"condition": "高血压"}}}
TOOL_USE = {"messages": [{"role": "user", "content": "高血压应该挂哪个科？"},
                         {"role": "assistant", "content": "", "tool_calls": [CALL]},
                         {"role": "tool", "content": '{"department": "心内科"}'},
                         {"role": "assistant", "content": "请挂心内科。"}], "tools": TOOLS}


def trainer_for(model_dir, tmp_path, packing, max_length=256, records=CONVERSATIONS):
    p = params.load("sft", init=str(model_dir), finetuning="lora", packing=packing, packing_strategy="bfd",
                    max_length=max_length, batch_size=2)
    return make_trainer(p, records, records, str(tmp_path), assistant_only_loss=True, mp=FP32)


def expected_labels(tok, conversation):
    """Token ids of each assistant turn's content plus its end-of-turn token, in order."""
    return [t for m in conversation["messages"] if m["role"] == "assistant"
            for t in tok.encode(m["content"] + "<|im_end|>")]


def runs(labels):
    """Number of contiguous labelled spans."""
    flags = [label != -100 for label in labels]
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


def test_only_assistant_tokens_of_every_turn_carry_labels(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    dataset = trainer_for(tiny_model_dir, tmp_path, packing=False).train_dataset
    assert len(dataset) == len(CONVERSATIONS)
    for row, conversation in zip(dataset, CONVERSATIONS, strict=True):
        labelled = [label for label in row["labels"] if label != -100]
        assert labelled == expected_labels(tok, conversation)
        assert runs(row["labels"]) == sum(m["role"] == "assistant" for m in conversation["messages"])
        assert all(label in (-100, token) for label, token in zip(row["labels"], row["input_ids"], strict=True))


def test_packing_merges_conversations_and_keeps_their_labels(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    packed = trainer_for(tiny_model_dir, tmp_path, packing=True).train_dataset
    assert len(packed) < len(CONVERSATIONS)
    all_labels = [label for row in packed for label in row["labels"] if label != -100]
    expected = [expected_labels(tok, c) for c in CONVERSATIONS]
    assert sorted(all_labels) == sorted(t for e in expected for t in e)
    assert sum(len(row["seq_lengths"]) for row in packed) == len(CONVERSATIONS)


def test_packed_documents_do_not_attend_to_each_other(tiny_model_dir, tmp_path):
    trainer = trainer_for(tiny_model_dir, tmp_path, packing=True)
    row = trainer.train_dataset[0]
    assert len(row["seq_lengths"]) >= 2
    batch = trainer.data_collator([row])
    assert "position_ids" in batch and batch["input_ids"].shape[0] == 1
    model = trainer.model.eval()
    with torch.no_grad():
        packed_logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for length in row["seq_lengths"]:
            alone = model(input_ids=batch["input_ids"][:, start:start + length]).logits[0]
            torch.testing.assert_close(packed_logits[start:start + length], alone, atol=1e-4, rtol=1e-4)
            start += length


def test_tool_calls_are_trained_on_and_tool_results_never(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    row = trainer_for(tiny_model_dir, tmp_path, packing=False, max_length=1024, records=[TOOL_USE]).train_dataset[0]
    labelled = [label for label, token in zip(row["labels"], row["input_ids"], strict=True) if label != -100]
    call = '<tool_call>\n{"name": "find_department", "arguments": {"condition": "高血压"}}\n</tool_call><|im_end|>'
    assert labelled == tok.encode(call) + tok.encode("请挂心内科。<|im_end|>")
    text = tok.decode(row["input_ids"])
    assert '"name": "find_department", "description"' in text.split("<|im_start|>user")[0]  # the schema, unlabelled
    assert '<|im_start|>tool\n{"department": "心内科"}<|im_end|>' in text and runs(row["labels"]) == 2


def test_a_prepared_file_trains_as_its_records_do(tiny_model_dir, tmp_path):
    """The stage reads its JSONL memory-mapped and tokenizes it in several processes: the same rows as a list."""
    import json
    records = (CONVERSATIONS + [TOOL_USE]) * 600  # 2,400 records: two tokenizing processes
    path = tmp_path / "sft_train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    p = params.load("sft", init=str(tiny_model_dir), finetuning="lora", packing=False, max_length=1024,
                    dataset_num_proc=2)
    from_file = make_trainer(p, path, None, str(tmp_path / "a"), assistant_only_loss=True, mp=FP32).train_dataset
    from_list = make_trainer(p, records, None, str(tmp_path / "b"), assistant_only_loss=True, mp=FP32).train_dataset
    assert len(from_file) == len(records) and from_file[:] == from_list[:]
    assert (tmp_path / "a" / "datasets").is_dir()  # the Arrow copy, in the stage's own run directory
