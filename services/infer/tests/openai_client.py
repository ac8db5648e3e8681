"""The official `openai` Python client against the infer service, unchanged but for its base
URL and key: run by `tests/serving.rs` with the URL, an API key, a base model and an adapter.
Exits non-zero on the first disagreement."""

import sys

import openai

base_url, api_key, model, adapter = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)

listed = [entry.id for entry in client.models.list()]
assert model in listed and adapter in listed, listed
assert client.models.retrieve(adapter).id == adapter

completion = client.completions.create(model=model, prompt="The", max_tokens=20, temperature=0, seed=1)
assert completion.object == "text_completion", completion
assert completion.choices[0].finish_reason in ("stop", "length"), completion
assert completion.usage.prompt_tokens == 4, completion.usage  # BOS and three bytes
pieces = [chunk.choices[0].text for chunk in client.completions.create(model=model, prompt="The", max_tokens=20, temperature=0, seed=1, stream=True)]
assert "".join(pieces) == completion.choices[0].text, (pieces, completion.choices[0].text)

messages = [{"role": "system", "content": "Antworte kurz."}, {"role": "user", "content": "Hallo"}]
chat = client.chat.completions.create(model=adapter, messages=messages, max_tokens=24, seed=3)
assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant", chat
streamed, usage = [], None
for chunk in client.chat.completions.create(model=adapter, messages=messages, max_tokens=24, seed=3, stream=True, stream_options={"include_usage": True}):
    if chunk.choices:
        streamed.append(chunk.choices[0].delta.content or "")
    if chunk.usage:
        usage = chunk.usage
assert "".join(streamed) == chat.choices[0].message.content, (streamed, chat.choices[0].message.content)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, (usage, chat.usage)

try:
    client.completions.create(model="no-such-model", prompt="x")
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as error:
    assert error.code == "model_not_found", error
try:
    client.chat.completions.create(model=model, messages=messages, temperature=5)
    raise AssertionError("temperature 5 was accepted")
except openai.BadRequestError as error:
    assert error.code == "invalid_parameter" and error.param == "temperature", error
try:
    openai.OpenAI(base_url=base_url, api_key="pvk_wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as error:
    assert error.code == "invalid_api_key", error
print(f"openai {openai.__version__}: models, completions and chat completions (plain and streamed), errors: ok")
