"""VQ-VAE codes, encoded once per song, and the Grain pipeline of prior training windows over them.

The original trains priors on raw audio: every step draws a random `sample_length` chunk and encodes it
through the frozen VQ-VAE. jukejax encodes every song of an audio dataset once (`encode_dataset`) into a
second TFDS ArrayRecord dataset, `jukejax_codes`, so prior and upsampler training never touch audio or
the VQ-VAE. Codes are ~8% of the audio's size (all three levels of the released model: 7.2k int16 tokens per
second against 88.2k int16 stereo samples), so one record holds a whole song and random access reads it
whole: a 4-minute song is ~3.5 MB, about one 24 s audio window. Store only the levels a prior reads
(`levels=`: (2,) for a top prior, (0, 1) for the level-0 upsampler) to read less per example.

Differences from encoding on the fly, both deliberate:

- Boundaries. A song is encoded in chunks of `chunk_seconds` (a multiple of the top hop, so bounded memory
  and one compiled shape), each with `context_seconds` of real neighbouring audio on both sides that is
  encoded and then dropped. The encoder is a non-causal conv stack padded with zeros, so a code depends on
  the audio within its receptive field: with context at least the receptive field, chunked codes equal the
  codes of the whole song encoded at once (except the song's first and last few codes: zero audio beyond the
  song is not quite the encoder's zero padding of its inner layers); codes closer than that to a chunk edge
  see zeros instead of the song. The original encodes each random training window by itself, so the codes
  near *every* window edge (both ends of each of the 8192-token contexts) see zero padding, and the same
  moment of a song gets slightly different codes depending on where the window falls. Pre-encoded windows
  are slices of one fixed code sequence per song instead: what sampling sees when it encodes a primed
  prompt or decodes its own codes.
- Mixing. Songs are mixed to mono with the channel mean; a per-example channel blend (`aug_blend`) of the
  original cannot be applied to fixed codes.

The package, like the audio side: `encode` (one song in chunks), `builder` (the sharded, resumable,
multi-process `encode_dataset` and `CodesSource`; the dataset's layout is described there), `pipeline` (the
Grain pipeline of prior training windows).
"""
from jukejax.data.codes.builder import (CODE_DTYPES, NAME, SONGS_FILE, SONGS_PER_SHARD, VERSION, CodesSource,
                                       codes_features, codes_key, codes_path, encode_dataset, feature_names,
                                       load_codes_source, song_fields)
from jukejax.data.codes.encode import ChunkPlan, EncodeFn, encode_song
from jukejax.data.codes.pipeline import (PRIOR_BATCH_FIELDS, WindowIndex, WindowLoader, build_window_index,
                                        make_prior_pipeline)

__all__ = [
    "CODE_DTYPES", "NAME", "SONGS_FILE", "SONGS_PER_SHARD", "VERSION", "CodesSource", "codes_features", "codes_key",
    "codes_path", "encode_dataset", "feature_names", "load_codes_source", "song_fields",
    "ChunkPlan", "EncodeFn", "encode_song",
    "PRIOR_BATCH_FIELDS", "WindowIndex", "WindowLoader", "build_window_index", "make_prior_pipeline",
]
