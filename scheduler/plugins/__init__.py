"""Filters and scores, one concern per module, named and worded as kube-scheduler's plugins.

Node-only filters (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity) judge one node at
a time and are cached per pod shape; the others read the snapshot's per-node arrays and answer
for every node at once.
"""
