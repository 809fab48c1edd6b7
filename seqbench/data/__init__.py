"""Corpora, vocabularies, batching and the task registry."""
