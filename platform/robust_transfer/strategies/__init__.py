"""One file per strategy of the paper, each only what differs (its `engine.Objective`); the one training engine
(engine.py) does the rest. Strategies report through a `RunLogger`, are handed their source model, and never
import MLflow or `tracking/` (tests/test_layout.py)."""
