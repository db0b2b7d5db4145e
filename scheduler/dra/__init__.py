"""DRA allocation: ResourceClaims on ResourceSlices with kube-scheduler's semantics, the device
set chosen by topology (docs/dra.md).

``model`` decodes the ``resource.k8s.io/v1`` objects, ``cel`` evaluates selectors in
Kubernetes' DRA CEL environment, ``inventory`` says which devices a node has and which are
taken, ``topology`` joins devices to the agent's annotation and ranks device sets, ``allocator``
searches, and ``state`` is the scheduler's view of all of it (attached to the snapshot).
"""
