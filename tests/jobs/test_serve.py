"""The chat completions server on a local Ray cluster: real HTTP to 127.0.0.1, real PNG
data URLs and a real mp4, the tiny Qwen2-VL model; bad requests get a 4xx alone and the
replica keeps serving; 100 concurrent requests are all answered."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO

import numpy as np
import pytest
import ray
from PIL import Image
from ray import serve

from pipeline.samples import GARBAGE, shape_image, video_frames, write_video
from pipeline.serve import build

MAX_IMAGE_BYTES = 100_000
MAX_FRAMES = 8
MAX_PROMPT_TOKENS = 256
MAX_IMAGE_PIXELS = 300 * 300


@pytest.fixture(scope="module")
def server(media):
    """Base URL of the app, default config vlm_pruner at 0.75, on a free loopback port;
    it may read the files of the media folder."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build({"model": "tiny:qwen2_vl", "method": "vlm_pruner", "pruning_rate": 0.75,
                     "max_image_bytes": MAX_IMAGE_BYTES, "max_frames": MAX_FRAMES, "frames": 4,
                     "max_batch_size": 8, "batch_wait_timeout_s": 0.05, "default_max_tokens": 2,
                     "media_roots": str(media["root"]), "max_prompt_tokens": MAX_PROMPT_TOKENS,
                     "max_image_pixels": MAX_IMAGE_PIXELS, "max_video_bytes": 200_000}),
              name="chat", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while get(url + "/healthz")[0] != 200:
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.5)
    yield url
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("media")
    shape_image("red", "circle").save(root / "circle.png")
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "noise.png")  # ~200 KB: over the limit
    (root / "corrupt.png").write_bytes(GARBAGE)
    write_video(root / "clip.mp4", video_frames("blue", "right", 16))
    (root / "secret-link.png").symlink_to("/etc/passwd")
    (root / "corrupt.mp4").write_bytes((root / "clip.mp4").read_bytes()[:300])
    return {"root": root, "png": data_url(shape_image("green", "square"))}


def data_url(image: Image.Image) -> str:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def post(url: str, body, timeout: float = 120) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, {"error": {"message": None, "body": text}}


def chat(*parts, text: str = "What is shown?", **extra) -> dict:
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
            "max_tokens": 2, **extra}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def test_image_request_has_the_completion_shape_and_pruning_stats(server, media):
    status, body = post(server, chat(image_part(media["png"])))
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny:qwen2_vl" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 2 or choice["finish_reason"] == "stop"
    assert usage["prompt_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    stats = body["pruning"]
    assert stats["config"]["method"] == "vlm_pruner" and stats["config"]["pruning_rate"] == 0.75
    assert 0 < stats["visual_tokens_after"] < stats["visual_tokens_before"]
    assert stats["prefill_s"] > 0 and stats["ttft_s"] >= stats["prefill_s"]


def test_per_request_pruning_config_is_honoured(server, media):
    path = str(media["root"] / "circle.png")
    _, pruned = post(server, chat(image_part(path)))
    status, unpruned = post(server, chat(image_part("file://" + path), pruning={"method": "none"}))
    assert status == 200, unpruned
    assert unpruned["pruning"]["config"] == {"method": "none"}
    assert unpruned["pruning"]["visual_tokens_after"] == unpruned["pruning"]["visual_tokens_before"]
    status, half = post(server, chat(image_part(path), pruning={"pruning_rate": 0.5}))  # the default's method
    assert status == 200, half
    assert half["pruning"]["config"]["method"] == "vlm_pruner"
    before = half["pruning"]["visual_tokens_before"]
    assert before == pruned["pruning"]["visual_tokens_before"]
    assert pruned["pruning"]["visual_tokens_after"] < half["pruning"]["visual_tokens_after"] < before


@pytest.mark.parametrize("part", ["video_url", "video"])
def test_video_request(server, media, part):
    path = str(media["root"] / "clip.mp4")
    content = ({"type": "video_url", "video_url": {"url": "file://" + path}, "nframes": 4} if part == "video_url"
               else {"type": "video", "video": path})
    status, body = post(server, chat(content, text="Where does the square move?"))
    assert status == 200, body
    assert 0 < body["pruning"]["visual_tokens_after"] < body["pruning"]["visual_tokens_before"]
    status, unpruned = post(server, chat(content, pruning={"method": "none"}))
    assert status == 200, unpruned
    assert unpruned["pruning"]["visual_tokens_after"] == unpruned["pruning"]["visual_tokens_before"] \
        == body["pruning"]["visual_tokens_before"]


def test_video_as_a_data_url(server, media):
    data = (media["root"] / "clip.mp4").read_bytes()
    url = "data:video/mp4;base64," + base64.b64encode(data).decode()
    status, body = post(server, chat({"type": "video_url", "video_url": {"url": url}, "nframes": 4}))
    assert status == 200, body
    _, from_file = post(server, chat({"type": "video", "video": str(media["root"] / "clip.mp4"), "nframes": 4}))
    assert body["pruning"]["visual_tokens_before"] == from_file["pruning"]["visual_tokens_before"]
    assert body["choices"][0]["message"]["content"] == from_file["choices"][0]["message"]["content"]


def bad_requests(media: dict) -> dict:
    """name -> (body, expected status, words the message must contain)."""
    root = media["root"]
    good = image_part(media["png"])
    return {
        "malformed JSON": (b'{"messages": [', 400, "not valid JSON"),
        "not an object": (b"[1, 2]", 400, "JSON object"),
        "missing messages": ({"max_tokens": 2}, 400, "messages"),
        "empty messages": ({"messages": []}, 400, "messages"),
        "assistant turn": ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "role"),
        "unknown part": (chat({"type": "audio", "audio": "x"}), 400, "part"),
        "corrupt image data": (chat(image_part("data:image/png;base64," + base64.b64encode(GARBAGE).decode())),
                               400, "cannot decode"),
        "invalid base64": (chat(image_part("data:image/png;base64,@@@")), 400, "base64"),
        "corrupt image file": (chat(image_part(str(root / "corrupt.png"))), 400, "cannot decode"),
        "missing image file": (chat(image_part(str(root / "nope.png"))), 400, "no readable file"),
        "/etc/passwd": (chat(image_part("/etc/passwd")), 400, "outside the server's media roots"),
        "file:///etc/passwd": (chat(image_part("file:///etc/passwd")), 400, "outside the server's media roots"),
        "climbing out": (chat(image_part(f"{root}/../../../../etc/passwd")), 400, "outside the server's media roots"),
        "relative path": (chat(image_part("../../etc/passwd")), 400, "absolute"),
        "/proc/self/environ": (chat({"type": "video", "video": "/proc/self/environ"}), 400, "outside"),
        "link out of the root": (chat(image_part(str(root / "secret-link.png"))), 400, "outside"),
        "image over the pixel limit": (chat(image_part(data_url(Image.new("RGB", (400, 300))))), 413,
                                       "max_image_pixels"),
        "prompt over the token limit": (chat(good, text="apple " * (MAX_PROMPT_TOKENS + 1)), 400,
                                        "max_prompt_tokens"),
        "remote image": (chat(image_part("http://example.com/a.png")), 400, "fetches nothing"),
        "oversized image data": (chat(image_part(data_url(Image.open(root / "noise.png")))), 413, "bytes"),
        "oversized image file": (chat(image_part(str(root / "noise.png"))), 413, str(MAX_IMAGE_BYTES)),
        "unknown method": (chat(good, pruning={"method": "prune_everything", "pruning_rate": 0.5}), 400,
                           "method must be one of"),
        "rate out of range": (chat(good, pruning={"method": "fastv", "pruning_rate": 1.5}), 400,
                              "pruning_rate must be a number in [0, 1)"),
        "layer out of range": (chat(good, pruning={"method": "fastv", "pruning_rate": 0.5, "layer": 99}), 400,
                               "layer must be in"),
        "too many frames": (chat({"type": "video", "video": str(root / "clip.mp4"), "nframes": MAX_FRAMES + 1}),
                            400, f"at most {MAX_FRAMES} frames"),
        "corrupt video": (chat({"type": "video", "video": str(root / "corrupt.mp4")}), 400, "video"),
        "two videos": (chat({"type": "video", "video": str(root / "clip.mp4")},
                            {"type": "video", "video": str(root / "clip.mp4")}), 400, "one video"),
        "max_tokens too large": (chat(good, max_tokens=10**6), 400, "max_tokens"),
        "body too large": (chat(good, text="x" * 3_000_000), 413, "request body is larger"),
        "101k-character prompt": (chat(good, text="x" * 101_000), 400, "characters"),
        "streaming": (chat(good, stream=True), 400, "stream"),
    }


def test_bad_requests_get_a_4xx_with_a_message_and_the_replica_keeps_serving(server, media):
    cases = bad_requests(media)
    for name, (body, expected, words) in cases.items():
        status, answer = post(server, body)
        assert status == expected, (name, status, answer)
        message = answer["error"]["message"]
        assert words in message, (name, message)
    # All at once, among good requests: the good ones are untouched.
    bodies = [body for body, _, _ in cases.values()] + [chat(image_part(media["png"]))] * 8
    with ThreadPoolExecutor(len(bodies)) as pool:
        statuses = [status for status, _ in pool.map(lambda b: post(server, b), bodies)]
    assert statuses[:len(cases)] == [expected for _, expected, _ in cases.values()]
    assert statuses[len(cases):] == [200] * 8
    assert post(server, chat(image_part(media["png"])))[0] == 200


def test_a_request_that_fails_in_the_model_fails_alone(server, media):
    # Qwen2-VL's processor refuses an aspect ratio over 200: valid PNG, fails inside the batch.
    thin = chat(image_part(data_url(Image.new("RGB", (300, 1), (200, 10, 10)))))
    good = chat(image_part(media["png"]))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: post(server, b), [good, thin, good, good]))
    assert [status for status, _ in results] == [200, 422, 200, 200], results
    assert "aspect ratio" in results[1][1]["error"]["message"]
    assert post(server, good)[0] == 200


def test_100_concurrent_requests_are_all_answered(server, media):
    configs = [None, {"method": "none"}, {"method": "fastv", "pruning_rate": 0.5}]
    bodies = [chat(image_part(media["png"]), text=f"Question {i}?",
                   **({"pruning": configs[i % 3]} if configs[i % 3] else {})) for i in range(100)]
    start = time.monotonic()
    with ThreadPoolExecutor(100) as pool:
        results = list(pool.map(lambda b: post(server, b, timeout=180), bodies))
    seconds = time.monotonic() - start
    assert [status for status, _ in results] == [200] * 100, [r for r in results if r[0] != 200][:3]
    assert len({body["id"] for _, body in results}) == 100
    for i, (_, body) in enumerate(results):
        expected = configs[i % 3]["method"] if configs[i % 3] else "vlm_pruner"
        assert body["pruning"]["config"]["method"] == expected
    assert max(body["pruning"]["batch_size"] for _, body in results) > 1, "requests were never batched"
    print(f"100 concurrent requests in {seconds:.1f}s")
