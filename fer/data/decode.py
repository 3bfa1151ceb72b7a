"""Decode clips with PyAV: T frames sampled evenly over the video, audio as mono float32.

Every failure is a :class:`DecodeError` that carries the file and what is wrong with it, so the
prepare step can report it and go on with the other clips.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DecodeError(ValueError):
    """A media file that cannot be decoded as needed.

    Attributes:
        path: the file.
        reason: what is wrong with it.
    """

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoSample:
    """Frames sampled from one video.

    Attributes:
        frames: uint8 (T, H, W, 3) RGB.
        indices: int64 (T,) index of each sampled frame in the video.
        n_frames: frames in the video.
        fps: average frame rate.
    """

    frames: np.ndarray
    indices: np.ndarray
    n_frames: int
    fps: float


def sample_indices(n_frames: int, n: int) -> np.ndarray:
    """Indices of ``n`` frames spread evenly over ``n_frames``: the centre of each of n equal spans.

    Args:
        n_frames: frames in the video (>= 1).
        n: frames wanted (>= 1); indices repeat when ``n > n_frames``.

    Returns:
        int64 (n,) non-decreasing indices in [0, n_frames).
    """
    if n_frames < 1 or n < 1:
        raise ValueError(f"need n_frames >= 1 and n >= 1, got {n_frames}, {n}")
    return np.minimum(((np.arange(n) + 0.5) * n_frames / n).astype(np.int64), n_frames - 1)


def _open(path: Path):
    import av

    if not path.is_file():
        raise DecodeError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(path, f"corrupt or unreadable media ({exc})") from exc


def _count_video_frames(path: Path, stream) -> int:
    """Frames in the stream: the header count when the container has one, else count packets.

    Packets are counted in a second opening of the file: FLV (CREMA-D) has no frame count in
    its header and refuses to seek back to the start.
    """
    if stream.frames > 0:
        return stream.frames
    with _open(path) as probe:
        return sum(1 for packet in probe.demux(probe.streams.video[0]) if packet.size > 0)


def read_frames(path: str | Path, n: int) -> VideoSample:
    """Decode ``n`` frames sampled evenly over the video of ``path``.

    Args:
        path: a video file.
        n: frames to sample.

    Returns:
        The sampled frames and where they came from.

    Raises:
        DecodeError: empty, missing, corrupt or truncated file, or no video stream.
    """
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise DecodeError(path, "no video stream")
        stream = container.streams.video[0]
        kept: dict[int, np.ndarray] = {}
        n_frames = decoded = 0
        try:
            n_frames = _count_video_frames(path, stream)
            if n_frames == 0:
                raise DecodeError(path, "video stream has no frames")
            indices = sample_indices(n_frames, n)
            wanted = set(indices.tolist())
            for frame in container.decode(stream):
                if decoded in wanted:
                    kept[decoded] = frame.to_ndarray(format="rgb24")
                decoded += 1
                if decoded > indices[-1]:
                    break
        except av.FFmpegError as exc:
            raise DecodeError(path, f"truncated or corrupt video: decoding failed after {decoded} "
                                    f"of {n_frames} frames ({exc})") from exc
        fps = float(stream.average_rate or 0.0)
    if len(kept) < len(wanted):
        raise DecodeError(path, f"truncated video: the stream ends after {decoded} of the "
                                f"{n_frames} frames its header announces")
    return VideoSample(frames=np.stack([kept[i] for i in indices.tolist()]), indices=indices,
                       n_frames=n_frames, fps=fps)


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of ``path`` as mono (mean of channels) float32.

    Args:
        path: a video or audio file.
        sample_rate: output rate, Hz.

    Returns:
        float32 (L,) samples at ``sample_rate``.

    Raises:
        DecodeError: empty, missing or corrupt file, no audio stream, or no samples decoded.
    """
    import av

    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise DecodeError(path, "no audio stream")
        stream = container.streams.audio[0]
        # Keep the channel layout and average the planes ourselves: FFmpeg's stereo->mono
        # downmix scales by sqrt(2), which would push a full-scale signal past 1.
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().mean(axis=0) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise DecodeError(path, f"corrupt audio stream ({exc})") from exc
    if not chunks:
        raise DecodeError(path, "audio stream has no samples")
    return np.concatenate(chunks).astype(np.float32, copy=False)
