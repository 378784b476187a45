"""Sampling defaults (the original sample.py's settings); every field can be overridden by sample.py's flags.

Sample 2 songs of 20 s (top level, then both upsamplers), 3 minutes long in the timing conditioning:

    python sample.py --checkpoint=models/1b_lyrics --workdir=runs/s1 --artist="Alan Jackson" --genre=Country \
        --lyrics_file=lyrics.txt --sample_length_in_seconds=20 --total_sample_length_in_seconds=180 \
        --n_samples=2 --hop_fraction=0.5,0.5,0.125

Other modes: --mode=primed --audio_file=a.wav,b.wav --prompt_length_in_seconds=12;
--mode=continue --codes_file=runs/s1/level_0/codes.npz --sample_length_in_seconds=40;
--mode=upsample --codes_file=runs/s1/level_2/codes.npz; co-composition: --mode=continue --levels=2
--codes_file=runs/s1/level_2/codes.npz --keep=1 --n_samples=3 --sample_length_in_seconds=4. A killed run goes
on with the same command plus --resume.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.checkpoint = ""                       # bundle: vqvae/, prior_level_{l}/, optional ids/
    c.mode = "ancestral"                    # ancestral | primed | continue | upsample
    c.artist = ""                           # '' = 'unknown' (id 0) or the codes file's; 'a|b' = one per item
    c.genre = ""                            # '' = 'unknown' or the codes file's; 'a|b' = one per item
    c.lyrics = ""                           # lyrics text ('' = none, or the codes file's)
    c.lyrics_file = ""                      # read the lyrics from this file instead
    c.sample_length_in_seconds = 0.0        # how much to generate (rounded down to whole top-level tokens);
                                            # continue --keep: how much to add; upsample: 0 = all top codes
    c.total_sample_length_in_seconds = 0.0  # song length the labels describe (0 = the sample's, or the codes file's)
    c.n_samples = -1                        # -1 = 1 (primed: one per audio file), or the codes file's / --keep's
    c.hop_fraction = (0.5, 0.5, 0.125)     # per level (0, 1, 2): a window advances int(hop_fraction * n_ctx)
    c.temperature = (0.99, 0.99, 0.99)     # per level (or one for all)
    c.top_k = 0                             # 0 = off
    c.top_p = 0.0                           # 0 = off; not with top_k
    c.levels = ()                           # levels to sample, e.g. (2,); () = what the mode samples
    c.max_batch_size = (16, 16, 16)        # samples per compiled batch, per level (the original: 3 for 5b top)
    c.seed = 0
    c.audio_file = ""                       # primed: comma-separated audio files
    c.prompt_length_in_seconds = 0.0        # primed: prompt length; continue: cut the codes to this (0 = no cut)
    c.codes_file = ""                       # continue / upsample: a level_*/codes.npz of an earlier run
    c.keep = ()                             # continue: rows of the codes file to keep (co-composition)
    c.resume = False                        # go on with a killed run in the same workdir
    c.dtype = ""                            # prior compute dtype override, e.g. bfloat16 ('' = the checkpoint's)
    c.mesh = (-1, 1, 1)                     # (data, fsdp, tensor): items split over all devices by default
    c.cache_dtype = ""                      # KV-cache dtype ('' = the compute dtype)
    c.alignment = True                      # lyric alignment for the html pages (priors with lyrics)
    c.progress = True                       # tqdm bars per level (tokens/s)
    return c
