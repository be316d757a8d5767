"""Deduplication: MinHash signatures and LSH (``minhash``), its settings (``settings``) and the job over many
shards (``run``: ``kamado corpus dedup`` and the corpus stage)."""
