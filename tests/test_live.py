"""Live sources: webcam / URL inputs, causal windows (latency 0 frames), an MPEG-TS stream served
over HTTP on 127.0.0.1 by the test itself, --show and --drop-frames."""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pavenet.cli import main
from pavenet.config import config_to_dict, load_config
from pavenet.data.synthetic import generate_video
from pavenet.infer import display
from pavenet.infer.estimator import PoseEstimator
from pavenet.infer.live_source import live_spec
from pavenet.infer.output_names import output_names
from pavenet.infer.outputs import write_outputs
from pavenet.infer.video_io import FrameStream, VideoInputError, VideoSource, resolve_input, resolve_inputs
from pavenet.infer.video_writer import VideoWriter
from pavenet.infer.windows import SlidingWindows, causal_window_frames, window_frames
from pavenet.model import build
from pavenet.runtime.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model.hidden_dim=32", "model.num_heads=2", "model.enc_layers=1", "model.ffn_dim=64",
         "model.num_queries=8", "model.num_kept=4", "model.pose_dec_layers=1", "model.refine_hidden=[32]",
         "model.embed_dim=16", "model.backbone.name=resnet10t", "data.test_short_side=64",
         "data.test_max_size=96", "postprocess.top_k=4", "postprocess.score_threshold=0.0"]
FRAMES = 12


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "synthetic_tiny.yaml", SMALL)
    model, _, post = build(cfg)
    with torch.no_grad():  # break the symmetric initialisation so queries differ
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    ckpt = save_checkpoint(tmp_path_factory.mktemp("run"), 0, model.eval().state_dict(),
                           {"config": config_to_dict(cfg), "step": 0})
    return model, post, ckpt


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory) -> Path:
    """An MPEG-TS (MPEG-2 video) file of FRAMES synthetic frames at 25 fps."""
    frames, _ = generate_video(11, FRAMES, (96, 64), 3, "easy")
    path = tmp_path_factory.mktemp("stream") / "clip.ts"
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def served(stream_file):
    """``http://127.0.0.1:PORT/clip.ts``: the file sent as a live stream (no length, no seeking)."""
    data = stream_file.read_bytes()

    class Stream(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            try:
                for i in range(0, len(data), 4096):
                    self.wfile.write(data[i:i + 4096])
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/clip.ts"
    server.shutdown()
    server.server_close()


def _same_predictions(a, b):
    assert [f.index for f in a] == [f.index for f in b]
    assert [f.timestamp for f in a] == pytest.approx([f.timestamp for f in b], abs=1e-9)
    for fa, fb in zip(a, b):
        assert [p.track_id for p in fa.people] == [p.track_id for p in fb.people]
        keypoints = [np.stack([p.keypoints for p in f.people]) if f.people else np.zeros(0) for f in (fa, fb)]
        np.testing.assert_allclose(*keypoints, rtol=0, atol=1e-4)  # pixels


def test_webcam_indices_and_urls_are_live_sources(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    assert live_spec("0", exists=False).url == "/dev/video0" and live_spec("2", exists=False).format == "v4l2"
    assert live_spec("0", exists=True) is None  # an existing file named 0 stays a file
    spec = live_spec("rtsp://cam.local:554/live/ch1.sdp", exists=False)
    assert (spec.url, spec.format, spec.name) == ("rtsp://cam.local:554/live/ch1.sdp", None, "ch1")
    assert live_spec("http://10.0.0.5:8080/", exists=False).name == "10.0.0.5"
    assert live_spec("clip.mp4", exists=False) is None and live_spec("ftp://x/y.mp4", exists=False) is None
    (source,) = resolve_input("http://127.0.0.1:1/a/live.ts?token=1")  # a query is not a glob
    assert (source.kind, source.name, source.label, source.live) == ("live", "live", source.url, True)
    sources, errors = resolve_inputs(["http://h/x/cam.ts", "http://h/y/cam.ts", "http://h/x/cam.ts"])
    assert [s.url for s in sources] == ["http://h/x/cam.ts", "http://h/y/cam.ts"] and errors == []
    assert output_names(sources) == ["cam", "cam_2"]
    monkeypatch.setattr(sys, "platform", "sunos5")
    with pytest.raises(VideoInputError, match="needs Linux"):
        resolve_input("0")


@pytest.mark.parametrize("size, stride", [(3, 1), (5, 1), (5, 2)])
def test_causal_windows_come_with_their_frame_and_repeat_it_for_the_future(size, stride):
    windows = SlidingWindows(size, stride, causal=True)
    for k in range(9):
        (window,) = windows.push(f"item{k}")
        assert window.key == k and list(window.frames) == causal_window_frames(k, size, stride)
        assert window.items == tuple(f"item{f}" for f in window.frames)
        assert window.frames[size // 2:] == (k,) * (size // 2 + 1)  # the future slots show frame k
        assert list(window.frames) == window_frames(k, k + 1, size, stride)  # as if the video ended at k
    assert windows.finish() == [] and len(windows) <= size // 2 * stride + 1


@pytest.mark.parametrize("causal, batch_size, latency", [(True, 1, 0), (True, 3, 2), (False, 1, 1)])
def test_a_frame_is_predicted_as_soon_as_the_frames_it_needs_are_in(tiny, causal, batch_size, latency):
    """Frames pulled from the generator when frame t's result comes: t + 1 + latency (the last
    frames excepted); T = 3, so a centred window waits for one more frame."""
    model, post, _ = tiny
    frames, _ = generate_video(3, 7, (96, 64), 2, "easy")
    pulled = []

    def camera():
        for frame in frames:
            pulled.append(1)
            yield frame

    est = PoseEstimator(model, post, 64, 96, device="cpu")
    seen = [(pred.index, len(pulled)) for pred in est.predict_frames(camera(), batch_size, 0.0, causal=causal)]
    assert [index for index, _ in seen] == list(range(7))
    for index, count in seen:
        if causal:
            assert count == min(7, (index // batch_size + 1) * batch_size), seen
        else:
            assert count == min(7, index + 1 + latency), seen
    assert max(count - index - 1 for index, count in seen) == latency


def test_causal_result_of_frame_t_is_the_last_frame_of_the_video_cut_at_t(tiny, stream_file):
    model, post, _ = tiny
    with FrameStream(VideoSource(stream_file, "video")) as stream:
        frames = list(stream)
    est = PoseEstimator(model, post, 64, 96, device="cpu")
    causal = list(est.predict_frames(iter(frames), score_threshold=0.0, causal=True))
    for t in (0, 5):
        cut = list(est.predict_frames(iter(frames[:t + 1]), score_threshold=0.0))[-1]
        np.testing.assert_allclose(np.sort(cut.arrays()[0], axis=0), np.sort(causal[t].arrays()[0], axis=0),
                                   rtol=0, atol=1e-4)


def test_a_stream_served_over_http_gets_the_predictions_of_the_same_file(tiny, stream_file, served):
    model, post, _ = tiny
    est = PoseEstimator(model, post, 64, 96, device="cpu")
    live = list(est.predict_video(served, score_threshold=0.0))  # live: causal by default
    from_file = list(est.predict_video(stream_file, score_threshold=0.0, causal=True))
    assert len(live) == FRAMES  # every frame of the stream
    _same_predictions(live, from_file)
    assert [f.timestamp for f in live] == pytest.approx([k / 25 for k in range(FRAMES)], abs=1e-6)
    assert any(f.people for f in live)


def test_predict_cli_on_a_stream_url_writes_the_files_of_the_causal_file_run(tiny, stream_file, served, tmp_path):
    _, _, ckpt = tiny
    out = tmp_path / "out"
    code = main(["predict", served, "--weights", str(ckpt), "--out", str(out), "--format", "posetrack", "csv",
                 "--render", "--score-threshold", "0.0", "--device", "cpu", "--batch-size", "1"])
    assert code == 0
    est = PoseEstimator.from_checkpoint(ckpt, device="cpu")
    frames = list(est.predict_video(stream_file, score_threshold=0.0, causal=True))
    expected = write_outputs(tmp_path / "expected", "clip", 0, frames, ("posetrack", "csv"))
    for path in expected:
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name
    with av.open(str(out / "clip.mp4")) as container:  # the overlay, written while predicting
        assert sum(1 for _ in container.decode(video=0)) == FRAMES


class FakeViewer:
    def __init__(self, open_frames=1000):
        self.images, self.open_frames, self.closed = [], open_frames, False

    def show(self, image):
        self.images.append(image.copy())
        return len(self.images) < self.open_frames

    def close(self):
        self.closed = True


def test_closing_the_show_window_ends_a_live_input_with_its_frames_so_far(tiny, served, tmp_path, monkeypatch):
    _, _, ckpt = tiny
    viewer = FakeViewer(open_frames=4)
    monkeypatch.setattr(display, "open_viewer", lambda title="": viewer)
    out = tmp_path / "out"
    code = main(["predict", served, "--weights", str(ckpt), "--out", str(out), "--format", "csv",
                 "--score-threshold", "0.0", "--device", "cpu", "--batch-size", "1", "--show"])
    assert code == 0 and len(viewer.images) == 4 and viewer.closed
    rows = (out / "clip.csv").read_text().splitlines()[1:]
    assert {int(r.split(",")[0]) for r in rows} <= {0, 1, 2, 3} and rows


def test_show_without_a_display_is_one_line_before_loading_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    code = main(["predict", "clip.mp4", "--weights", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--show"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == ("pavenet predict: error: --show needs a display, and none is set (no DISPLAY or "
                           "WAYLAND_DISPLAY); use --render to write the overlay to a file instead")
    assert display.has_display({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert display.has_display({}, "darwin") and not display.has_display({}, "linux")


def test_the_matplotlib_window_shows_each_frame_until_closed(monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import KeyEvent

    monkeypatch.setattr(plt.Figure, "show", lambda self, warn=True: None)  # no window on the test machine
    viewer = display.MatplotlibViewer("test")
    image = np.zeros((4, 6, 3), np.uint8)
    assert viewer.show(image) and viewer.show(image + 9)
    np.testing.assert_array_equal(viewer.artist.get_array(), image + 9)
    KeyEvent("key_press_event", viewer.figure.canvas, "q")._process()
    assert not viewer.show(image)
    viewer.close()
    assert not plt.fignum_exists(viewer.figure.number)


def test_drop_frames_keeps_the_newest_frames_when_the_consumer_is_slow(tmp_path):
    frames, _ = generate_video(5, 20, (64, 48), 1, "easy")
    path = tmp_path / "v.mp4"
    with VideoWriter(path, 25) as writer:
        for frame in frames:
            writer.write(frame)
    stream = FrameStream(VideoSource(path, "video"), queue_size=2, drop_frames=True)
    timed = stream.timed()
    received = [next(timed)]
    deadline = time.monotonic() + 30
    while stream.decoded < 20 and time.monotonic() < deadline:  # a slow consumer
        time.sleep(0.01)
    time.sleep(0.1)
    received += list(timed)
    times = [seconds for _, seconds in received]
    assert len(received) + stream.dropped == 20 and stream.dropped >= 20 - 1 - 3
    assert times == sorted(times) and times[-1] == pytest.approx(19 / 25)  # the newest frame is kept
    assert all(abs(t * 25 - round(t * 25)) < 1e-6 for t in times)  # true timestamps, gaps where dropped
