"""Publishing: the agent's Node (labels, taints, annotations) and its NodeResourceTopology.

One room per step, each importing only the ones before it:

* :mod:`.nvidia_labels` — who writes the GFD-compatible ``nvidia.com/*`` keys
  (``--nvidia-labels own|defer|off``) and the conflict rule against a write war (pure);
* :mod:`.desired` — what the agent wants on its Node, computed from the topology and already
  through the validation gate (pure);
* :mod:`.plan` — desired state + the Node as read -> the JSON merge patch, under the ownership
  and hysteresis rules below (pure);
* :mod:`.calls` — what both writers share about API calls: error classification, capped
  backoff, work counters, the result type;
* :mod:`.events` — Events on the agent's Node, each situation recorded once;
* :mod:`.writer` — the Node writer: read, plan, patch, re-plan on 409 Conflict;
* :mod:`.nrt` — the NodeResourceTopology writer (server-side apply);
* :mod:`.cycle` — one discovery + publish, what ``run --once`` does and the run loop repeats.

Rules (docs/publishing.md):

* Ownership. The label keys and taints (key + effect) the agent wrote are recorded in the
  ``<prefix>/owned-labels`` and ``<prefix>/owned-taints`` annotations. Only those, and the
  contract's own annotations, are ever changed or removed. An ``nvidia.com/*`` label already on
  the Node that the agent does not own (GPU Feature Discovery runs too) is left alone; a
  ``<prefix>/*`` key is the agent's namespace and is taken over. An ``nvidia.com/*`` key that
  another field manager took from the agent is that writer's from then on (no write war;
  :mod:`.nvidia_labels`, docs/coexistence.md). An entry naming a key the
  agent would never publish is ignored and reported; a lost annotation is re-derived from
  ``managedFields`` (:class:`.plan.Ownership`).
* Removal with hysteresis. An owned key is removed only after it has been absent from
  ``removal_after`` consecutive *successful* discoveries (misses are kept in the
  ``<prefix>/pending-removal`` annotation, so a restart does not reset them); a new value of a
  topology-defining label likewise waits for ``removal_after`` sightings. A discovery that
  failed — NVML down while GPUs sit on the PCI bus — publishes nothing at all; a partial one
  (``NodeTopology.incomplete``) keeps the Node's topology values and publishes only health.
* Zero writes when nothing changed. The desired state is computed and compared with the Node
  read from the API server; only a difference is written, so a restart writes nothing.
* Optimistic concurrency. A write is a JSON merge patch carrying the ``resourceVersion`` that
  was read; ``spec.taints`` is a list that others change too, so a 409 Conflict means "re-read,
  re-plan, retry", and a taint someone added in between survives.
* API errors (5xx, 429, connection failures) are retried with capped exponential backoff and
  jitter; the publisher reports them and never raises them.

The writers talk through :class:`gputopo.core.kube.KubeClient` (plain JSON dicts); the
agent's install carries no official ``kubernetes`` client.
"""
