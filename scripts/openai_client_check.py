"""The official `openai` client against `auris serve`: input_audio, non-streaming and
streaming; both must give the same greedy text and the usage the server reports."""

import base64
import sys

from openai import OpenAI

base, clip = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base}/v1", api_key="unused")
audio = base64.b64encode(open(clip, "rb").read()).decode()
messages = [{"role": "user", "content": [
    {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
    {"type": "text", "text": "What is heard?"},
]}]
model = client.models.list().data[0].id
r = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16)
text = r.choices[0].message.content
assert r.usage.completion_tokens > 0, r
print(f"non-streaming: {r.usage.prompt_tokens} prompt + {r.usage.completion_tokens} completion tokens, finish_reason={r.choices[0].finish_reason}")

pieces, usage, finish = [], None, None
stream = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=16,
                                        stream=True, stream_options={"include_usage": True})
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        pieces.append(c.delta.content or "")
        finish = c.finish_reason or finish
assert "".join(pieces) == text, ("".join(pieces), text)
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens, usage
print(f"streaming: {len(pieces)} chunks, same text, finish_reason={finish}")
print("openai client check: ok")
