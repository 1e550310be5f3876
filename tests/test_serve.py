"""`make serve` for real: the server process on a loopback port, over HTTP, for both engines (llama.cpp on a GGUF,
transformers on an HF directory): the OpenAI routes, streaming, the API key, the default system prompt, and clear
4xx answers to bad requests after which the server keeps serving."""
import json
import os
import subprocess
import sys

import pytest
import requests
import yaml

from tests.conftest import ROOT

KEY = "test-key"
SYSTEM = "You are a careful medical assistant. 请及时就医。"  # the default disclaimer overflows 256 tokens
AUTH = {"Authorization": f"Bearer {KEY}"}
ASK = [{"role": "user", "content": "Which department treats hypertension? 高血压挂哪个科？"}]
# With llama.cpp's default repeat penalty the random test model greedily repeats a token that is a broken UTF-8
# fragment, and llama-cpp-python 0.3.36 keeps generating past max_tokens until such text completes, here never
# (the context fills and the request fails with a 500). A trained model emits whole characters.
SAMPLING = {"max_tokens": 8, "temperature": 0, "repeat_penalty": 1.0}


@pytest.fixture(scope="module", params=["llama.cpp", "transformers"])
def url(request, start_server):
    model = request.getfixturevalue("tiny_gguf" if request.param == "llama.cpp" else "tiny_model_dir")
    return start_server(model, "--api-key", KEY, "--system-prompt", SYSTEM)


def chat(url, headers=AUTH, **body):
    return requests.post(f"{url}/v1/chat/completions", headers=headers, timeout=60,
                         json={"messages": ASK, **SAMPLING, **body})


def test_health_and_models(url):
    assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok", "model": "medforge"}  # no key needed
    models = requests.get(f"{url}/v1/models", headers=AUTH, timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["medforge"]


def test_chat_completion(url):
    reply = chat(url, model="medforge")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert 1 <= body["usage"]["completion_tokens"] <= 8


def test_streaming_matches_the_plain_reply(url):
    plain = chat(url).json()["choices"][0]["message"]["content"]
    with requests.post(f"{url}/v1/chat/completions", headers=AUTH, stream=True, timeout=60,
                       json={"messages": ASK, **SAMPLING, "stream": True}) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in reply.iter_lines(decode_unicode=True)
                  if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e)["choices"][0] for e in events[:-1]]
    assert chunks[0]["delta"].get("role") == "assistant" and chunks[-1]["finish_reason"] in ("stop", "length")
    assert "".join(c["delta"].get("content", "") for c in chunks).strip() == plain.strip()


def test_default_system_prompt_is_added_unless_the_client_sends_one(url):
    default = chat(url).json()["usage"]["prompt_tokens"]
    explicit = chat(url, messages=[{"role": "system", "content": SYSTEM}, *ASK]).json()["usage"]["prompt_tokens"]
    bare = chat(url, messages=[{"role": "system", "content": "Hi."}, *ASK]).json()["usage"]["prompt_tokens"]
    assert default == explicit > bare


def test_api_key_is_required(url):
    assert chat(url, headers={}).status_code == 401
    assert chat(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(f"{url}/v1/models", timeout=5).status_code == 401


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b" " * 1_000_001, 413, "request body over 1000000 bytes"),
    ({"model": "gpt-4", "messages": ASK}, 404, "model 'gpt-4' not found"),
    ({"messages": "hello"}, 400, "messages: Input should be a valid list"),
    ({"messages": ASK, "max_tokens": -1}, 400, "max_tokens: expected an integer >= 1, got -1"),
    ({"messages": ASK, "temperature": "hot"}, 400, "temperature: expected a number in [0.0, 2.0]"),
    ({"messages": [{"role": "user", "content": "fever " * 2000}], "max_tokens": 8}, 400,
     "maximum context length is 256 tokens"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_stays_up(url, body, status, message):
    data = body if isinstance(body, bytes) else json.dumps(body)
    reply = requests.post(f"{url}/v1/chat/completions", headers=AUTH, data=data, timeout=60)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]["message"]
    assert chat(url).status_code == 200


def test_refuses_to_listen_beyond_loopback_without_a_key(tiny_gguf):
    result = subprocess.run([sys.executable, "-m", "serve", "--model", str(tiny_gguf), "--host", "0.0.0.0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr


def test_make_serve_without_variables_serves_params_yaml(tiny_gguf, tmp_path):
    """`make serve` takes model, host and port from params.yaml `serve:` (a copy of the project, MODEL/HOST/PORT
    unset), and a variable given overrides its key."""
    from bench.serving import answering, free_port
    for name in ("Makefile", ".venv", "medforge", "serve", *(p.name for p in ROOT.glob("requirements*"))):
        (tmp_path / name).symlink_to(ROOT / name)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    port = free_port()
    raw["serve"] |= {"model": str(tiny_gguf), "port": port, "model_id": "from-params"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True))
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL", "HOST", "PORT", "MAKEFLAGS", "MFLAGS")}
    with answering(["make", "serve"], f"http://{raw['serve']['host']}:{port}", cwd=tmp_path, env=env) as url:
        assert requests.get(f"{url}/health", timeout=5).json() == {"status": "ok", "model": "from-params"}
    other = free_port()
    with answering(["make", "serve", f"PORT={other}"], f"http://127.0.0.1:{other}", cwd=tmp_path, env=env) as url:
        assert requests.get(f"{url}/health", timeout=5).json()["model"] == "from-params"
