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

Media: images as ``data:`` URLs (base64), ``file://`` URLs or plain paths readable by
the server (remote http(s) URLs are refused: the server fetches nothing); one video
per request as a path or ``file://`` URL, in a ``video_url`` part or a ``video``
part (``{"type": "video", "video": PATH}``), sampled uniformly with
``pipeline.video`` (``nframes`` frames, the deployment's default when unset).
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
from collections.abc import Mapping
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
    max_images: int = 8  # images per request
    max_frames: int = 64  # frames sampled from a request's video
    frames: int = 8  # frames sampled when the request does not say (``nframes``)
    max_pixels: Optional[int] = None  # video frames are resized to at most this many pixels
    max_tokens: int = 1024  # the largest ``max_tokens`` a request may ask for
    default_max_tokens: int = 64  # ``max_tokens`` when the request does not say
    media_root: Optional[str] = None  # when set, media paths must lie under this directory


@dataclass
class ChatRequest:
    """A validated request: what the model sees, and the pruning config to run it under."""

    request: Request
    config: PruningConfig


def parse_chat(body: Any, default: PruningConfig, limits: Limits = Limits()) -> ChatRequest:
    """The request and pruning config of a chat completion ``body`` (parsed JSON).

    Reads the media (files, data URLs) and samples video frames, so it blocks: call it
    off the event loop. Raises :class:`BadRequest`.
    """
    if not isinstance(body, Mapping):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    if body.get("stream"):
        raise BadRequest("stream=true is not supported; ask for the whole answer", param="stream")
    if body.get("n") not in (None, 1):
        raise BadRequest(f"n must be 1 (one greedy answer per request), got {body.get('n')!r}", param="n")
    prompt, images, video = _messages(body.get("messages"), limits)
    request = Request(prompt=prompt, images=[load_image(url, limits, f"image {i + 1}") for i, url in
                                             enumerate(images)],
                      max_new_tokens=_max_tokens(body, limits))
    if video is not None:
        path, count = video
        request.frames, request.fps, request.frame_indices = load_video(path, count, limits)
    return ChatRequest(request, request_config(body.get("pruning"), default))


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
        values.setdefault("layer", default.layer)
        if set(values) <= {"method", "pruning_rate", "num_retain", "layer"}:
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


def load_image(url: str, limits: Limits, what: str = "image") -> Image.Image:
    """The RGB image of a ``data:`` URL, ``file://`` URL or path (decoded in full here,
    so a truncated file fails now rather than inside a batch)."""
    if url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise BadRequest(f"{what}: a data URL must look like data:image/png;base64,<data>", param="messages")
        if len(payload) * 3 // 4 > limits.max_image_bytes + 2:
            raise BadRequest(f"{what} is larger than {limits.max_image_bytes} bytes", status=413,
                             param="messages")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"{what}: invalid base64 in the data URL ({exc})", param="messages") from exc
    else:
        path = local_path(url, limits, what)
        size = path.stat().st_size
        if size > limits.max_image_bytes:
            raise BadRequest(f"{what} ({path}) is {size} bytes, more than the limit of {limits.max_image_bytes}",
                             status=413, param="messages")
        data = path.read_bytes()
    if len(data) > limits.max_image_bytes:
        raise BadRequest(f"{what} is {len(data)} bytes, more than the limit of {limits.max_image_bytes}",
                         status=413, param="messages")
    try:
        with Image.open(BytesIO(data)) as image:
            return image.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise BadRequest(f"{what}: {exc}", status=413, param="messages") from exc
    except Exception as exc:  # PIL raises several types for bad data
        raise BadRequest(f"{what}: cannot decode the image ({exc})", param="messages") from exc


def load_video(url: str, count: int, limits: Limits):
    """``(frames (count, H, W, 3) uint8, fps, frame indices)`` of the video at ``url``."""
    from pipeline import video

    path = str(local_path(url, limits, "video"))
    try:
        fps, length = video.video_fps_and_length(path)
        frames = video.read_frames(path, count, max_pixels=limits.max_pixels)
    except video.VideoError as exc:
        raise BadRequest(f"video: {exc}", param="messages") from exc
    return frames, fps, video.frame_indices(length, count)


def local_path(url: str, limits: Limits, what: str) -> Path:
    """The existing file a ``file://`` URL or a path names (under ``media_root`` when set)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BadRequest(f"{what}: file URLs must name a local file, got {url!r:.120}", param="messages")
        url = unquote(parsed.path)
    elif parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise BadRequest(f"{what}: only data:, file:// URLs and server paths are read (the server fetches "
                         f"nothing over the network), got a {parsed.scheme}: URL", param="messages")
    path = Path(url).expanduser().resolve()
    if limits.media_root is not None:
        root = Path(limits.media_root).expanduser().resolve()
        if root != path and root not in path.parents:
            raise BadRequest(f"{what}: {url!r:.120} is outside the server's media root", param="messages")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise BadRequest(f"{what}: no readable file at {url!r:.200} on the server", param="messages")
    return path
