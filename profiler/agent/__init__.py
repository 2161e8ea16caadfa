"""The on-board measurement agent (:mod:`ofakit.profiler.agent.ofakit_agent`): one self-contained file that local
runners import and the SSH runner uploads to boards."""
from pathlib import Path

AGENT_FILE = Path(__file__).resolve().parent / "ofakit_agent.py"
