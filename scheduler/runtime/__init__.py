"""The scheduler's long-running process: list+watch into the cluster cache, the queue, the
scheduling loop over the core framework, binding, events, metrics and leader election
(docs/architecture.md, "A pod through the scheduler").

A regular package (not a namespace one), so that the import-layering contract and the
packaging checks, which read the import graph, see its modules.
"""
