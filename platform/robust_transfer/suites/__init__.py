"""Paper suites (projects/*.yaml): `plan` reads a suite into steps with keys, `run` reuses or runs each step.
The `suite` entry point is commands/suite.py."""
from .plan import Step, Suite, code_version, load_suite, params_key, step_key, step_model_name, with_upstream

__all__ = ["Suite", "Step", "load_suite", "code_version", "step_key", "params_key", "step_model_name", "with_upstream"]
