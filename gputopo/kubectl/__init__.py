"""``kubectl gputopo``: the cluster's GPU machines, their topology and the scheduler's reasons,
read from the live API server.

kubectl runs any ``kubectl-<name>`` executable on PATH as ``kubectl <name>``; the
``kubectl-gputopo`` console script is this package's :mod:`~gputopo.kubectl.cli`. It sits above
both deployables, because it uses both: the agent's renderer draws a Node's topology annotation
(``topo``), the scheduler's model and snapshot count free GPUs (``nodes``) and its simulator
explains a pending pod (``why``). Nothing here re-derives what they compute.

- :mod:`~gputopo.kubectl.live`: the live objects, read through the ground floor's KubeClient;
- :mod:`~gputopo.kubectl.nodes`: the GPU node table;
- :mod:`~gputopo.kubectl.topo`: one Node's annotation, drawn like ``discover -o text``;
- :mod:`~gputopo.kubectl.why`: simulate's explanation for one live pending pod.
"""
