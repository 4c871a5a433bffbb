"""Sharded mode's input and output: the shard plan, the worker's shard reader, part sinks and the manifest store.
"""
