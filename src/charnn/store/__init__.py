"""Files on disk: the self-contained model folder, resumable checkpoints and the run folder."""
