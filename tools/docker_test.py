"""`make docker-test`: build the serving image, run it on a GGUF and talk to it over HTTP.

    python3 tools/docker_test.py models/gguf/model-q4_k_m.gguf

No registry is reachable here, so the base image is made once with debootstrap and imported as medforge-base:bookworm
(with the host's CA bundle, so that pip in the build trusts the network's TLS proxy: a test-harness step, not part of
the Dockerfile). The engine is started when it is not running and we are root. Checks: the container turns healthy
(its HEALTHCHECK, GET /health), a chat completion with the API key returns a non-empty assistant message, the same
request without the key gets 401. Reruns reuse the base image and Docker's layer cache.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BASE = "medforge-base:bookworm"
IMAGE = "medforge-serve:test"
KEY = "docker-test-key"


def fail(message: str) -> None:
    raise SystemExit(f"docker-test: {message}")


def docker(*args: str, **kwargs) -> str:
    return subprocess.run(["docker", *args], check=True, text=True, stdout=subprocess.PIPE, **kwargs).stdout.strip()


def ok(*cmd: str) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def start_engine() -> None:
    if ok("docker", "info"):
        return
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        fail("the Docker engine is not reachable: start it (dockerd), or run this as root with the Debian package "
             "docker.io installed (make system-deps)")
    with open("/tmp/medforge-dockerd.log", "ab") as log:
        subprocess.Popen(["dockerd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    for _ in range(60):
        if ok("docker", "info"):
            return
        time.sleep(1)
    fail("dockerd did not start within 60 s: see /tmp/medforge-dockerd.log")


def make_base() -> None:
    if ok("docker", "image", "inspect", BASE):
        return
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        fail(f"making the base image {BASE} needs root and the Debian package debootstrap (make system-deps)")
    with tempfile.TemporaryDirectory() as rootfs:
        os.chmod(rootfs, 0o755)  # it becomes the image's /
        packages = "python3,python3-venv,python3-pip,ca-certificates"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={packages}", "bookworm", rootfs], check=True,
                       stdout=subprocess.DEVNULL)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", f"{rootfs}/etc/ssl/certs/ca-certificates.crt")
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", BASE, stdin=tar.stdout)
        if tar.wait() != 0:
            fail(f"tar of the debootstrapped root failed ({tar.returncode})")


def chat(url: str, key: str | None) -> tuple[int, dict]:
    body = json.dumps({"model": "medforge", "max_tokens": 48, "temperature": 0,
                       "messages": [{"role": "user", "content": "I have a mild headache. What should I do?"}]})
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    request = urllib.request.Request(f"{url}/v1/chat/completions", body.encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, {}


def wait_healthy(container: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", container))
        if not state["Running"]:
            fail(f"the container exited ({state['ExitCode']})")
        if state["Health"]["Status"] == "healthy":
            return
        time.sleep(1)
    fail(f"the container was not healthy within {timeout:.0f} s")


def main() -> None:
    gguf = Path(sys.argv[1] if len(sys.argv) > 1 else "models/gguf/model-q4_k_m.gguf").resolve()
    if not gguf.is_file():
        fail(f"{gguf} does not exist (make gguf)")
    t0 = time.monotonic()
    start_engine()
    make_base()
    t1 = time.monotonic()
    subprocess.run(["docker", "build", "-f", "docker/serve.Dockerfile", "--build-arg", f"BASE_IMAGE={BASE}",
                    "-t", IMAGE, "."], check=True)
    t2 = time.monotonic()
    # --health-interval: the image's HEALTHCHECK, polled every second instead of every 30 s.
    container = docker("run", "-d", "-p", "127.0.0.1::8000", "-e", f"MEDFORGE_API_KEY={KEY}",
                       "--health-interval", "1s", "--mount", f"type=bind,src={gguf},dst=/models/model.gguf,readonly",
                       IMAGE)
    try:
        wait_healthy(container)
        t3 = time.monotonic()
        url = "http://" + docker("port", container, "8000/tcp").splitlines()[0]
        status, reply = chat(url, KEY)
        message = reply.get("choices", [{}])[0].get("message", {}) if status == 200 else {}
        if message.get("role") != "assistant" or not message.get("content", "").strip():
            fail(f"chat completion with the key: HTTP {status}, {json.dumps(reply)[:500]}")
        status, _ = chat(url, None)
        if status != 401:
            fail(f"chat completion without the key: HTTP {status}, expected 401")
        t4 = time.monotonic()
    except BaseException:
        subprocess.run(["docker", "logs", "--tail", "40", container], stdout=sys.stderr, stderr=sys.stderr)
        raise
    finally:
        subprocess.run(["docker", "rm", "-f", container], stdout=subprocess.DEVNULL)
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE)) / 1e6
    print(f"docker-test: ok. engine + base {t1 - t0:.1f} s, build {t2 - t1:.1f} s ({IMAGE}, {size:.0f} MB), "
          f"healthy after {t3 - t2:.1f} s, chat + 401 check {t4 - t3:.1f} s")
    print(f"docker-test: the assistant said: {message['content'].strip()!r}")


if __name__ == "__main__":
    main()
