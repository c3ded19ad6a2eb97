#!/usr/bin/env python3
"""Drives the OpenAI-compatible API with the official `openai` Python client.

Run by the Rust integration tests (crates/api/tests/api/openai_python.rs and
crates/inference/tests/swarm/), which start the real server on an ephemeral
port. `--base-url` checks completions, chat, streaming, stop strings,
max_tokens, usage, seeds, models.list() and the 400/404 errors against a
server with a whole model; `--expect` gives the greedy answers the model
itself produced for one completion prompt and one chat question. `--unavailable-url` checks that a server
without a full route answers 503. `--plainest-url` makes the client's
plainest chat call (no max_tokens, no temperature) three times in a row,
then a normal call. Exits non-zero on the first failure.
"""

import argparse
import json
import sys

import openai

MODEL = "smollm2"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}")


def client(url):
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)


def stream_completion(c, **kw):
    """Returns (text, finish_reasons, usage, chunk_count) of a streamed completion."""
    text, finishes, usage, n = "", [], None, 0
    for chunk in c.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        n += 1
        for choice in chunk.choices:
            text += choice.text or ""
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    return text, finishes, usage, n


def completions(c, expect):
    prompt, max_tokens = expect["prompt"], expect["max_tokens"]
    r = c.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0)
    check(r.object == "text_completion", "completion object type")
    check(r.model == MODEL, "completion names the model")
    text = r.choices[0].text
    check(text == expect["text"], f"greedy completion equals the local model's: {text!r}")
    check(r.choices[0].finish_reason == "length", "max_tokens ends with finish_reason length")
    check(r.usage.prompt_tokens == expect["prompt_tokens"],
          f"prompt_tokens {r.usage.prompt_tokens} is the tokenizer's count")
    check(r.usage.completion_tokens == max_tokens, "completion_tokens equals max_tokens")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens,
          "total_tokens is the sum")

    s_text, finishes, usage, n = stream_completion(
        c, model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0)
    check(n > 2, f"the completion streams in several chunks ({n})")
    check(s_text == text, "streamed chunks concatenate to the whole completion")
    check(finishes == ["length"], f"the stream finishes once, with length: {finishes}")
    check(usage is not None and usage.prompt_tokens == r.usage.prompt_tokens
          and usage.completion_tokens == r.usage.completion_tokens,
          "the stream's usage chunk matches the whole completion's")

    # Stop strings: cut at the first occurrence of a piece of the greedy text.
    stop = text.strip()[len(text.strip()) // 2:][:3]
    check(len(stop) > 0 and stop in text, f"stop string {stop!r} is in the greedy text")
    want = text[:text.index(stop)]
    r = c.completions.create(model=MODEL, prompt=prompt, max_tokens=max_tokens,
                             temperature=0, stop=[stop, "\u0000never"])
    check(r.choices[0].text == want, f"text ends before the stop string: {r.choices[0].text!r}")
    check(r.choices[0].finish_reason == "stop", "stop string ends with finish_reason stop")
    check(r.usage.completion_tokens < max_tokens, "the stop string ends the generation early")
    s_text, finishes, _, _ = stream_completion(
        c, model=MODEL, prompt=prompt, max_tokens=max_tokens, temperature=0, stop=stop)
    check(s_text == want, f"the streamed text also ends before the stop string: {s_text!r}")
    check(finishes == ["stop"], "the stream finishes with stop")

    # Seeded sampling repeats; different seeds are allowed to differ.
    kw = dict(model=MODEL, prompt="My favourite colour is", max_tokens=12, temperature=0.9, top_p=0.95)
    a = c.completions.create(seed=7, **kw).choices[0].text
    b = c.completions.create(seed=7, **kw).choices[0].text
    check(a == b, f"the same seed gives the same sample: {a!r}")


def chat(c, expect):
    messages = [{"role": "user", "content": expect["question"]}]
    max_tokens = expect["max_tokens"]
    r = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0)
    check(r.object == "chat.completion", "chat object type")
    msg = r.choices[0].message
    check(msg.role == "assistant", "the reply is the assistant's")
    check(msg.content == expect["content"], f"greedy chat reply equals the local model's: {msg.content!r}")
    check(r.choices[0].finish_reason == expect["finish_reason"],
          f"chat finish_reason is {expect['finish_reason']}")
    check(r.usage.prompt_tokens == expect["prompt_tokens"],
          f"chat prompt_tokens {r.usage.prompt_tokens} counts the templated prompt")
    check(r.usage.completion_tokens == expect["completion_tokens"], "chat completion_tokens")

    content, roles, finishes, usage, n = "", [], [], None, 0
    stream = c.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        n += 1
        if n == 1:
            check(chunk.object == "chat.completion.chunk", "chat chunk object type")
        for choice in chunk.choices:
            if choice.delta.role is not None:
                roles.append(choice.delta.role)
            content += choice.delta.content or ""
            if choice.finish_reason is not None:
                finishes.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    check(n > 2, f"the chat streams in several chunks ({n})")
    check(roles[:1] == ["assistant"], f"the stream opens with the assistant role: {roles}")
    check(content == msg.content, "streamed chat deltas concatenate to the whole reply")
    check(finishes == [r.choices[0].finish_reason], f"the chat stream finishes once: {finishes}")
    check(usage is not None and usage.prompt_tokens == r.usage.prompt_tokens
          and usage.completion_tokens == r.usage.completion_tokens,
          "the chat stream's usage matches the whole reply's")


def models(c):
    ids = [m.id for m in c.models.list()]
    check(ids == [MODEL], f"models.list() names the served model: {ids}")


def expect_error(kind, status, param, call):
    try:
        call()
    except kind as e:
        check(e.status_code == status, f"{kind.__name__} has status {status}")
        body = e.body if isinstance(e.body, dict) else {}
        if param is not None:
            check(body.get("param") == param and param in str(e),
                  f"the {status} error names {param!r}: {e}")
        return
    raise AssertionError(f"expected {kind.__name__} ({status})")


def errors(c):
    base = dict(model=MODEL, prompt="Hello", max_tokens=4)
    expect_error(openai.BadRequestError, 400, "logprobs",
                 lambda: c.completions.create(logprobs=2, **base))
    expect_error(openai.BadRequestError, 400, "temperature",
                 lambda: c.completions.create(temperature=-1, **base))
    expect_error(openai.BadRequestError, 400, "logit_bias",
                 lambda: c.chat.completions.create(
                     model=MODEL, messages=[{"role": "user", "content": "hi"}], logit_bias={"1": 5}))
    expect_error(openai.BadRequestError, 400, "max_tokens",
                 lambda: c.completions.create(model=MODEL, prompt="Hello", max_tokens=0))
    expect_error(openai.BadRequestError, 400, "max_tokens",
                 lambda: c.chat.completions.create(
                     model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100000))
    expect_error(openai.NotFoundError, 404, "model",
                 lambda: c.completions.create(model="no-such-model", prompt="Hello", max_tokens=4))
    expect_error(openai.NotFoundError, 404, "model",
                 lambda: c.chat.completions.create(
                     model="no-such-model", messages=[{"role": "user", "content": "hi"}]))


def plainest(url):
    """The shortest call of the official client, three times in a row (no
    max_tokens, no temperature: the server's defaults), then a normal one."""
    c = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    for i in range(3):
        r = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello in one short sentence."}])
        choice = r.choices[0]
        check(choice.finish_reason in ("stop", "length"),
              f"plainest call {i + 1} finishes ({choice.finish_reason}) after "
              f"{r.usage.completion_tokens} tokens: {choice.message.content[:60]!r}")
        check(0 < r.usage.completion_tokens <= 1024,
              f"plainest call {i + 1} generated tokens, within the server's default budget")
    r = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                  max_tokens=8, temperature=0)
    check(r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens <= 8,
          f"a normal call after them works: {r.choices[0].message.content!r}")


def unavailable(c):
    for call in (
        lambda: c.completions.create(model=MODEL, prompt="Hello", max_tokens=4),
        lambda: c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4),
    ):
        try:
            call()
        except openai.InternalServerError as e:
            check(e.status_code == 503, "no route to a full model is a 503")
            check("no route" in str(e), f"the 503 says why: {e}")
            continue
        raise AssertionError("expected a 503 without a full route")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base-url", help="API of a server with the whole model")
    p.add_argument("--expect", help="JSON: the local model's greedy `completion` and `chat` answers")
    p.add_argument("--unavailable-url", help="API of a swarm client with no full route")
    p.add_argument("--plainest-url", help="API to call three times with the client's plainest call")
    a = p.parse_args()
    if not a.base_url and not a.unavailable_url and not a.plainest_url:
        p.error("give --base-url, --unavailable-url and/or --plainest-url")
    print(f"openai {openai.__version__}")
    if a.base_url:
        if not a.expect:
            p.error("--base-url needs --expect")
        c = client(a.base_url)
        models(c)
        expect = json.loads(a.expect)
        completions(c, expect["completion"])
        chat(c, expect["chat"])
        errors(c)
    if a.unavailable_url:
        unavailable(client(a.unavailable_url))
    if a.plainest_url:
        plainest(a.plainest_url)
    print("all openai client checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
