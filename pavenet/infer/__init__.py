"""Video inference building blocks: video sources and streaming decoding (``video_io``,
``decoding``, ``live_source`` for webcams and stream URLs), overlay video writing
(``video_writer``), window layout (``windows``), track ids across windows (``linker``), optional
keypoint smoothing (``smoothing``), tracker settings from YAML (``tracker_config``), the per-frame
results (``results``), the track summary (``track_summary``), the ``--show`` window (``display``)
and sharing inputs among torchrun processes (``sharding``); ``compiled`` runs a network through
``torch.compile``.

The compile mode names live here, free of torch imports, so that command-line parsers can offer
them as choices without importing torch.
"""

#: ``torch.compile`` modes; the ones in :data:`GRAPH_MODES` replay CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
GRAPH_MODES = ("reduce-overhead", "max-autotune")


def check_compile_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}, expected one of {COMPILE_MODES}")
