"""Bad input to the transfer strategies: one clear line, a non-zero exit code of the right kind, and
the MLflow run (when one was created) marked FAILED."""
import pytest

from support.transfer import all_runs, rtl

FAST = ["--progress", "false", "--n-examples", "6", "--eval-steps", "1", "--iterations", "1"]

# (id, argv from the fixtures, exit code, text the message must contain, whether a run exists)
CASES = [
    ("k-larger-than-blocks", lambda s, o: ["retrain-blocks", "--source-model", s.src, "--k", "9"],
     2, "k=9 is larger than the number of blocks of small-cnn (5", True),
    ("k-list-checked-before-training", lambda s, o: ["retrain-blocks", "--source-model", s.src, "--k", "1,6"],
     2, "k=6 is larger", True),
    ("k-malformed", lambda s, o: ["retrain-blocks", "--source-model", s.src, "--k", "0"], 2, "k='0'", False),
    ("negative-lambda_d", lambda s, o: ["lwf", "--source-model", s.src, "--lambda-d", "-0.5"],
     2, "lambda_d=-0.5 is out of range", False),
    ("warm_start-above-1", lambda s, o: ["lwf", "--source-model", s.src, "--warm-start", "1.5"],
     2, "warm_start=1.5 is out of range; allowed: [0.0, 1.0]", False),
    ("warm_start-below-0", lambda s, o: ["lwf", "--source-model", s.src, "--warm-start", "-0.1"],
     2, "warm_start=-0.1", False),
    ("unknown-distance", lambda s, o: ["lwf", "--source-model", s.src, "--distance", "cosine"],
     2, "distance='cosine' is not allowed", False),
    ("offline-teacher-with-augmentation", lambda s, o: ["lwf", "--source-model", s.src, "--augment", "true"],
     2, "teacher=online", False),
    ("no-source", lambda s, o: ["transfer"], 2, "source_model is required", False),
    ("missing-checkpoint-path", lambda s, o: ["transfer", "--source-model", "/nonexistent/model"],
     4, "does not exist", False),   # the source is resolved before the run starts: no run
    ("unknown-registered-model", lambda s, o: ["lwf", "--source-model", "models:/no-such-model@champion"],
     4, "could not be resolved", False),
    ("unknown-run", lambda s, o: ["finetune-adv", "--source-model", "runs:/0123456789abcdef0123456789abcdef/checkpoint"],
     4, "model 'runs:/0123456789abcdef0123456789abcdef/checkpoint'", False),
    ("class-count-mismatch", lambda s, o: ["retrain-blocks", "--source-model", s.src, "--dataset", f"imagefolder:{o}"],
     4, "has 4 classes but the source has 3", True),
    ("input-size-mismatch", lambda s, o: ["transfer", "--source-model", s.src32], 4, "pass upsample=true", True),
    ("input-size-mismatch-lwf", lambda s, o: ["lwf", "--source-model", s.src32], 4, "pass upsample=true", True),
    ("per_class-too-large", lambda s, o: ["transfer", "--source-model", s.src, "--per-class", "500"],
     3, "per_class=500 is more than", True),
    ("unknown-head", lambda s, o: ["transfer", "--source-model", s.src, "--head", "conv"], 2, "head='conv'", False),
    ("unknown-target", lambda s, o: ["transfer", "--source-model", s.src, "--target", "mnist"],
     2, "dataset='mnist' is not allowed", True),
]


@pytest.mark.parametrize("argv,code,needle,has_run", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_a_failed_run(workdir, sources, other_folder, capsys, argv, code, needle,
                                                      has_run):
    assert rtl(*argv(sources, other_folder), *FAST) == code
    # (MLflow's own log lines, e.g. when it creates a fresh sqlite store, are not ours)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if " INFO mlflow" not in line]
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    runs = all_runs()
    if has_run:
        assert [r.info.status for r in runs] == ["FAILED"]
    else:
        assert runs == []
