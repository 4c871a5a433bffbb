"""Batch jobs: one job setup (``job.Job``, ``job.JobSetup``) and two drivers behind one contract (record mode, sharded mode),
with the task builder, merger, recovery policy, report, progress and plots they share.
"""
