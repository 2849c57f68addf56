"""Text to ids: reading files and folders, the vocabulary, the corpus cache, downloads and batches."""
