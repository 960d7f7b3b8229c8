"""OpenAI-style chat completion bodies -> one :class:`~pipeline.infer.Request` and its
pruning config, checked before any model work.

The server (``pipeline.serve``) parses and validates every request here, before it
joins a batch, so one bad request never fails its batch-mates. Every problem is a
:class:`BadRequest` with an HTTP status and a message naming the field::

    {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR..."}},
        {"type": "video_url", "video_url": {"url": "file:///data/clip.mp4"}, "nframes": 8},
        {"type": "text", "text": "What happens?"}]}],
     "max_tokens": 32,
     "pruning": {"method": "vlm_pruner", "pruning_rate": 0.889}}

Media: images as ``data:`` URLs (base64); one video per request as a ``data:`` URL, in a
``video_url`` part or a ``video`` part (``{"type": "video", "video": URL}``), sampled
uniformly with ``pipeline.video`` (``nframes`` frames, the deployment's default when
unset). The server fetches nothing over the network (http(s) URLs are refused), and it
reads no file of its own disk unless the deployment names folders it may read
(``media_roots``): then ``file://`` URLs and plain paths are read when they resolve,
symbolic links followed, to a file inside one of them; with none, every path is refused.

Limits (:class:`Limits`, set per deployment): encoded bytes per image and per video,
images per request, frames per video, decoded pixels per image and per request (images
plus every sampled frame at the video's own size; checked from the headers, before
anything is decoded), and prompt tokens (counted with the model's tokenizer). A request
over a size limit gets 413, any other problem 400, each with a message naming the limit.
The model sees the images, then the video, then the text of the system and user
messages (joined by newlines), as ``Generator`` builds every prompt; assistant turns
(multi-turn chat) are refused. Answers are greedy: sampling fields (temperature,
top_p, ...) are ignored; ``stream`` and ``n`` > 1 are refused.

``pruning`` replaces the deployment's default config for this request; without a
``method`` it keeps the default's method, and a field it leaves unset (rate, layer,
parameters) keeps the default's value when the method is the default's.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote, urlparse

from PIL import Image

from pipeline.infer import Request
from pruning import PruningConfig
from pruning.config import NO_PRUNING


class BadRequest(ValueError):
    """A request the server refuses, with its HTTP status (400, or 413 for oversized media)."""

    def __init__(self, message: str, *, status: int = 400, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server."""

    max_image_bytes: int = 20 * 2**20  # encoded size of one image (data URL payload or file)
    max_video_bytes: int = 64 * 2**20  # encoded size of the video (data URL payload or file)
    max_image_pixels: int = 2**25  # decoded pixels of one image (33.5 M: 5792 x 5792)
    max_request_pixels: int = 2**27  # decoded pixels of a request: its images and video frames
    max_prompt_tokens: int = 8192  # tokens of the request's text (system and user messages)
    max_images: int = 8  # images per request
    max_frames: int = 64  # frames sampled from a request's video
    frames: int = 8  # frames sampled when the request does not say (``nframes``)
    max_pixels: Optional[int] = None  # video frames are resized to at most this many pixels
    max_tokens: int = 1024  # the largest ``max_tokens`` a request may ask for
    default_max_tokens: int = 64  # ``max_tokens`` when the request does not say
    media_roots: tuple[str, ...] = ()  # folders whose files requests may name; none: data URLs only


@dataclass
class ChatRequest:
    """A validated request: what the model sees, and the pruning config to run it under."""

    request: Request
    config: PruningConfig


def parse_chat(body: Any, default: PruningConfig, limits: Limits = Limits(),
               count_tokens: Optional[Callable[[str], int]] = None) -> ChatRequest:
    """The request and pruning config of a chat completion ``body`` (parsed JSON).

    ``count_tokens`` (the model's tokenizer) checks the prompt against
    ``limits.max_prompt_tokens``; the text is first bounded by characters, so a huge
    prompt is refused without being tokenized. Reads the media (files, data URLs) and
    samples video frames, so it blocks: call it off the event loop. Raises :class:`BadRequest`.
    """
    if not isinstance(body, Mapping):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    if body.get("stream"):
        raise BadRequest("stream=true is not supported; ask for the whole answer", param="stream")
    if body.get("n") not in (None, 1):
        raise BadRequest(f"n must be 1 (one greedy answer per request), got {body.get('n')!r}", param="n")
    prompt, urls, video = _messages(body.get("messages"), limits)
    _check_prompt(prompt, limits, count_tokens)
    max_new_tokens = _max_tokens(body, limits)
    config = request_config(body.get("pruning"), default)
    pixels = Pixels(limits)
    images = [load_image(url, limits, f"image {i + 1}", pixels) for i, url in enumerate(urls)]
    request = Request(prompt=prompt, images=images, max_new_tokens=max_new_tokens)
    if video is not None:
        url, count = video
        request.frames, request.fps, request.frame_indices = load_video(url, count, limits, pixels)
    return ChatRequest(request, config)


# A prompt longer than this many characters per allowed token is refused untokenized.
CHARS_PER_TOKEN_BOUND = 64


def _check_prompt(prompt: str, limits: Limits, count_tokens: Optional[Callable[[str], int]]) -> None:
    limit = limits.max_prompt_tokens
    if len(prompt) > limit * CHARS_PER_TOKEN_BOUND:
        raise BadRequest(f"the prompt has {len(prompt)} characters, far more than the limit of {limit} tokens "
                         "(max_prompt_tokens)", param="messages")
    if count_tokens is not None and (tokens := count_tokens(prompt)) > limit:
        raise BadRequest(f"the prompt has {tokens} tokens, more than the limit of {limit} (max_prompt_tokens)",
                         param="messages")


class Pixels:
    """The decoded pixels a request has asked for so far, against its limits."""

    def __init__(self, limits: Limits):
        self.limits, self.total = limits, 0

    def add(self, pixels: int, what: str, per_item: Optional[int] = None) -> None:
        if per_item is not None and per_item > self.limits.max_image_pixels:
            raise BadRequest(f"{what} has {per_item} pixels, more than the limit of {self.limits.max_image_pixels} "
                             "per image (max_image_pixels)", status=413, param="messages")
        self.total += pixels
        if self.total > self.limits.max_request_pixels:
            raise BadRequest(f"the request's images and frames decode to {self.total} pixels (with {what}), more "
                             f"than the limit of {self.limits.max_request_pixels} per request (max_request_pixels)",
                             status=413, param="messages")


def request_config(given: Any, default: PruningConfig) -> PruningConfig:
    """The pruning config a request asks for (``given``, its ``pruning`` object), or ``default``.

    >>> default = PruningConfig(method="vlm_pruner", pruning_rate=0.889)
    >>> request_config({"pruning_rate": 0.5}, default).pruning_rate   # the default's method
    0.5
    >>> request_config({"method": "none"}, default).method
    'none'
    """
    if given is None:
        return default
    if not isinstance(given, Mapping):
        raise BadRequest(f"pruning must be an object such as {{\"method\": \"vlm_pruner\", \"pruning_rate\": "
                         f"0.889}}, got {given!r}", param="pruning")
    values = dict(given)
    values.setdefault("method", default.method)
    if values["method"] == default.method and default.method != NO_PRUNING:
        if "pruning_rate" not in values and "num_retain" not in values:
            values["pruning_rate"], values["num_retain"] = default.pruning_rate, default.num_retain
        if "layer" not in values and "stages" not in values:
            if default.stages:  # the default's stages: its own rates unless the request sets one
                same = values.get("pruning_rate") == default.pruning_rate and values.get("num_retain") is None
                values["stages"] = default.to_dict()["stages"] if same else list(default.prune_layers)
            else:
                values["layer"] = default.layer
        values.setdefault("positions", default.positions)
        if set(values) <= {"method", "pruning_rate", "num_retain", "layer", "stages", "positions"}:
            values["params"] = dict(default.params)
    try:
        return PruningConfig.from_dict(values)
    except ValueError as exc:
        raise BadRequest(f"pruning: {exc}", param="pruning") from exc


def _messages(messages: Any, limits: Limits) -> tuple[str, list[str], Optional[tuple[str, int]]]:
    """(prompt text, image URLs, (video path, frame count) or None) of the messages."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list of {role, content} objects", param="messages")
    texts, images, videos = [], [], []
    for m, message in enumerate(messages):
        where = f"messages[{m}]"
        if not isinstance(message, Mapping):
            raise BadRequest(f"{where} must be an object with role and content", param="messages")
        role = message.get("role")
        if role not in ("system", "user"):
            raise BadRequest(f"{where}.role must be 'system' or 'user' (one turn: multi-turn chat is not "
                             f"supported), got {role!r}", param="messages")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        if not isinstance(content, list):
            raise BadRequest(f"{where}.content must be a string or a list of parts", param="messages")
        for p, part in enumerate(content):
            _part(part, f"{where}.content[{p}]", role, texts, images, videos, limits)
    if not images and not videos and not any(t.strip() for t in texts):
        raise BadRequest("the messages hold no text, image or video", param="messages")
    if len(images) > limits.max_images:
        raise BadRequest(f"at most {limits.max_images} images per request, got {len(images)}", param="messages")
    if len(videos) > 1:
        raise BadRequest(f"at most one video per request, got {len(videos)}", param="messages")
    return "\n".join(texts), images, videos[0] if videos else None


def _part(part: Any, where: str, role: str, texts: list, images: list, videos: list, limits: Limits) -> None:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "text" and isinstance(part.get("text"), str):
        texts.append(part["text"])
        return
    if role != "user" and kind in ("image_url", "video_url", "video"):
        raise BadRequest(f"{where}: media go in user messages", param="messages")
    if kind == "image_url":
        images.append(_url(part, "image_url", where))
    elif kind in ("video_url", "video"):
        count = part.get("nframes", limits.frames)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise BadRequest(f"{where}.nframes must be an integer >= 1, got {count!r}", param="messages")
        if count > limits.max_frames:
            raise BadRequest(f"{where}.nframes: at most {limits.max_frames} frames per video, got {count}",
                             param="messages")
        videos.append((_url(part, kind, where) if kind == "video_url" else _string(part.get("video"), where),
                       count))
    else:
        raise BadRequest(f"{where} must be a text, image_url, video_url or video part, got {part!r:.120}",
                         param="messages")


def _url(part: Mapping, key: str, where: str) -> str:
    value = part.get(key)
    return _string(value.get("url") if isinstance(value, Mapping) else value, f"{where}.{key}.url")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{where} must be a non-empty string, got {value!r:.80}", param="messages")
    return value


def _max_tokens(body: Mapping, limits: Limits) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return limits.default_max_tokens
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limits.max_tokens:
        raise BadRequest(f"max_tokens must be an integer in [1, {limits.max_tokens}], got {value!r}",
                         param="max_tokens")
    return value


# ---------------------------------------------------------------- media


def load_image(url: str, limits: Limits, what: str = "image", pixels: Optional[Pixels] = None) -> Image.Image:
    """The RGB image of a ``data:`` URL, or of a ``file://`` URL or path under one of the
    media roots, decoded in full here (so a truncated file fails now rather than inside
    a batch) once its size, from the header, is within the pixel limits."""
    data = _media_bytes(url, limits, what, limits.max_image_bytes)
    pixels = pixels or Pixels(limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel limits below decide
            image = Image.open(BytesIO(data))
        with image:
            width, height = image.size
            pixels.add(width * height, what, per_item=width * height)
            return image.convert("RGB")
    except BadRequest:
        raise
    except Image.DecompressionBombError as exc:
        raise BadRequest(f"{what}: {exc}", status=413, param="messages") from exc
    except Exception as exc:  # PIL raises several types for bad data
        raise BadRequest(f"{what}: cannot decode the image ({exc})", param="messages") from exc


def load_video(url: str, count: int, limits: Limits, pixels: Optional[Pixels] = None):
    """``(frames (count, H, W, 3) uint8, fps, frame indices)`` of the video of a
    ``data:`` URL, or of a ``file://`` URL or path under one of the media roots."""
    pixels = pixels or Pixels(limits)
    if url.startswith("data:"):
        data = _media_bytes(url, limits, "video", limits.max_video_bytes)
        with tempfile.NamedTemporaryFile(suffix=".mp4") as file:  # the decoders read files
            file.write(data)
            file.flush()
            return _read_video(file.name, count, limits, pixels)
    path = _allowed_file(url, limits, "video", limits.max_video_bytes)
    return _read_video(str(path), count, limits, pixels)


def _read_video(path: str, count: int, limits: Limits, pixels: Pixels):
    from pipeline import video

    try:
        height, width = video.frame_size(path)
        pixels.add(count * height * width, f"{count} video frames of {width} x {height}")
        fps, length = video.video_fps_and_length(path)
        frames = video.read_frames(path, count, max_pixels=limits.max_pixels)
    except video.VideoError as exc:
        raise BadRequest(f"video: {exc}", param="messages") from exc
    return frames, fps, video.frame_indices(length, count)


def _media_bytes(url: str, limits: Limits, what: str, max_bytes: int) -> bytes:
    """The encoded bytes of a ``data:`` URL or an allowed file, at most ``max_bytes``."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise BadRequest(f"{what}: a data URL must look like data:<type>;base64,<data>", param="messages")
        if len(payload) * 3 // 4 > max_bytes + 2:
            raise BadRequest(f"{what} is larger than {max_bytes} bytes", status=413, param="messages")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"{what}: invalid base64 in the data URL ({exc})", param="messages") from exc
    else:
        data = _allowed_file(url, limits, what, max_bytes).read_bytes()
    if len(data) > max_bytes:
        raise BadRequest(f"{what} is {len(data)} bytes, more than the limit of {max_bytes}", status=413,
                         param="messages")
    return data


def _allowed_file(url: str, limits: Limits, what: str, max_bytes: int) -> Path:
    """:func:`local_path`, refused (413) when the file is larger than ``max_bytes``."""
    path = local_path(url, limits, what)
    size = path.stat().st_size
    if size > max_bytes:
        raise BadRequest(f"{what} ({url:.120}) is {size} bytes, more than the limit of {max_bytes}", status=413,
                         param="messages")
    return path


def local_path(url: str, limits: Limits, what: str) -> Path:
    """The existing file a ``file://`` URL or a path names, when it resolves (symbolic
    links followed) to a file inside one of ``limits.media_roots``; any other path is
    refused with the same message whether or not it exists, so a request learns nothing
    of the server's disk outside them."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadRequest(f"{what}: file URLs must name a local file, got {url!r:.120}", param="messages")
        url = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise BadRequest(f"{what}: only data: URLs and files under the server's media roots are read (the server "
                         f"fetches nothing over the network), got a {parsed.scheme}: URL", param="messages")
    if not limits.media_roots:
        raise BadRequest(f"{what}: this server reads no files of its own (no media_roots configured): send the "
                         "media as a data: URL", param="messages")
    if "\x00" in url:
        raise BadRequest(f"{what}: the path holds a NUL character", param="messages")
    path = Path(url)
    if not path.is_absolute():
        raise BadRequest(f"{what}: a server path must be absolute, got {url!r:.120}", param="messages")
    path = path.resolve()
    roots = [Path(root).expanduser().resolve() for root in limits.media_roots]
    if not any(root == path or root in path.parents for root in roots):
        raise BadRequest(f"{what}: {url!r:.120} is outside the server's media roots", param="messages")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise BadRequest(f"{what}: no readable file at {url!r:.200} on the server", param="messages")
    return path
