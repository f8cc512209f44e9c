"""The track-quality summary ``pavenet predict`` prints at the end: per input and overall.

For an input: its frames, its tracks (distinct track ids), the mean track length (frames in
which a track has a person: people / tracks), the people per frame, and frames/s (frames over
the seconds spent predicting them: decoding, network and tracking, not writing or rendering).
Overall: the sums, the same ratios over all inputs, and frames/s = all frames over the wall time
of the whole run (every process, writing and rendering included).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from pavenet.infer.results import FramePrediction


@dataclass(frozen=True)
class TrackStats:
    """Counts of one input (or of several, summed)."""

    name: str
    frames: int
    tracks: int
    people: int
    seconds: float

    @classmethod
    def of(cls, name: str, frames: Sequence[FramePrediction], seconds: float) -> TrackStats:
        ids = {p.track_id for f in frames for p in f.people if p.track_id >= 0}
        people = sum(1 for f in frames for p in f.people if p.track_id >= 0)
        return cls(name, len(frames), len(ids), people, seconds)

    @property
    def mean_track_length(self) -> float:
        return self.people / self.tracks if self.tracks else 0.0

    @property
    def people_per_frame(self) -> float:
        return self.people / self.frames if self.frames else 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.name}: {self.frames} frames, {self.tracks} tracks, mean track length "
                f"{self.mean_track_length:.1f} frames, {self.people_per_frame:.2f} people/frame, "
                f"{self.fps:.1f} frames/s")


def total(stats: Iterable[TrackStats], wall_seconds: float) -> TrackStats:
    """The inputs' stats summed; their seconds replaced by the run's wall time."""
    stats = list(stats)
    return TrackStats(f"all ({len(stats)} input{'s' if len(stats) != 1 else ''})",
                      sum(s.frames for s in stats), sum(s.tracks for s in stats),
                      sum(s.people for s in stats), wall_seconds)


def summary_lines(stats: Sequence[TrackStats], wall_seconds: float) -> list[str]:
    """``track summary:``, one line per input, and the overall line (when there are inputs)."""
    if not stats:
        return []
    return ["track summary:", *(f"  {s.line()}" for s in stats), f"  {total(stats, wall_seconds).line()}"]
