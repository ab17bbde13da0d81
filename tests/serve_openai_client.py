#!/usr/bin/env python3
"""mamba serve against the official `openai` Python client: completions and chat completions,
whole and streamed, the model list, and the client's error classes for a bad request and a
wrong API key. The server runs on loopback (--port 0) over the small fixture model with the
GPT-2-style test tokenizer and a ChatML template.

The client comes from a virtual environment (.ci/run makes one: python3 -m venv /tmp/venv &&
/tmp/venv/bin/pip install openai); $MAMBA_OPENAI_VENV names another. Without one the test is
skipped (exit 77)."""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77


def reexec_in_venv():
    try:
        import openai  # noqa: F401
        return
    except ImportError:
        pass
    venv = os.environ.get("MAMBA_OPENAI_VENV", "/tmp/venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python) or os.path.realpath(sys.executable) == os.path.realpath(python):
        print(f"no openai client (looked in {venv}): skipped")
        sys.exit(SKIP)
    os.execv(python, [python] + sys.argv)


def make_checkpoint(data, where):
    shutil.copy(os.path.join(data, "models/small/model.safetensors"), where)
    shutil.copy(os.path.join(data, "tokenizer/gpt2_tiny.json"), os.path.join(where, "tokenizer.json"))
    with open(os.path.join(data, "models/small/config.json")) as f:
        config = json.load(f)
    config["eos_token_id"] = 127  # <|endoftext|> of the test tokenizer
    with open(os.path.join(where, "config.json"), "w") as f:
        json.dump(config, f)
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                "'<|im_end|>' + '\\n'}}{% endfor %}")
    with open(os.path.join(where, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "chat_template": template}, f)


def start_server(mamba, model, log_path):
    log = open(log_path, "w")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([mamba, "serve", "--model", model, "--port", "0", "--backend", "cpu", "--threads", "1",
                             "--api-key", "test-key", "--name", "small-test"], stdout=subprocess.DEVNULL, stderr=log,
                            env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log_path) as f:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", f.read())
        if m:
            return proc, int(m.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    with open(log_path) as f:
        sys.exit("mamba serve did not start: " + f.read())


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def run(port):
    import openai
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="test-key", max_retries=0, timeout=60)
    models = client.models.list()
    check([m.id for m in models.data] == ["small-test"], f"models: {models}")

    # completions, whole and streamed (greedy: the same text)
    c = client.completions.create(model="small-test", prompt="hello world", max_tokens=12, temperature=0,
                                  extra_body={"ignore_eos": True})
    check(c.object == "text_completion" and c.model == "small-test", f"completion: {c}")
    check(c.choices[0].finish_reason == "length", f"finish_reason {c.choices[0].finish_reason}")
    check(c.usage.prompt_tokens == 4 and c.usage.completion_tokens == 12 and c.usage.total_tokens == 16,
          f"usage {c.usage}")
    text = c.choices[0].text
    pieces, finish, usage = [], None, None
    for chunk in client.completions.create(model="small-test", prompt="hello world", max_tokens=12, temperature=0,
                                           stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True}):
        if chunk.choices:
            pieces.append(chunk.choices[0].text)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    check("".join(pieces) == text, f"streamed {''.join(pieces)!r} != whole {text!r}")
    check(finish == "length" and usage and usage.completion_tokens == 12, f"stream end: {finish}, {usage}")

    # chat, whole and streamed, sampled with a seed
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    r = client.chat.completions.create(model="small-test", messages=messages, max_tokens=16, temperature=0.8, seed=5)
    check(r.object == "chat.completion" and r.choices[0].message.role == "assistant", f"chat: {r}")
    content = r.choices[0].message.content
    check(isinstance(content, str), "chat content")
    pieces, roles = [], []
    for chunk in client.chat.completions.create(model="small-test", messages=messages, max_tokens=16, temperature=0.8,
                                                seed=5, stream=True):
        check(chunk.object == "chat.completion.chunk", f"chunk object {chunk.object}")
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        if d.content:
            pieces.append(d.content)
    check(roles == ["assistant"], f"roles {roles}")
    check("".join(pieces) == content, f"streamed chat {''.join(pieces)!r} != whole {content!r}")

    # errors arrive as the client's exception classes, with the server's message
    try:
        client.completions.create(model="small-test", prompt="x", max_tokens=0)
        check(False, "max_tokens 0 was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "max_tokens" in str(e), f"bad request: {e}")
    bad = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
    try:
        bad.models.list()
        check(False, "a wrong key was accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, f"auth: {e}")
    print(f"openai {openai.__version__}: completions and chat, whole and streamed, errors: ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mamba", required=True)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    reexec_in_venv()
    work = tempfile.mkdtemp(prefix="mamba-openai-")
    try:
        make_checkpoint(args.data, work)
        proc, port = start_server(args.mamba, work, os.path.join(work, "server.log"))
        try:
            run(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = -1
        check(rc == 0, f"mamba serve exited with {rc} after SIGTERM")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
