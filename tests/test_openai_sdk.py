"""`make serve` through the official `openai` Python SDK, a client no one here wrote, for both engines (llama.cpp on
a GGUF, transformers on an HF directory): every parameter is honoured or refused with a 400 naming it, never
silently dropped; unserved routes get OpenAI-style 404s. tests/test_serve.py covers the same server at the HTTP level.
"""
import json

import openai
import pytest

KEY = "sdk-key"
ASK = [{"role": "user", "content": "Which department treats hypertension? 高血压挂哪个科？"}]
# Greedy, without llama.cpp's default repeat penalty (tests/test_serve.py says why).
GREEDY = {"temperature": 0, "extra_body": {"repeat_penalty": 1.0}}


@pytest.fixture(scope="module", params=["llama.cpp", "transformers"])
def engine(request):
    return request.param


@pytest.fixture(scope="module")
def client(request, engine, start_server):
    model = request.getfixturevalue("tiny_gguf" if engine == "llama.cpp" else "tiny_model_dir")
    url = start_server(model, "--api-key", KEY, "--system-prompt", "")  # the default one overflows 256 tokens
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def chat(client, **kwargs):
    return client.chat.completions.create(model="medforge", messages=ASK, **{**GREEDY, **kwargs})


def refused(call, error=openai.BadRequestError) -> openai.APIStatusError:
    with pytest.raises(error) as caught:
        call()
    return caught.value


def test_models_and_a_plain_chat(client):
    assert [m.id for m in client.models.list()] == ["medforge"]
    reply = chat(client, max_completion_tokens=8)
    assert reply.choices[0].message.role == "assistant" and isinstance(reply.choices[0].message.content, str)
    assert 1 <= reply.usage.completion_tokens <= 8


def test_max_completion_tokens_is_honoured_and_wins_over_max_tokens(client):
    assert chat(client, max_completion_tokens=3).usage.completion_tokens == 3  # the random model never stops by 3
    both = chat(client, max_completion_tokens=2, max_tokens=6)
    assert both.usage.completion_tokens == 2 and both.choices[0].finish_reason == "length"
    assert chat(client, max_tokens=5).usage.completion_tokens == 5


def test_n_above_one_is_refused_not_answered_with_fewer_choices(client):
    error = refused(lambda: chat(client, n=2, max_completion_tokens=4))
    assert error.param == "n" and "one choice per request" in error.message
    assert len(chat(client, n=1, max_completion_tokens=4).choices) == 1


def test_streaming_with_usage_matches_the_plain_reply(client):
    plain = chat(client, max_completion_tokens=8)
    chunks = list(chat(client, max_completion_tokens=8, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == plain.usage.model_dump()
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert text == plain.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert all(c.usage is None for c in chunks[:-1])
    without = list(chat(client, max_completion_tokens=8, stream=True))
    assert all(c.choices for c in without) and all(c.usage is None for c in without)


def test_stop_ends_the_reply_before_the_stop_string(client):
    varied = {"max_completion_tokens": 16, "presence_penalty": 2.0}  # greedy alone repeats one token
    full = chat(client, **varied, logprobs=True)
    # one whole ASCII token of the reply's second half: the random model's text is full of broken UTF-8 fragments,
    # which a stop string spanning tokens would not match in the bytes
    tokens = [t.token for t in full.choices[0].logprobs.content]
    stop = next((t for t in tokens[len(tokens) // 2:] if t.isascii() and t.isalnum()), None)
    full = full.choices[0].message.content
    assert stop, f"no ASCII token to stop at in {tokens}"
    cut = chat(client, **varied, stop=[stop])
    text = cut.choices[0].message.content
    assert len(text) < len(full) and full.startswith(text) and full[len(text):].startswith(stop)
    assert cut.choices[0].finish_reason == "stop"
    # llama-cpp-python streams broken UTF-8 a little differently from its whole reply: compare stream with stream
    streamed = ["".join(c.choices[0].delta.content or "" for c in chat(client, **varied, stream=True, **stopping))
                for stopping in ({}, {"stop": stop})]
    assert len(streamed[1]) < len(streamed[0]) and streamed[0][len(streamed[1]):].startswith(stop)


def test_seed_makes_sampling_repeatable(client):
    def sampled(seed):
        return chat(client, max_completion_tokens=12, temperature=1.0, seed=seed).choices[0].message.content
    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)


def test_presence_and_frequency_penalties_change_a_repetitive_reply(client):
    plain = chat(client, max_completion_tokens=16).choices[0].message.content
    penalised = chat(client, max_completion_tokens=16, frequency_penalty=2.0, presence_penalty=2.0)
    assert penalised.choices[0].message.content != plain
    assert refused(lambda: chat(client, frequency_penalty=3.0)).param == "frequency_penalty"


def test_logprobs_are_the_greedy_tokens_and_their_alternatives(client):
    reply = chat(client, max_completion_tokens=6, logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)  # greedy takes the best
        assert [t.logprob for t in entry.top_logprobs] == sorted((t.logprob for t in entry.top_logprobs), reverse=True)
    assert refused(lambda: chat(client, top_logprobs=2)).param == "top_logprobs"
    assert refused(lambda: chat(client, logprobs=True, stream=True)).param == "logprobs"


def test_response_format_is_constrained_on_llama_cpp_and_refused_on_transformers(client, engine):
    schema = {"type": "object", "properties": {"department": {"enum": ["cardiology", "neurology"]}},
              "required": ["department"], "additionalProperties": False}
    requests = {"json_schema": {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}},
                "json_object": {"type": "json_object"}}
    if engine == "transformers":
        for form in requests.values():
            assert refused(lambda form=form: chat(client, response_format=form)).param == "response_format"
        assert chat(client, max_completion_tokens=4, response_format={"type": "text"}).choices
        return
    reply = chat(client, max_completion_tokens=64, response_format=requests["json_schema"])
    assert json.loads(reply.choices[0].message.content)["department"] in ("cardiology", "neurology")
    reply = chat(client, max_completion_tokens=64, response_format=requests["json_object"])
    assert reply.choices[0].message.content.lstrip().startswith("{")


def test_parameters_the_server_does_not_honour_get_a_400_naming_them(client):
    tool = {"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {}}}}
    assert refused(lambda: chat(client, tools=[tool], tool_choice="required")).param == "tool_choice"  # tools: served
    error = refused(lambda: chat(client, extra_body={"repeat_penalty": 1.0, "best_of": 3}))
    assert error.param == "best_of" and "best_of: not supported" in error.message
    assert refused(lambda: chat(client, stream_options={"include_usage": True})).param == "stream_options"
    assert refused(lambda: chat(client, temperature=5)).param == "temperature"
    assert refused(lambda: chat(client, max_completion_tokens=0)).param == "max_completion_tokens"


def test_errors_are_openai_errors(client, engine):
    wrong = openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0)
    refused(lambda: chat(wrong), openai.AuthenticationError)
    error = refused(lambda: client.chat.completions.create(model="gpt-4o", messages=ASK), openai.NotFoundError)
    assert error.param == "model"
    error = refused(lambda: client.embeddings.create(model="medforge", input="胸痛"), openai.NotFoundError)
    assert "does not serve embeddings" in error.message
    if engine == "llama.cpp":
        text = client.completions.create(model="medforge", prompt="高血压", max_tokens=4, temperature=0,
                                         extra_body={"repeat_penalty": 1.0})
        assert text.usage.completion_tokens == 4
    else:
        error = refused(lambda: client.completions.create(model="medforge", prompt="高血压"), openai.NotFoundError)
        assert "/v1/completions: not served" in error.message
    assert len(chat(client, max_completion_tokens=2).choices) == 1  # still serving
