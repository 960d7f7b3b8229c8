"""What a chat request may read and how much it may ask (``pipeline.chat``), on real
files: the media roots allow-list (no server paths at all without one), prompt tokens,
pixels per image and per request, video sent as a data URL. The server's answers to the
same requests over HTTP are in tests/jobs/test_serve.py."""

from __future__ import annotations

import base64
import re
import struct
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from PIL import Image

from pipeline.chat import CHARS_PER_TOKEN_BOUND, BadRequest, Limits, load_image, parse_chat
from pipeline.samples import VIDEO_SIZE, shape_image, video_frames, write_video
from pruning import PruningConfig

DEFAULT = PruningConfig(method="none")


def png_bytes(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64," + base64.b64encode(data).decode()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` RGB and whose data is one empty
    deflate stream: what a decompression bomb looks like before it is decoded."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def body(*parts, text: str = "What is shown?") -> dict:
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture
def disk(tmp_path: Path) -> dict:
    """A media root with an image and a video; beside it, files a request must not reach."""
    root = tmp_path / "media"
    root.mkdir()
    shape_image("red", "circle").save(root / "circle.png")
    write_video(root / "clip.mp4", video_frames("blue", "right", 8))
    secret = tmp_path / "secret.png"
    shape_image("green", "square").save(secret)
    sibling = tmp_path / "media-private"  # shares the root's name as a prefix
    sibling.mkdir()
    shape_image("blue", "square").save(sibling / "private.png")
    (root / "link.png").symlink_to(secret)
    (root / "sub").mkdir()
    return {"root": root, "secret": secret, "sibling": sibling / "private.png"}


def refused(request: dict, limits: Limits, **kwargs) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_chat(request, DEFAULT, limits, **kwargs)
    return info.value


def test_without_media_roots_no_server_path_is_read(disk):
    limits = Limits()
    for url in [str(disk["root"] / "circle.png"), "file://" + str(disk["root"] / "circle.png"), "/etc/passwd",
                "/proc/self/environ", "../../etc/passwd"]:
        error = refused(body(image(url)), limits)
        assert error.status == 400 and "no media_roots" in str(error) and "data: URL" in str(error), url
    error = refused(body({"type": "video", "video": str(disk["root"] / "clip.mp4")}), limits)
    assert "no media_roots" in str(error)
    # Data URLs are what such a server takes.
    parsed = parse_chat(body(image(data_url(png_bytes(shape_image("red", "circle"))))), DEFAULT, limits)
    assert parsed.request.images[0].size == (96, 96)


def test_media_roots_allow_their_files_and_nothing_else(disk):
    root = disk["root"]
    limits = Limits(media_roots=(str(root),))
    for url in [str(root / "circle.png"), "file://" + str(root / "circle.png"), str(root / "sub" / ".." / "circle.png")]:
        assert parse_chat(body(image(url)), DEFAULT, limits).request.images[0].size == (96, 96), url
    outside = [
        "/etc/passwd", "file:///etc/passwd", "/proc/self/environ", str(disk["secret"]),
        str(root / ".." / "secret.png"),  # climbs out
        str(root / "sub" / ".." / ".." / ".." / ".." / "etc" / "passwd"),
        str(root / "link.png"),  # a link inside the root to a file outside it
        str(disk["sibling"]),  # /x/media-private is not under /x/media
        str(root / ".." / "does-not-exist.png"),  # outside and missing: the same answer as outside
    ]
    messages = set()
    for url in outside:
        error = refused(body(image(url)), limits)
        assert error.status == 400 and "outside the server's media roots" in str(error), (url, error)
        messages.add(re.sub(r"'[^']*'", "URL", str(error)))
    assert len(messages) == 1, messages  # nothing says whether the file exists
    relative = refused(body(image("../../etc/passwd")), limits)
    assert "must be absolute" in str(relative)
    assert "no readable file" in str(refused(body(image(str(root / "missing.png"))), limits))
    assert "file URLs must name a local file" in str(refused(body(image("file://host/etc/passwd")), limits))
    assert "fetches nothing" in str(refused(body(image("http://127.0.0.1/a.png")), limits))
    video = parse_chat(body({"type": "video", "video": str(root / "clip.mp4"), "nframes": 4}), DEFAULT, limits)
    assert video.request.frames.shape[0] == 4


def test_several_roots(disk, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shape_image("blue", "circle").save(other / "b.png")
    limits = Limits(media_roots=(str(disk["root"]), str(other)))
    parsed = parse_chat(body(image(str(disk["root"] / "circle.png")), image(str(other / "b.png"))), DEFAULT, limits)
    assert len(parsed.request.images) == 2


def test_video_as_a_data_url(disk):
    data = (disk["root"] / "clip.mp4").read_bytes()
    parsed = parse_chat(body({"type": "video", "video": data_url(data, "video/mp4"), "nframes": 4}), DEFAULT, Limits())
    frames = parsed.request.frames
    assert frames.shape == (4, VIDEO_SIZE[1], VIDEO_SIZE[0], 3) and parsed.request.frame_indices == [0, 2, 4, 7]
    error = refused(body({"type": "video", "video": data_url(data, "video/mp4")}), Limits(max_video_bytes=1000))
    assert error.status == 413 and "1000 bytes" in str(error)
    broken = refused(body({"type": "video", "video": data_url(data[:300], "video/mp4")}), Limits())
    assert broken.status == 400 and "video" in str(broken)


def test_an_image_over_the_pixel_limit_is_refused_before_it_is_decoded():
    bomb = png_header_only(13000, 13000)  # 169 M pixels declared in a 57-byte file
    assert len(bomb) < 100
    error = refused(body(image(data_url(bomb))), Limits())
    assert error.status == 413 and "169000000 pixels" in str(error) and "max_image_pixels" in str(error)
    big = png_bytes(Image.new("RGB", (1200, 1000), (9, 9, 9)))
    error = refused(body(image(data_url(big))), Limits(max_image_pixels=1_000_000))
    assert error.status == 413 and "1200000 pixels" in str(error)
    assert load_image(data_url(big), Limits(max_image_pixels=1_200_000)).size == (1200, 1000)


def test_a_request_over_the_total_pixel_limit_is_refused(disk):
    small = data_url(png_bytes(Image.new("RGB", (500, 400), (9, 9, 9))))  # 200,000 pixels each
    limits = Limits(max_request_pixels=500_000)
    assert len(parse_chat(body(image(small), image(small)), DEFAULT, limits).request.images) == 2
    error = refused(body(image(small), image(small), image(small)), limits)
    assert error.status == 413 and "600000 pixels" in str(error) and "max_request_pixels" in str(error)
    # Video frames count at the video's own size, before any resize.
    width, height = VIDEO_SIZE
    video = {"type": "video", "video": data_url((disk["root"] / "clip.mp4").read_bytes(), "video/mp4"), "nframes": 8}
    limits = Limits(max_request_pixels=8 * width * height - 1)
    error = refused(body(video), limits)
    assert error.status == 413 and f"8 video frames of {width} x {height}" in str(error)
    assert parse_chat(body(video), DEFAULT, Limits(max_request_pixels=8 * width * height)).request.frames.shape[0] == 8


def test_prompt_tokens_are_limited():
    words = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer: one token per word
    limits = Limits(max_prompt_tokens=10)
    assert parse_chat(body(text="one two three"), DEFAULT, limits, count_tokens=words).request.prompt
    error = refused(body(text=" ".join(["word"] * 11)), limits, count_tokens=words)
    assert error.status == 400 and "11 tokens" in str(error) and "max_prompt_tokens" in str(error)

    def never(text):
        raise AssertionError("a prompt this long must be refused before it is tokenized")
    error = refused(body(text="x" * (10 * CHARS_PER_TOKEN_BOUND + 1)), limits, count_tokens=never)
    assert "characters" in str(error) and "max_prompt_tokens" in str(error)
    # System and user text both count.
    request = {"messages": [{"role": "system", "content": "a b c d e f"}, {"role": "user", "content": "g h i j k"}]}
    assert "11 tokens" in str(refused(request, limits, count_tokens=words))
