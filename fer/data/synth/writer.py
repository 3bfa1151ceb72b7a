"""Mux frames and a waveform into an mp4: H.264 video (yuv420p) + AAC audio at 48 kHz (PyAV).

For the synthetic CREMA-D: ``write_flv`` (Sorenson H.263 video + MP3 audio at 44.1 kHz, as
CREMA-D's ``VideoFlash``) and ``write_wav`` (16-bit mono PCM, as its ``AudioWAV``).

The output is byte-identical from run to run, which takes three things: both encoders run
single-threaded (clips are parallelised instead); frames are converted to yuv420p here with
OpenCV, not by FFmpeg's (threaded) scaler; and x264's macroblock tree is off, because with it
libx264 was seen to encode the same frames differently from run to run. The file is written
under a temporary name in the target folder and moved into place, so a crash never leaves a
truncated clip.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from fer.atomic import atomic_path

FLV_AUDIO_RATE = 44_100  # FLV carries MP3 at 44.1, 22.05 or 11.025 kHz only

AUDIO_RATE = 48_000
AUDIO_LAYOUT = "stereo"  # as the RAVDESS audio-video files
_AAC_FRAME = 1024  # samples per AAC frame


def write_clip(path: Path, frames: Iterable[np.ndarray], audio: np.ndarray, *, fps: int,
               size: int, crf: int = 18) -> Path:
    """Encode one clip atomically.

    Args:
        path: target ``.mp4``.
        frames: uint8 (size, size, 3) RGB frames.
        audio: float32 (L,) mono waveform at ``AUDIO_RATE`` in [-1, 1]; written to both channels.
        fps: frame rate.
        size: frame width and height (even).
        crf: x264 constant rate factor (lower = higher quality).

    Returns:
        ``path``.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            video = container.add_stream("libx264", rate=fps)
            video.width = video.height = size
            video.pix_fmt = "yuv420p"
            video.time_base = Fraction(1, fps)
            video.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
            video.codec_context.thread_count = 1
            sound = container.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = AUDIO_LAYOUT
            sound.time_base = Fraction(1, AUDIO_RATE)
            sound.codec_context.thread_count = 1
            sound.options = {"aac_coder": "fast"}  # ~3x faster than the default two-loop search
            stereo = np.stack([audio, audio]).astype(np.float32)
            audio_done = 0  # samples muxed so far; audio is interleaved with the video by time

            def mux_audio(until: int) -> None:
                nonlocal audio_done
                while audio_done < min(until, stereo.shape[1]):
                    chunk = np.ascontiguousarray(stereo[:, audio_done:audio_done + _AAC_FRAME])
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=AUDIO_LAYOUT)
                    frame.sample_rate = AUDIO_RATE
                    frame.pts = audio_done
                    container.mux(sound.encode(frame))
                    audio_done += chunk.shape[1]

            for i, img in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420),
                                                   format="yuv420p")
                frame.pts = i
                container.mux(video.encode(frame))
                mux_audio((i + 1) * AUDIO_RATE // fps)
            container.mux(video.encode())
            mux_audio(stereo.shape[1])
            container.mux(sound.encode())
    return path


def _resample(audio: np.ndarray, rate: int, to: int) -> np.ndarray:
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, to)
    return resample_poly(audio.astype(np.float64), to // g, rate // g).astype(np.float32)


def write_flv(path: Path, frames: Iterable[np.ndarray], audio: np.ndarray, *, fps: int,
              audio_rate: int = AUDIO_RATE) -> Path:
    """Encode one FLV clip atomically: FLV1 (Sorenson H.263) video + mono MP3 at 44.1 kHz.

    Both encoders run single-threaded, so the file is the same from run to run.

    Args:
        path: target ``.flv``.
        frames: uint8 (H, W, 3) RGB frames, H and W even.
        audio: float32 (L,) mono waveform in [-1, 1] at ``audio_rate``.
        fps: frame rate.
        audio_rate: rate of ``audio``, Hz (resampled to 44.1 kHz).

    Returns:
        ``path``.
    """
    path = Path(path)
    mono = _resample(audio, audio_rate, FLV_AUDIO_RATE)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="flv") as container:
            video = container.add_stream("flv", rate=fps)
            video.pix_fmt = "yuv420p"
            video.time_base = Fraction(1, fps)
            video.bit_rate = 2_000_000
            video.codec_context.thread_count = 1
            sound = container.add_stream("libmp3lame", rate=FLV_AUDIO_RATE)
            sound.layout = "mono"
            sound.time_base = Fraction(1, FLV_AUDIO_RATE)
            sound.codec_context.thread_count = 1
            chunk_size = 1152  # samples per MP3 frame
            audio_done = 0

            def mux_audio(until: int) -> None:
                nonlocal audio_done
                while audio_done < min(until, len(mono)):
                    chunk = np.ascontiguousarray(mono[None, audio_done:audio_done + chunk_size])
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                    frame.sample_rate = FLV_AUDIO_RATE
                    frame.pts = audio_done
                    container.mux(sound.encode(frame))
                    audio_done += chunk.shape[1]

            for i, img in enumerate(frames):
                if i == 0:
                    video.height, video.width = img.shape[:2]
                frame = av.VideoFrame.from_ndarray(cv2.cvtColor(img, cv2.COLOR_RGB2YUV_I420),
                                                   format="yuv420p")
                frame.pts = i
                container.mux(video.encode(frame))
                mux_audio((i + 1) * FLV_AUDIO_RATE // fps)
            container.mux(video.encode())
            mux_audio(len(mono))
            container.mux(sound.encode())
    return path


def write_wav(path: Path, audio: np.ndarray, *, audio_rate: int = AUDIO_RATE, rate: int = 16_000) -> Path:
    """Write a mono 16-bit PCM WAV atomically, resampled from ``audio_rate`` to ``rate``.

    Returns:
        ``path``.
    """
    import wave

    samples = np.clip(_resample(audio, audio_rate, rate), -1.0, 1.0)
    pcm = np.round(samples * 32767).astype("<i2")
    with atomic_path(Path(path)) as tmp:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(pcm.tobytes())
    return Path(path)
