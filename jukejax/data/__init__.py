"""Training data: a TFDS builder over a folder of songs (ArrayRecord windows) and Grain pipelines over it.

    summary = build_dataset(BuildConfig(audio_dir="songs", sr=44100), "data/")
    source = load_source("data/", "train")
    batches = make_pipeline(source, sample_length=393216, batch_size=4, seed=0)

VQ-VAE codes for prior training (`python -m jukejax.data encode ...` does the first step with a checkpoint):

    encode_dataset("data/", "codes/", encode_fn, hop_lengths=(8, 32, 128))   # or on every process of a pod
    codes = load_codes_source("codes/", "train")
    batches = make_prior_pipeline(codes, level=1, n_ctx=8192, cond_length=2048, batch_size=4, seed=0)
"""
from jukejax.data.builder import (BuildConfig, DatasetError, DatasetExistsError, JukejaxMusic, MusicSource,
                                  build_dataset, dataset_path, load_source, load_summary, normalize_name,
                                  read_name_table, scan_windows, write_name_table)
from jukejax.data.codes import (PRIOR_BATCH_FIELDS, ChunkPlan, CodesSource, WindowIndex, WindowLoader,
                                build_window_index, codes_key, codes_path, encode_dataset, encode_song,
                                load_codes_source, make_prior_pipeline)
from jukejax.data.pipeline import (BATCH_FIELDS, ChunkLoader, SongIndex, build_song_index, locate,
                                   make_pipeline, make_pipeline_from_config, stack_examples, window_table)

__all__ = [
    "BATCH_FIELDS", "BuildConfig", "ChunkLoader", "DatasetError", "DatasetExistsError", "JukejaxMusic",
    "MusicSource", "SongIndex",
    "build_dataset", "build_song_index", "dataset_path", "load_source", "load_summary", "locate",
    "make_pipeline", "make_pipeline_from_config", "normalize_name", "read_name_table", "scan_windows",
    "stack_examples", "window_table", "write_name_table",
    # codes
    "PRIOR_BATCH_FIELDS", "ChunkPlan", "CodesSource", "WindowIndex", "WindowLoader",
    "build_window_index", "codes_key", "codes_path", "encode_dataset", "encode_song", "load_codes_source",
    "make_prior_pipeline",
]
