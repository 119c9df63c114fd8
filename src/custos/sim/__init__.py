"""A synthetic organisation with realistic benign traffic and injected misuse scenarios,
for demos, tests and measuring detection quality (``custos simulate`` / ``custos eval``)."""

from custos.sim.run import (
    EvalReport,
    ScenarioResult,
    SimulationReport,
    evaluate,
    monday_of,
    simulate,
)
from custos.sim.scenarios import SCENARIOS

__all__ = [
    "SCENARIOS",
    "EvalReport",
    "ScenarioResult",
    "SimulationReport",
    "evaluate",
    "monday_of",
    "simulate",
]
