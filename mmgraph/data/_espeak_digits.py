"""Speak the digits 0-9 with espeak-ng for every speaker of av-digits; run as a script in a fresh process.

    python _espeak_digits.py OUT.npz

The library never imports this file (espeak-ng is GPL and optional): :func:`mmgraph.data.avdigits.load_avdigits`
runs it in a subprocess. It needs only numpy and the ``espeakng-loader`` wheel (the espeak-ng library and its voice
data), called through ctypes. espeak-ng draws random numbers while it speaks, so the pool is generated in one pass,
in a fixed order, after ``espeak_ng_SetRandSeed(0)``; the caller checks the checksum of what it writes.

Writes ``waves`` (int16, every utterance one after the other), ``offsets`` (int64 ``[U + 1]``: utterance ``u`` is
``waves[offsets[u]:offsets[u + 1]]``), ``sample_rate`` and ``speakers`` (``[S]`` strings
``accent+variant/rate/pitch``); utterance ``u`` is speaker ``u // 10`` saying digit ``u % 10``.
"""

import ctypes
import sys

import numpy as np

ACCENTS = ("en", "en-US", "en-US-nyc", "en-029", "en-GB-scotland", "en-GB-x-rp", "en-GB-x-gbclan", "en-GB-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "f4")
RATES = (140, 195)   # words per minute
PITCHES = (30, 70)   # espeak's 0..100 base pitch
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
AUDIO_OUTPUT_SYNCHRONOUS, ESPEAK_RATE, ESPEAK_PITCH = 2, 1, 3


def speakers() -> list[tuple[str, int, int]]:
    """``(voice, rate, pitch)`` of every speaker, in the fixed generation order."""
    return [(f"{accent}+{variant}", rate, pitch) for accent in ACCENTS for variant in VARIANTS
            for rate in RATES for pitch in PITCHES]


def main(out: str) -> None:
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    chunks: list[np.ndarray] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, count, events):
        if count > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    callback = callback_type(collect)
    sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
    if sample_rate <= 0:
        raise RuntimeError(f"espeak_Initialize failed ({sample_rate}) with data {espeakng_loader.get_data_path()}")
    lib.espeak_ng_SetRandSeed(0)
    lib.espeak_SetSynthCallback(callback)
    waves, lengths = [], []
    for voice, rate, pitch in speakers():
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(ESPEAK_RATE, rate, 0)
        lib.espeak_SetParameter(ESPEAK_PITCH, pitch, 0)
        for word in WORDS:
            chunks.clear()
            text = word.encode() + b"\0"
            lib.espeak_Synth(text, len(text), 0, 0, 0, 0, None, None)
            lib.espeak_Synchronize()
            wave = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
            if wave.size == 0:
                raise RuntimeError(f"espeak-ng produced no audio for {word!r} with voice {voice!r}")
            waves.append(wave)
            lengths.append(wave.size)
    np.savez(out, waves=np.concatenate(waves).astype(np.int16), offsets=np.concatenate([[0], np.cumsum(lengths)]),
             sample_rate=np.int64(sample_rate), speakers=np.array([f"{v}/{r}/{p}" for v, r, p in speakers()]))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: python {sys.argv[0]} OUT.npz")
    main(sys.argv[1])
