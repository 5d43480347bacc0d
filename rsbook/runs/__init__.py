"""Dataset runs: certification logs over a test set, resumable, sharded under torchrun and merged
(:mod:`.runner`, :mod:`.shards`). Built on :mod:`rsbook.core` and the storage layer."""
