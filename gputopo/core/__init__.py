"""The ground floor: what the agent, the scheduler and the mocks all stand on.

Nothing here imports from ``gputopo.agent``, ``gputopo.scheduler`` or ``gputopo.mocks``; the
import contracts in ``.importlinter`` keep it so.
"""
