"""What several test files need, written once (issue 23 item 5). Tests import it as `support.<module>`
(pytest puts tests/ on sys.path); no test imports another test module — tests/test_layout.py holds both rules.

- `synthetic`: data builders — `write_imagefolder` (a learnable PNG ImageFolder), `synthetic` (learnable
  10-class tensors), `as_images` (floats in [0,1] → uint8 images).
- `models`: tiny models (`TinyCNN`), the gradient-masking wrappers (`ScaledLogits`, `NoisyOutput`,
  `SaturatedSoftmax`) and `train_tiny` (SGD, optionally Madry-style PGD) for them.
- `net`: `free_port`, and `wait_http` ("start a server, wait until healthy").
- `transfer`: tiny source checkpoints, strategies run as the command layer runs them, the CLI in-process,
  `mlflow run`, and `all_runs` (every run in a store).
- `claims`: `per_example` (an evaluation's per-example record) for the claim tests.
- `hostile_files`: files that lie about their size (image headers, archives).

The fixtures built from these (`tiny_folder`, `data`, `natural`, `robust`, `sources`, `other_folder`, ...) are
in tests/conftest.py.
"""
