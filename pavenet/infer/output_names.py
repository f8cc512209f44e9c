"""One distinct output name per predicted input, so that no input's outputs replace another's.

A source's name is its file name without the extension (``clip.mp4`` -> ``clip``) or its folder
name. Sources whose names clash get their path relative to the folder that holds all of them
instead: ``a/seq`` and ``b/seq`` give ``a/seq`` and ``b/seq``; ``x/000000.jpg`` and
``y/000000.jpg`` give ``x/000000`` and ``y/000000``. Where that still clashes (``seq.mp4`` beside
a folder of frames ``seq``, ``a.mp4`` beside ``a.avi``) the files keep their extension:
``seq.mp4`` and ``seq``. Live sources of the same name (``http://a/cam.ts``, ``http://b/cam.ts``)
are numbered: ``cam``, ``cam_2``.
"""
from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path, PurePosixPath
from typing import Sequence

from pavenet.infer.video_io import VideoSource


def _stem(path: PurePosixPath, source: VideoSource) -> str:
    return str(path) if source.kind == "frames" else str(path.with_suffix(""))


def _relative(group: list[VideoSource]) -> list[PurePosixPath]:
    """The paths of ``group`` relative to the folder that holds them all."""
    paths = [Path(os.path.abspath(s.path)) for s in group]
    base = Path(os.path.commonpath([p.parent for p in paths]))
    return [PurePosixPath(p.relative_to(base).as_posix()) for p in paths]


def output_names(sources: Sequence[VideoSource]) -> list[str]:
    """The output name (a relative POSIX path) of each source, distinct for distinct sources."""
    names = [_stem(PurePosixPath(s.path.name), s) for s in sources]
    live = Counter()
    for index, source in enumerate(sources):
        if source.live:
            live[names[index]] += 1
            names[index] += f"_{live[names[index]]}" if live[names[index]] > 1 else ""
    clashing: dict[str, list[int]] = defaultdict(list)
    for index, name in enumerate(names):
        clashing[name].append(index)
    for indices in (ix for ix in clashing.values() if len(ix) > 1):
        relative = _relative([sources[i] for i in indices])
        stems = [_stem(r, sources[i]) for r, i in zip(relative, indices)]
        counts = Counter(stems)
        for i, rel, stem in zip(indices, relative, stems):
            names[i] = stem if counts[stem] == 1 else str(rel)
    return names
