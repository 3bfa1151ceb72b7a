"""Speech-like audio: a glottal pulse train through time-varying formant filters.

An utterance is one of the two RAVDESS statements as seven syllables (consonant onset, vowel,
relative length, pitch accent). ``plan_utterance`` fixes the syllable timing from the
speaking rate; the same timing drives the talking mouth in ``face.py`` (lip sync).
``synthesize`` renders it for one speaker (base pitch, formant scale, loudness) and one
prosody (``truth.voice_prosody`` plus per-clip jitter): pitch level, range and tremor shape
the pitch contour, the open quotient and breath the voice quality, energy the level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

SAMPLE_RATE = 48_000
BASE_LEVEL_DBFS = -33.0  # RMS of voiced speech at 0 dB energy; the loudest prosody stays unclipped
NOISE_DBFS = -66.0  # room noise floor
_BLOCK = 480  # formant update interval: 10 ms at 48 kHz

# Formants (Hz) of an adult male voice; a speaker's formant scale multiplies them.
VOWELS: dict[str, tuple[float, float, float, float]] = {
    "i": (270, 2290, 3010, 3700),
    "I": (390, 1990, 2550, 3600),
    "a": (730, 1090, 2440, 3400),
    "o": (570, 840, 2410, 3400),
    "e": (500, 1500, 2500, 3500),
}
_BANDWIDTHS = np.array([70.0, 100.0, 130.0, 170.0])
# How far each vowel opens the jaw (drives the talking mouth).
OPENNESS = {"i": 0.35, "I": 0.5, "a": 1.0, "o": 0.8, "e": 0.6}

# Consonant onsets: noise band centre (Hz), relative bandwidth, length (s), RMS relative to
# the vowels, voiced.
CONSONANTS: dict[str, tuple[float, float, float, float, bool]] = {
    "k": (2500, 0.6, 0.045, 0.22, False),
    "t": (4500, 0.6, 0.040, 0.22, False),
    "d": (3500, 0.8, 0.020, 0.12, True),
    "b": (1200, 0.8, 0.015, 0.12, True),
    "s": (6500, 0.5, 0.100, 0.15, False),
    "dh": (5000, 0.8, 0.045, 0.06, True),
}


@dataclass(frozen=True)
class SyllableSpec:
    """One syllable of a statement: onset consonant ('' for none), start and end vowel,
    relative length and pitch-accent weight."""

    consonant: str
    vowel: tuple[str, str]
    length: float
    accent: float


# Statement 01 "Kids are talking by the door", 02 "Dogs are sitting by the door".
STATEMENTS: dict[int, tuple[SyllableSpec, ...]] = {
    1: (SyllableSpec("k", ("I", "I"), 1.0, 0.6), SyllableSpec("", ("a", "a"), 0.8, 0.2),
        SyllableSpec("t", ("o", "o"), 1.1, 1.0), SyllableSpec("", ("I", "i"), 0.7, 0.1),
        SyllableSpec("b", ("a", "i"), 1.0, 0.4), SyllableSpec("dh", ("e", "e"), 0.6, 0.0),
        SyllableSpec("d", ("o", "e"), 1.5, 0.7)),
    2: (SyllableSpec("d", ("o", "o"), 1.1, 0.8), SyllableSpec("", ("a", "a"), 0.8, 0.2),
        SyllableSpec("s", ("I", "I"), 1.0, 1.0), SyllableSpec("t", ("I", "i"), 0.7, 0.1),
        SyllableSpec("b", ("a", "i"), 1.0, 0.4), SyllableSpec("dh", ("e", "e"), 0.6, 0.0),
        SyllableSpec("d", ("o", "e"), 1.5, 0.7)),
}


@dataclass(frozen=True)
class Syllable:
    """A timed syllable: ``start`` and ``vowel_start`` / ``end`` in seconds."""

    spec: SyllableSpec
    start: float
    vowel_start: float
    end: float

    @property
    def openness(self) -> float:
        """Jaw opening of the vowel in [0, 1]."""
        return OPENNESS[self.spec.vowel[0]]


def plan_utterance(statement: int, rate: float, seconds: float,
                   rng: np.random.Generator) -> list[Syllable]:
    """Time the syllables of a statement inside a clip.

    Args:
        statement: 1 or 2.
        rate: speaking-rate factor (1 = about four syllables per second).
        seconds: clip length; the utterance starts 8-20 % in and ends before 95 %.
        rng: per-clip generator (syllable length jitter and start time).

    Returns:
        The syllables in order.
    """
    specs = STATEMENTS[statement]
    unit = 0.245 * min(1.0, seconds / 3.0) / rate  # seconds per unit of relative length
    lengths = np.array([s.length for s in specs]) * unit * np.exp(rng.normal(0, 0.08, len(specs)))
    total = float(lengths.sum())
    start = min(rng.uniform(0.08, 0.20) * seconds, 0.95 * seconds - total)
    if start < 0.02 * seconds:
        raise ValueError(f"an utterance of {total:.2f} s at rate {rate:.2f} does not fit "
                         f"in a {seconds} s clip")
    out, t = [], start
    for spec, length in zip(specs, lengths):
        cons = CONSONANTS[spec.consonant][2] if spec.consonant else 0.0
        out.append(Syllable(spec, t, t + min(cons, 0.4 * length), t + length))
        t += length
    return out


def _raise_envelope(env: np.ndarray, level: float, a: float, b: float, attack: float,
                    release: float) -> None:
    """In place: env = max(env, level on [a, b] with raised-cosine ramps outside it)."""
    i0 = max(int((a - attack) * SAMPLE_RATE), 0)
    i1 = min(int((b + release) * SAMPLE_RATE) + 1, len(env))
    t = np.arange(i0, i1) / SAMPLE_RATE
    up = np.clip((t - (a - attack)) / attack, 0, 1)
    down = np.clip(((b + release) - t) / release, 0, 1)
    ramp = (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down))
    np.maximum(env[i0:i1], level * ramp, out=env[i0:i1])


def pitch_contour(syllables: list[Syllable], t: np.ndarray, prosody: dict[str, float],
                  rng: np.random.Generator) -> np.ndarray:
    """Pitch in semitones relative to the speaker's base pitch.

    Level + accents scaled by the range + a final fall + declination + slow wander + tremor.

    Returns:
        float64 (L,) semitones.
    """
    onset, offset = syllables[0].start, syllables[-1].end
    span = max(offset - onset, 1e-3)
    level, spread = prosody["pitch_st"], prosody["range_st"]
    contour = level + spread * (0.3 - 0.6 * np.clip((t - onset) / span, 0, 1))  # declination
    for syl in syllables:  # Gaussian accents, evaluated within 4 sigma
        sigma = 0.3 * (syl.end - syl.vowel_start)
        centre = syl.vowel_start + 1.33 * sigma
        i0, i1 = np.searchsorted(t, [centre - 4 * sigma, centre + 4 * sigma])
        bump = np.exp(-0.5 * ((t[i0:i1] - centre) / sigma) ** 2)
        contour[i0:i1] += spread * syl.spec.accent * bump
    last = syllables[-1]
    contour -= 0.5 * spread * np.clip((t - last.vowel_start) / (last.end - last.vowel_start), 0, 1)
    knots = rng.normal(0, 0.3, int(t[-1] / 0.25) + 3)  # slow wander, one knot per 250 ms
    contour += np.interp(t, np.arange(len(knots)) * 0.25, knots)
    tremor_hz, tremor_phase = rng.uniform(5.0, 7.0), rng.uniform(0, 2 * np.pi)
    contour += prosody["tremor_st"] * np.sin(2 * np.pi * tremor_hz * t + tremor_phase)
    return contour


def glottal_flow_derivative(phase: np.ndarray, open_quotient: float) -> np.ndarray:
    """Rosenberg glottal pulse, differentiated (source + lip radiation).

    Args:
        phase: cumulative cycles (L,); the fractional part is the position in the period.
        open_quotient: open fraction of each period.
    """
    pos = phase % 1.0
    rise = 0.66 * open_quotient
    flow = np.where(pos < rise, 0.5 - 0.5 * np.cos(np.pi * pos / rise),
                    np.where(pos < open_quotient,
                             np.cos(0.5 * np.pi * (pos - rise) / (open_quotient - rise)), 0.0))
    return np.diff(flow, prepend=flow[0])


def _formant_track(syllables: list[Syllable], times: np.ndarray, scale: float) -> np.ndarray:
    """Formant frequencies (n, 4) at block times, gliding from each vowel's start to end."""
    out = np.empty((len(times), 4))
    for i, t in enumerate(times):
        syl = next((s for s in reversed(syllables) if s.start <= t), syllables[0])
        p = np.clip((t - syl.vowel_start) / max(syl.end - syl.vowel_start, 1e-3), 0, 1)
        a, b = (np.array(VOWELS[v]) for v in syl.spec.vowel)
        out[i] = (a + (b - a) * p) * scale
    return out


def _resonator(freq: float, bandwidth: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit-DC-gain two-pole resonator (b, a)."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    a1, a2 = -2 * r * np.cos(2 * np.pi * freq / SAMPLE_RATE), r * r
    return np.array([1 + a1 + a2]), np.array([1.0, a1, a2])


def _vocal_tract(source: np.ndarray, syllables: list[Syllable], scale: float) -> np.ndarray:
    """Filter the source through the formant cascade, updating formants every 10 ms.

    Only the utterance (plus 60 ms of ringing) is filtered: the source is silent elsewhere.
    """
    out = np.zeros_like(source)
    first = max(int(syllables[0].start * SAMPLE_RATE) - _BLOCK, 0)
    last = min(int((syllables[-1].end + 0.06) * SAMPLE_RATE), len(source))
    starts = np.arange(first, last, _BLOCK)
    formants = _formant_track(syllables, (starts + _BLOCK / 2) / SAMPLE_RATE, scale)
    states = np.zeros((4, 2))
    for start, freqs in zip(starts, formants):
        block = source[start:min(start + _BLOCK, last)]
        for k in range(4):  # cascade; each state carries over to the next block
            b, a = _resonator(freqs[k], _BANDWIDTHS[k])
            block, states[k] = signal.lfilter(b, a, block, zi=states[k])
        out[start:start + len(block)] = block
    return out


def _consonants(syllables: list[Syllable], n: int, rng: np.random.Generator) -> np.ndarray:
    """Band-passed noise bursts and frication at the syllable onsets."""
    out = np.zeros(n)
    for syl in syllables:
        if not syl.spec.consonant:
            continue
        centre, rel_bw, _, level, _ = CONSONANTS[syl.spec.consonant]
        a, b = int(syl.start * SAMPLE_RATE), int(syl.vowel_start * SAMPLE_RATE)
        if b <= a:
            continue
        sos = signal.butter(2, [centre * (1 - rel_bw / 2), centre * (1 + rel_bw / 2)],
                            btype="bandpass", fs=SAMPLE_RATE, output="sos")
        burst = signal.sosfilt(sos, rng.standard_normal(b - a))
        ramp = np.sin(np.pi * np.linspace(0, 1, b - a)) ** 0.5
        out[a:b] += level * burst / (np.std(burst) + 1e-12) * ramp
    return out


def synthesize(syllables: list[Syllable], n_samples: int, *, f0: float, formant_scale: float,
               level_db: float, prosody: dict[str, float], rng: np.random.Generator) -> np.ndarray:
    """Render an utterance.

    Args:
        syllables: from ``plan_utterance``.
        n_samples: output length at ``SAMPLE_RATE``.
        f0: the speaker's base pitch, Hz.
        formant_scale: the speaker's vocal-tract scale (female voices above 1).
        level_db: voiced-speech RMS relative to ``BASE_LEVEL_DBFS`` (speaker + emotion + jitter).
        prosody: pitch_st, range_st, open_quotient, breath, tremor_st (``truth.VOICE_PROSODY``).
        rng: per-clip generator.

    Returns:
        float32 (n_samples,) mono waveform in [-1, 1].
    """
    t = np.arange(n_samples) / SAMPLE_RATE
    semitones = pitch_contour(syllables, t, prosody, rng)
    phase = np.cumsum(f0 * 2.0 ** (semitones / 12) / SAMPLE_RATE)
    voicing = np.zeros(n_samples)
    for syl in syllables:
        loudness = 0.8 + 0.4 * syl.spec.accent
        _raise_envelope(voicing, loudness, syl.vowel_start, syl.end - 0.03, 0.02, 0.04)
        if syl.spec.consonant and CONSONANTS[syl.spec.consonant][4]:  # voiced onset: a weak murmur
            _raise_envelope(voicing, 0.15, syl.start, syl.vowel_start, 0.01, 0.01)
    pulses = glottal_flow_derivative(phase, prosody["open_quotient"])
    pulses /= np.std(pulses[voicing > 0.5]) + 1e-12
    source = voicing * (pulses + prosody["breath"] * 3.0 * rng.standard_normal(n_samples))
    speech = _vocal_tract(source, syllables, formant_scale)
    voiced = voicing > 0.5
    speech /= np.sqrt(np.mean(speech[voiced] ** 2)) + 1e-12
    speech += _consonants(syllables, n_samples, rng)
    gain = 10 ** ((BASE_LEVEL_DBFS + level_db) / 20)
    noise = 10 ** (NOISE_DBFS / 20) * rng.standard_normal(n_samples)
    return np.clip(gain * speech + noise, -1.0, 1.0).astype(np.float32)
