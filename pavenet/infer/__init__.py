"""Video inference building blocks: video sources and streaming decoding (``video_io``), overlay
video writing (``video_writer``), window layout (``windows``), track ids across windows
(``linker``) and optional keypoint smoothing (``smoothing``)."""
