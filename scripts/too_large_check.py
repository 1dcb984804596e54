"""A body over `auris serve --max-request-mb` must reach Python's HTTP clients as a 413 with
OpenAI's error object, not as a broken pipe: urllib, requests and the openai client (httpx)
all send the whole body before they read the answer."""

import base64
import json
import sys
import urllib.error
import urllib.request

import openai
import requests

base, megabytes = sys.argv[1], int(sys.argv[2])
# A valid chat request whose audio alone is over the limit.
audio = base64.b64encode(b"\0" * (megabytes * 1024 * 1024)).decode()
messages = [{"role": "user", "content": [
    {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}},
    {"type": "text", "text": "What is heard?"},
]}]
body = json.dumps({"model": "m", "messages": messages}).encode()
print(f"body: {len(body) / 2**20:.1f} MiB")


def check(client, status, error):
    assert status == 413, (client, status, error)
    assert error["code"] == 413 and "--max-request-mb" in error["message"], (client, error)
    print(f"{client}: 413 {error['message']}")


request = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                 headers={"content-type": "application/json"})
try:
    urllib.request.urlopen(request, timeout=120)
    raise AssertionError("urllib: no error")
except urllib.error.HTTPError as e:
    check("urllib", e.code, json.load(e)["error"])

r = requests.post(f"{base}/v1/chat/completions", data=body,
                  headers={"content-type": "application/json"}, timeout=120)
check("requests", r.status_code, r.json()["error"])

client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)
try:
    client.chat.completions.create(model="m", messages=messages)
    raise AssertionError("openai: no error")
except openai.APIStatusError as e:
    check("openai", e.status_code, e.body if "code" in (e.body or {}) else e.response.json()["error"])
print("413 check: ok")
