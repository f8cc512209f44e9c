"""Video inputs: resolving sources, streaming decoding, clear errors, bounded read-ahead, writing."""
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from pavenet.infer.video_io import FrameStream, VideoInputError, VideoSource, probe, resolve_input, resolve_inputs
from pavenet.infer.video_writer import VideoWriter

H, W, N = 64, 96, 30


def _frames(n: int = N, h: int = H, w: int = W) -> list[np.ndarray]:
    """Frames whose mean brightness encodes their index (survives lossy coding)."""
    return [np.full((h, w, 3), 8 * i, dtype=np.uint8) for i in range(n)]


def _write_video(path: Path, frames: list[np.ndarray], rate=Fraction(30), faststart: bool = False,
                 movflags: str = "faststart") -> Path:
    if not faststart:
        with VideoWriter(path, rate) as writer:
            for f in frames:
                writer.write(f)
        return path
    with av.open(str(path), "w", options={"movflags": movflags}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("v") / "clip.mp4", _frames())


def test_video_roundtrip_frame_count_size_rate_and_content(video):
    info = probe(VideoSource(video, "video"))
    assert (info.width, info.height, info.num_frames, info.rate) == (W, H, N, Fraction(30))
    with FrameStream(VideoSource(video, "video")) as stream:
        frames = list(stream)
    assert len(frames) == N
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f in frames)
    means = np.array([f.mean() for f in frames])
    np.testing.assert_allclose(means, 8 * np.arange(N), atol=3)


@pytest.mark.parametrize("rate", [Fraction(30000, 1001), Fraction(25, 2)])
def test_writer_keeps_fractional_rate_and_pads_odd_size(tmp_path, rate):
    path = _write_video(tmp_path / "odd.mp4", _frames(5, 33, 47), rate)
    info = probe(VideoSource(path, "video"))
    assert (info.rate, info.num_frames, info.width, info.height) == (rate, 5, 48, 34)
    assert not list(tmp_path.glob(".*tmp*"))


def test_writer_error_leaves_no_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(ValueError, match="expected 96x64"):
        with VideoWriter(target, 30) as writer:
            writer.write(_frames(1)[0])
            writer.write(_frames(1, 32, 32)[0])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("faststart, problem", [
    (False, r"unreadable video"),  # index at the end: cut off, the file cannot be opened
    (True, r"truncated video, decoded 1?\d of 30 frames"),  # index first: frames run out early
])
def test_truncated_video_gives_clear_error(tmp_path, faststart, problem):
    noise = np.random.default_rng(0).integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    data = _write_video(tmp_path / "full.mp4", list(noise), faststart=faststart).read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoInputError, match=r"cut\.mp4: " + problem):
        with FrameStream(VideoSource(bad, "video")) as stream:
            list(stream)


def test_a_cut_fragmented_mp4_is_truncated_not_shorter(tmp_path):
    # fragmented MP4 declares no frame count, and threaded decoding drops the error of the cut-off
    # packet: the decoded frames are checked against the declared duration instead
    noise = np.random.default_rng(0).integers(0, 256, (36, H, W, 3), dtype=np.uint8)
    full = _write_video(tmp_path / "frag.mp4", list(noise), faststart=True, movflags="frag_keyframe+empty_moov")
    assert probe(VideoSource(full, "video")).num_frames is None
    with FrameStream(VideoSource(full, "video")) as stream:
        assert len(list(stream)) == 36
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(VideoInputError, match=r"cut\.mp4: truncated video, decoded 1\d frames up to 0\.\d\d s "
                                              r"of 1\.2\d s"):
        with FrameStream(VideoSource(cut, "video")) as stream:
            list(stream)


def test_a_16_bit_image_is_scaled_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(3, axis=0)
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # Pillow's 8-bit conversion would clip it at 255
    (frame,) = list(FrameStream(VideoSource(path, "image")))
    assert frame.shape == (3, 4, 3) and frame.dtype == np.uint8
    assert (frame == np.array([0, 1, 128, 255])[None, :, None]).all()


def test_an_image_over_the_decompression_bomb_limit_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(_frames(1)[0]).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", W * H // 4)  # the error starts at twice the limit
    with pytest.raises(VideoInputError, match=r"big\.png: image too large to decode safely \(Image size "
                                              r"\(6144 pixels\) exceeds limit"):
        list(FrameStream(VideoSource(path, "image")))


def test_not_a_video_gives_clear_error(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoInputError, match="notes.mp4: unreadable video"):
        FrameStream(VideoSource(bad, "video"))


def _save_frames(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"frame{i}.png")
    return folder


def test_folder_of_frames_in_natural_order(tmp_path):
    folder = _save_frames(tmp_path / "seq", _frames(12))
    (folder / "readme.txt").write_text("ignored")
    assert resolve_input(str(folder)) == [VideoSource(folder, "frames")]
    with FrameStream(VideoSource(folder, "frames")) as stream:
        frames = list(stream)
        assert stream.rate == Fraction(25)
    assert [int(f[0, 0, 0]) for f in frames] == [8 * i for i in range(12)]
    assert probe(VideoSource(folder, "frames"), frames_rate=Fraction(30000, 1001)).rate == Fraction(30000, 1001)
    assert (probe(VideoSource(folder, "frames")).num_frames, probe(VideoSource(folder, "frames")).width) == (12, W)


def test_frames_of_changing_size_give_clear_error(tmp_path):
    frames = _frames(4)
    frames[2] = np.zeros((32, 48, 3), np.uint8)
    folder = _save_frames(tmp_path / "mixed", frames)
    with pytest.raises(VideoInputError, match=r"mixed: frame 2 is 48x32, expected 96x64.*changing size"):
        with FrameStream(VideoSource(folder, "frames")) as stream:
            list(stream)


def test_resolve_folder_of_videos_globs_and_bad_inputs(tmp_path, video):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ["b10.mp4", "b2.mp4"]:
        (videos / name).write_bytes(video.read_bytes())
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_input(str(videos)) == [VideoSource(videos / "b2.mp4", "video"), VideoSource(videos / "b10.mp4", "video")]
    assert [s.name for s in resolve_input(str(videos / "b*.mp4"))] == ["b2", "b10"]
    sources, errors = resolve_inputs([str(empty), str(videos), str(tmp_path / "missing.mp4"), str(tmp_path / "*.avi"),
                                      str(videos / "b2.mp4")])
    assert [s.name for s in sources] == ["b2", "b10"]
    messages = [str(e) for e in errors]
    assert len(messages) == 3
    assert "empty: folder contains no images" in messages[0]
    assert "missing.mp4: no such file or folder" in messages[1]
    assert "*.avi: the pattern matches nothing" in messages[2]


def test_folder_of_sequence_folders_gives_one_source_per_sequence(tmp_path, video):
    """A PoseTrack-style ``images/val``: each frame folder and each video one level down is a
    source, in natural order; files at the top level win over sub-folders."""
    root = tmp_path / "val"
    root.mkdir()
    _save_frames(root / "seq10", _frames(2))
    _save_frames(root / "seq2", _frames(3))
    (root / "clips").mkdir()
    (root / "clips" / "c1.mp4").write_bytes(video.read_bytes())
    (root / "nothing").mkdir()
    (root / "notes.txt").write_text("not a frame")
    assert resolve_input(str(root)) == [VideoSource(root / "clips" / "c1.mp4", "video"),
                                        VideoSource(root / "seq2", "frames"), VideoSource(root / "seq10", "frames")]
    with FrameStream(resolve_input(str(root))[1]) as stream:
        assert len(list(stream)) == 3
    _save_frames(root / "top", _frames(1))
    Image.fromarray(_frames(1)[0]).save(root / "frame0.png")
    assert resolve_input(str(root)) == [VideoSource(root, "frames")]
    deep = tmp_path / "deep"
    (deep / "a").mkdir(parents=True)
    _save_frames(deep / "a" / "b", _frames(1))
    with pytest.raises(VideoInputError, match="deep: folder contains no images .* no sub-folders"):
        resolve_input(str(deep))


def test_reader_thread_never_holds_more_than_queue_size_frames(video):
    queue_size = 3
    stream = FrameStream(VideoSource(video, "video"), queue_size=queue_size)
    frames = iter(stream)
    first = next(frames)
    deadline = time.monotonic() + 10.0
    while stream.decoded < queue_size + 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    # one frame consumed, queue_size waiting, one decoded frame blocked on the full queue
    assert stream.decoded == queue_size + 2
    assert first.shape == (H, W, 3)
    rest = list(frames)
    assert len(rest) == N - 1 and stream.decoded == N


def test_stopping_early_ends_the_reader_thread(video):
    stream = FrameStream(VideoSource(video, "video"), queue_size=2)
    with stream:
        next(iter(stream))
    assert not stream._thread.is_alive()


def test_unreadable_image_in_a_folder_names_the_file(tmp_path):
    folder = _save_frames(tmp_path / "seq", _frames(3))
    (folder / "frame1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(VideoInputError, match=r"frame1\.png: unreadable image"):
        with FrameStream(VideoSource(folder, "frames")) as stream:
            list(stream)


def test_an_image_is_a_one_frame_source_and_a_glob_of_images_one_source_each(tmp_path):
    frames = _frames(3)
    folder = _save_frames(tmp_path / "seq", frames)
    (image,) = resolve_input(str(folder / "frame1.png"))
    assert image == VideoSource(folder / "frame1.png", "image") and image.name == "frame1"
    info = probe(image)
    assert (info.width, info.height, info.num_frames) == (frames[1].shape[1], frames[1].shape[0], 1)
    with FrameStream(image) as stream:
        decoded = list(stream)
    assert len(decoded) == 1 and np.array_equal(decoded[0], frames[1])
    assert [s.path.name for s in resolve_input(str(folder / "frame*.png"))] == ["frame0.png", "frame1.png", "frame2.png"]
    assert resolve_input(str(folder)) == [VideoSource(folder, "frames")]
    (folder / "frame2.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(VideoInputError, match=r"frame2\.png: unreadable image"):
        probe(VideoSource(folder / "frame2.png", "image"))
