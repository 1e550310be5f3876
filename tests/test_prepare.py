"""The `prepare` stage: formats mixed in one run, duplicates, deterministic split, clear errors, counted rejects."""
import json
import random

import pytest

from stages import prepare
from tests.pipeline import ROOT, set_params, stage_args

ARGS = stage_args("prepare")

GOOD_SFT = [
    {"conversations": [{"from": "human", "value": "头痛怎么办？"}, {"from": "gpt", "value": "请休息。"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
    {"instruction": "Name a symptom of flu", "input": "", "output": "Fever"},
]


def write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_prepare(workdir, on_error="fail", **sources):
    empty = {"pretrain": [], "sft": [], "preference": [], "questions": [], "phi": "report"}
    set_params(workdir, {"data": {**empty, "on_error": on_error, **sources}}, base=ROOT)
    prepare.main(ARGS)
    return json.loads((workdir / "metrics/data.json").read_text())


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_mixed_formats_duplicates_and_split(workdir):
    lines = [json.dumps(r, ensure_ascii=False) for r in GOOD_SFT] + [json.dumps(GOOD_SFT[0], ensure_ascii=False)]
    text = write(workdir / "corpus.txt", ["第一段。", "", "Second paragraph."])
    metrics = run_prepare(workdir, sft=[write(workdir / "sft.jsonl", lines)], pretrain=[text])
    assert metrics["sft"] == {"read": 4, "rejected": 0, "duplicates": 1, "train": metrics["sft"]["train"],
                              "validation": 3 - metrics["sft"]["train"]}
    assert metrics["pretrain"]["read"] == 2
    out = read(workdir / "data/prepared/sft_train.jsonl") + read(workdir / "data/prepared/sft_validation.jsonl")
    assert sorted(r["messages"][-1]["content"] for r in out) == ["Fever", "Hello", "请休息。"]
    first = (workdir / "data/prepared/sft_train.jsonl").read_bytes()
    run_prepare(workdir, sft=[str(workdir / "sft.jsonl")], pretrain=[text])
    assert (workdir / "data/prepared/sft_train.jsonl").read_bytes() == first


def test_bad_record_stops_with_file_line_and_field(workdir):
    lines = [json.dumps(GOOD_SFT[0], ensure_ascii=False),
             json.dumps({"conversations": [{"from": "doctor", "value": "x"}]})]
    source = write(workdir / "bad.jsonl", lines)
    with pytest.raises(SystemExit) as e:
        run_prepare(workdir, sft=[source])
    assert str(e.value).startswith(f"{source}:2: field 'conversations[0].from': expected one of")
    assert not (workdir / "data/prepared").exists()


def test_invalid_json_is_a_bad_record_too(workdir):
    source = write(workdir / "broken.jsonl", [json.dumps(GOOD_SFT[1]), '{"messages": ['])
    with pytest.raises(SystemExit, match=r"broken.jsonl:2: field '\(line\)': expected valid JSON"):
        run_prepare(workdir, sft=[source])


def test_skip_writes_rejects_and_counts_them(workdir):
    lines = [json.dumps(GOOD_SFT[1]), json.dumps({"messages": []}), "not json",
             json.dumps({"prompt": "q", "chosen": "a", "rejected": "a"})]
    metrics = run_prepare(workdir, on_error="skip", sft=[write(workdir / "mixed.jsonl", lines[:3])],
                          preference=[write(workdir / "pref.jsonl", lines[3:])])
    assert metrics["sft"]["rejected"] == 2 and metrics["sft"]["train"] + metrics["sft"]["validation"] == 1
    assert metrics["preference"]["rejected"] == 1
    rejects = read(workdir / "data/prepared/rejects.jsonl")
    assert [(r["line"], r["kind"]) for r in rejects] == [(2, "sft"), (3, "sft"), (1, "preference")]
    assert "field 'rejected'" in rejects[2]["error"]


def test_missing_source_file_is_named(workdir):
    with pytest.raises(SystemExit, match="nope.jsonl: no such file"):
        run_prepare(workdir, sft=["nope.jsonl"])


@pytest.mark.parametrize("source, call", [
    ("hf:org/med", ("org/med", None, "train")),
    ("hf:org/med:validation", ("org/med", None, "validation")),
    ("hf:shibing624/medical:finetune:train", ("shibing624/medical", "finetune", "train")),
])
def test_hf_sources_go_through_load_dataset(workdir, monkeypatch, source, call):
    """No hub is reachable here: stand in for datasets.load_dataset and check what prepare asks it for."""
    import datasets
    calls = []

    def fake_load_dataset(name, config=None, split=None, revision=None, streaming=False):
        calls.append((name, config, split, revision, streaming))
        return iter([GOOD_SFT[0], {"conversations": [{"from": "human", "value": ""}]}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    set_params(workdir, {"data": {"pretrain": [], "sft": [source], "preference": [], "on_error": "skip",
                                  "hf_revision": "abc123"}}, base=ROOT)
    prepare.main(ARGS)
    assert calls == [(*call, "abc123", True)]  # streamed: rows are read as they arrive, none held
    metrics = json.loads((workdir / "metrics/data.json").read_text())
    assert metrics["sft"]["read"] == 2 and metrics["sft"]["rejected"] == 1
    rejects = read(workdir / "data/prepared/rejects.jsonl")
    assert rejects[0]["source"] == source and rejects[0]["line"] == 2


def test_malformed_hf_source_is_named(workdir):
    with pytest.raises(SystemExit, match=r"hf:org/med:a:b:c: expected hf:org/name\[:config\]:split"):
        run_prepare(workdir, sft=["hf:org/med:a:b:c"])


def test_invalid_utf8_names_file_and_line_or_is_a_counted_reject(workdir):
    good = json.dumps(GOOD_SFT[1]).encode()
    source = workdir / "latin1.jsonl"
    source.write_bytes(good + b"\n" + '{"instruction": "Fièvre?", "output": "Oui"}'.encode("latin-1") + b"\n" + good)
    with pytest.raises(SystemExit, match=r"latin1.jsonl:2: field '\(line\)': expected valid UTF-8 \(byte 0xe8 "):
        run_prepare(workdir, sft=[str(source)])
    metrics = run_prepare(workdir, on_error="skip", sft=[str(source)])
    assert metrics["sft"]["read"] == 3 and metrics["sft"]["rejected"] == 1 and metrics["sft"]["duplicates"] == 1
    assert read(workdir / "data/prepared/rejects.jsonl")[0]["line"] == 2


def test_a_utf8_bom_is_accepted(workdir):
    source = workdir / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD_SFT[1]).encode() + b"\n")
    text = workdir / "bom.txt"
    text.write_bytes("\ufeff第一段。\n".encode())
    metrics = run_prepare(workdir, sft=[str(source)], pretrain=[str(text)])
    assert metrics["sft"]["rejected"] == 0 and metrics["sft"]["train"] + metrics["sft"]["validation"] == 1
    prepared = read(workdir / "data/prepared/pretrain_train.jsonl") + read(
        workdir / "data/prepared/pretrain_validation.jsonl")
    assert prepared == [{"text": "第一段。"}]


def test_a_source_without_records_is_named(workdir):
    empty = write(workdir / "empty.jsonl", ["", "  "])
    with pytest.raises(SystemExit, match=r"empty.jsonl: no records in it \(data.sft\)"):
        run_prepare(workdir, sft=[write(workdir / "ok.jsonl", [json.dumps(GOOD_SFT[1])]), empty])


def test_a_json_file_that_is_not_utf8_or_json_is_named(workdir):
    (workdir / "a.json").write_bytes(b'[\n{"text": "caf\xe9"}]')
    with pytest.raises(SystemExit, match=r"a.json:2: not valid UTF-8 \(byte 0xe9\)"):
        run_prepare(workdir, pretrain=[str(workdir / "a.json")])
    (workdir / "b.json").write_text('[\n{"text": "x"},\n]')
    with pytest.raises(SystemExit, match=r"b.json:3: not valid JSON"):
        run_prepare(workdir, pretrain=[str(workdir / "b.json")])


def test_questions_import_for_grpo_with_their_answer_rule(workdir):
    from medforge import params
    from stages.grpo import as_rows, training_rows
    qa = [{"question": f"{a}+{b}=?", "answer": str(a + b)} for a, b in ((1, 2), (12, 34), (57, 29))] + \
         [{"question": "膺窗穴的定位是什么?", "answer": "第3肋间隙，距前正中线4寸。"},
          {"question": "Which?", "options": {"A": "Cardiology", "B": "Neurology"}, "answer": "A"}]
    metrics = run_prepare(workdir, questions=[write(workdir / "grpo.jsonl", [json.dumps(r, ensure_ascii=False)
                                                                            for r in qa])])
    assert metrics["questions"]["read"] == 5 and metrics["sft"]["read"] == 0
    prepared = workdir / "data/prepared/questions_train.jsonl"
    validation = workdir / "data/prepared/questions_validation.jsonl"
    rows = as_rows(str(prepared)) + as_rows(str(validation))
    assert sorted(r["match"] for r in rows) == ["choice", "exact", "numeric", "numeric", "numeric"]
    mcq = next(r for r in rows if r["match"] == "choice")
    assert mcq["prompt"][0]["content"] == "Which?\nA. Cardiology\nB. Neurology" and mcq["keys"] == ["A", "B"]
    assert next(r for r in rows if r["answer"] == "86")["prompt"] == [{"role": "user", "content": "57+29=?"}]
    # one rule for the whole dataset
    assert {r["match"] for r in as_rows(str(prepared), "exact")} == {"exact"}
    with pytest.raises(SystemExit, match="grpo.accuracy: choice, but .* has questions without options"):
        training_rows(params.load("grpo", ROOT / "params.yaml", prompts=str(prepared), accuracy="choice",
                                  num_prompts=0))


def test_digests_find_repeats_across_merges():
    rng = random.Random(0)
    stream = [bytes([rng.randrange(40)]) * 16 for _ in range(500)]
    digests, seen, fresh = prepare.Digests(merge_at=7), set(), []
    for start in range(0, len(stream), 13):
        fresh += digests.new(stream[start:start + 13])
    assert fresh == [not (d in seen or seen.add(d)) for d in stream]
    assert len(digests.merged) + len(digests.recent) == 40


def test_worker_processes_write_the_same_files(workdir):
    """More records than a chunk, repeats across chunks and a bad line: the pool's output is the inline one's."""
    rng = random.Random(0)
    lines = [json.dumps({"instruction": f"q{rng.randrange(2000)}", "output": "a"}) for _ in range(3 * prepare.CHUNK)]
    source = write(workdir / "sft.jsonl", [*lines[:1500], "not json", *lines[1500:]])
    outputs = []
    for num_proc in (1, 2):
        metrics = run_prepare(workdir, on_error="skip", sft=[source], num_proc=num_proc)
        outputs.append(({kind: counts for kind, counts in metrics.items() if kind != "provenance"}, *(p.read_bytes() for p in sorted((workdir / "data/prepared").iterdir()))))
    assert outputs[0] == outputs[1]
    assert outputs[0][0]["sft"]["duplicates"] > 1000 and outputs[0][0]["sft"]["rejected"] == 1
