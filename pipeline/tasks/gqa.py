"""GQA testdev-balanced: short answers, exact match (lmms-eval ``gqa``).

The questions (config ``testdev_balanced_instructions``) carry no image; lmms-eval joins
the images of config ``testdev_balanced_images`` on ``imageId`` = ``id``. We do the same:
from the hub, or from a local folder that mirrors the hub repository
(``<data>/testdev_balanced_instructions/*.parquet`` and ``<data>/testdev_balanced_images/*.parquet``);
rows that already have an ``image`` column keep it, and ``{media_root}/{imageId}.jpg`` (or
``.png``) is the last resort. Metric: lmms-eval's exact match (``common.exact_match``:
both lower-cased, punctuation removed, nothing else, so "yes ." is wrong; the lenient
scoring also trims the spaces that leaves), ``score`` in percent.
Generation: 16 new tokens, stop at a blank line (lmms-eval gqa.yaml).
"""

from __future__ import annotations

import functools
from pathlib import Path

from pipeline.tasks import register_task
from pipeline.tasks.common import (DEFAULT_UNTIL, SHORT_ANSWER, ShortAnswerTask, exact_match, exact_match_lenient,
                                   image_sample, load_dataset_split, undecoded_images)

IMAGES = ("lmms-lab/GQA", "testdev_balanced_images", "testdev")


class GQA(ShortAnswerTask):
    name = "gqa"
    required_text = ("question", "answer")
    hub = (("lmms-lab/GQA", "testdev_balanced_instructions", "testdev"),)
    max_new_tokens = 16
    until = DEFAULT_UNTIL

    def rows(self, data=None, *, limit=None, split=None, config=None, start=0, stop=None):
        for row in super().rows(data, limit=limit, split=split, config=config, start=start, stop=stop):
            if "image" not in row:
                row["image"] = _image_index(data).get(row["imageId"])
            yield row

    def sample(self, row, *, media_root=None):
        image = row.get("image")
        if image is None and media_root:
            found = [p for p in (Path(media_root) / f"{row['imageId']}.{x}" for x in ("jpg", "png")) if p.is_file()]
            image = str(found[0]) if found else None
        return image_sample(
            self, str(row["id"]), f"{row['question']}\n{SHORT_ANSWER}", [image], answer=row["answer"],
            meta={"imageId": row["imageId"]}, root=media_root,
        )

    def score(self, parsed, sample):
        return exact_match(parsed or "", sample.answer)

    def score_lenient(self, parsed, sample):
        return exact_match_lenient(parsed or "", sample.answer)


@functools.lru_cache(maxsize=4)
def _image_index(data):
    """The images config of ``data``, indexed once per process (the read stage asks for a
    few rows at a time)."""
    return _ImageIndex(data)


class _ImageIndex:
    """imageId -> image of the images config, read on demand (None when unavailable)."""

    def __init__(self, data):
        self.ds, self.rows = None, {}
        local = Path(data) / IMAGES[1] if data and Path(data).is_dir() else None
        if data and Path(data).exists() and not (local and local.is_dir()):
            return  # a local copy without the images folder: media_root or errors
        try:
            self.ds = undecoded_images(load_dataset_split(str(local) if local else data, (IMAGES,),
                                                          config=IMAGES[1], split=IMAGES[2]))
        except (FileNotFoundError, ValueError):
            return
        self.rows = {image_id: i for i, image_id in enumerate(self.ds["id"])}

    def get(self, image_id):
        i = self.rows.get(image_id)
        return None if i is None else self.ds[i]["image"]


register_task(GQA())
