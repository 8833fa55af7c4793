"""Registry and promotion: policies, the champion alias moved only when a policy says so, decisions recorded
(version tags, model card), refusals (missing/stale evaluation, gradient-masking flags), `models:/name@champion`
usable wherever a model is taken. The slow test runs against a real `mlflow server` on 127.0.0.1."""
from __future__ import annotations

import os
import time

import pytest

from robust_transfer.cli import main
from robust_transfer.errors import ConfigError
from robust_transfer.promotion import Judged, Policy, decide
from support.transfer import all_runs


# ------------------------------------------------------------------------------------------ policies (fast)
def test_policies_parse_into_a_score_and_constraints():
    p = Policy.parse("max pgd20_acc subject to clean_acc >= 0.7")
    assert p.direction == "maximize" and p.score.text == "pgd20_acc"
    assert [c.text for c in p.constraints] == ["clean_acc >= 0.7"]
    assert p.metric_names == ("pgd20_acc", "clean_acc")
    q = Policy.parse("max (clean_acc + pgd20_acc)/2")
    assert q.score({"clean_acc": 0.8, "pgd20_acc": 0.4}) == pytest.approx(0.6) and not q.constraints
    r = Policy.parse("minimize worst_acc subject to clean_acc > 0.5 and pgd20_acc >= 0.2")
    assert r.direction == "minimize" and len(r.constraints) == 2


@pytest.mark.parametrize("bad", ["pgd20_acc", "max", "max pgd20_acc subject to", "max os.system('x')",
                                 "max pgd20_acc subject to clean_acc = 0.7", "best pgd20_acc"])
def test_malformed_policies_are_config_errors(bad):
    with pytest.raises(ConfigError, match="policy="):
        Policy.parse(bad)


DECISIONS = [
    # policy, candidate metrics, champion metrics (None: no champion), decision, reason fragment
    ("max pgd20_acc", {"pgd20_acc": 0.4, "clean_acc": 0.8}, None, "promoted", "no champion"),
    ("max pgd20_acc", {"pgd20_acc": 0.4, "clean_acc": 0.8}, {"pgd20_acc": 0.3, "clean_acc": 0.9}, "promoted", "beats"),
    ("max pgd20_acc", {"pgd20_acc": 0.3, "clean_acc": 0.8}, {"pgd20_acc": 0.3, "clean_acc": 0.9}, "kept", "does not beat"),
    ("max pgd20_acc subject to clean_acc >= 0.7", {"pgd20_acc": 0.5, "clean_acc": 0.6},
     {"pgd20_acc": 0.3, "clean_acc": 0.9}, "rejected", "violates clean_acc >= 0.7"),
    ("max pgd20_acc subject to clean_acc >= 0.7", {"pgd20_acc": 0.2, "clean_acc": 0.8},
     {"pgd20_acc": 0.3, "clean_acc": 0.6}, "promoted", "champion (version 1) violates"),
    ("max (clean_acc + pgd20_acc)/2", {"pgd20_acc": 0.3, "clean_acc": 0.9}, {"pgd20_acc": 0.4}, "promoted",
     "no evaluation of clean_acc"),
    ("min worst_acc", {"worst_acc": 0.1}, {"worst_acc": 0.2}, "promoted", "beats"),
]


@pytest.mark.parametrize("policy,cand,champ,decision,fragment", DECISIONS)
def test_decisions_follow_the_stated_policy(policy, cand, champ, decision, fragment):
    from robust_transfer.promotion import judge

    p = Policy.parse(policy)
    got, reason = decide(p, judge(p, "2", cand), judge(p, "1", champ) if champ is not None else None)
    assert got == decision and fragment in reason, reason


def test_min_delta_and_same_version():
    p = Policy.parse("max pgd20_acc")
    c, h = Judged("2", {}, score=0.41), Judged("1", {}, score=0.40)
    assert decide(p, c, h, min_delta=0.02)[0] == "kept"
    assert decide(p, c, h, min_delta=0.0)[0] == "promoted"
    assert decide(p, c, Judged("2", {}, score=0.41))[0] == "kept"




# ------------------------------------------------------------------------------------------ a real server
@pytest.fixture
def served(workdir, mlflow_server, monkeypatch):
    import mlflow
    import torch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on 2 shared cores
    yield workdir
    torch.set_num_threads(before)


def _train(folder, name, seed) -> None:
    assert main(["train", "--dataset", f"imagefolder:{folder}", "--iterations", "3", "--batch-size", "16",
                 "--n-examples", "12", "--augment", "false", "--progress", "false", "--seed", str(seed),
                 "--register-as", name]) == 0


def _tags(client, name, version) -> dict:
    return client.get_model_version(name, str(version)).tags


def _set(client, name, version, **tags) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k.replace("__", "."), str(v))


@pytest.mark.slow
def test_promotion_moves_the_champion_only_when_the_policy_says_so(served, tiny_folder, capsys):
    import mlflow

    from robust_transfer import load_model

    client = mlflow.MlflowClient()
    name = "reg-test"
    _train(tiny_folder, name, seed=0)
    assert client.get_registered_model(name).aliases == {"challenger": "1"}
    assert {"metric.clean_acc", "metric.pgd20_acc"} <= set(_tags(client, name, 1))

    # 1. no champion yet: the challenger becomes champion; the decision and a model card are recorded
    assert main(["promote", "--name", name, "--policy", "max pgd20_acc subject to clean_acc >= 0.0"]) == 0
    assert "version 1 PROMOTED" in capsys.readouterr().out
    rm = client.get_registered_model(name)
    assert rm.aliases["champion"] == "1"
    t = _tags(client, name, 1)
    assert t["promotion.decision"] == "promoted" and t["promotion.policy"].startswith("max pgd20_acc")
    card = client.get_model_version(name, "1").description
    assert card.startswith(f"# {name} version 1: PROMOTED") and "| pgd20_acc |" in card
    promote_run = client.get_run(t["promotion.run_id"])
    assert promote_run.data.tags["rtl.strategy"] == "promote" and promote_run.data.tags["rtl.decision"] == "promoted"
    arts = {a.path for a in client.list_artifacts(promote_run.info.run_id, "promotion")}
    assert arts == {"promotion/model_card.md", "promotion/decision.json"}

    # 2. models:/name@champion works wherever a model is taken
    model = load_model(f"models:/{name}@champion")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert main(["evaluate", "--model", f"models:/{name}@champion", "--n-examples", "12", "--progress", "false",
                 "--attacks", "pgd2"]) == 0
    capsys.readouterr()

    # 3. a second version, with stated evaluations: the policy decides
    _train(tiny_folder, name, seed=1)
    assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}
    _set(client, name, 1, metric__clean_acc=0.80, metric__pgd20_acc=0.40)
    policy = "max pgd20_acc subject to clean_acc >= 0.7"
    cases = [({"metric__clean_acc": 0.85, "metric__pgd20_acc": 0.30}, "kept", "1"),
             ({"metric__clean_acc": 0.60, "metric__pgd20_acc": 0.50}, "rejected", "1"),
             ({"metric__clean_acc": 0.90, "metric__pgd20_acc": 0.50}, "promoted", "2")]
    for metrics, decision, champion in cases:
        _set(client, name, 2, **metrics)
        assert main(["promote", "--name", name, "--policy", policy]) == 0
        assert decision.upper() in capsys.readouterr().out
        assert _tags(client, name, 2)["promotion.decision"] == decision
        assert client.get_registered_model(name).aliases["champion"] == champion
    rm = client.get_registered_model(name)
    assert rm.tags["rtl.previous_champion"] == "1" and rm.tags["rtl.champion_policy"] == policy

    # 4. refusals: exit 6, one line, the champion untouched
    src = client.get_model_version(name, "1").source
    v3 = mlflow.register_model(src, name).version                      # registered without any evaluation
    capsys.readouterr()
    refusals = [({}, "evaluation is missing pgd20_acc"),
                ({"metric__clean_acc": 0.95, "metric__pgd20_acc": 0.9, "eval__timestamp": 1000}, "older than its weights"),
                ({"eval__timestamp": int(time.time() * 1000), "rtl__masking_flags": "fgsm>pgd"}, "gradient-masking flags")]
    for tags, fragment in refusals:
        _set(client, name, v3, **tags)
        assert main(["promote", "--name", name, "--version", str(v3), "--policy", policy]) == 6
        # this policy chooses by test metrics on purpose (versions tagged by `evaluate`): one warning line, then the error
        warning, err = capsys.readouterr().err.strip().split("\n")
        assert warning.startswith("warning: policy") and "test-set metric" in warning, warning
        assert err.startswith("error: refusing") and fragment in err, err
        assert client.get_registered_model(name).aliases["champion"] == "2"
        assert "promotion.decision" not in _tags(client, name, v3)
    assert main(["promote", "--name", name, "--version", str(v3), "--policy", policy, "--allow-flagged", "true"]) == 0
    assert client.get_registered_model(name).aliases["champion"] == str(v3)
    capsys.readouterr()

    # 5. dry run decides but changes nothing; unknown versions/aliases are one-line errors
    _set(client, name, 2, metric__pgd20_acc=0.99)
    assert main(["promote", "--name", name, "--version", "2", "--policy", policy, "--dry-run", "true"]) == 0
    assert "(dry run)" in capsys.readouterr().out
    assert client.get_registered_model(name).aliases["champion"] == str(v3)
    assert main(["promote", "--name", name, "--version", "99"]) == 6
    assert "has no version 99" in capsys.readouterr().err
    assert main(["promote", "--name", name, "--alias", "staging"]) == 6
    assert "no alias 'staging'" in capsys.readouterr().err


@pytest.mark.slow
def test_promoting_a_missing_name_is_one_line_exit_6_and_creates_nothing(served, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    before = {m.name for m in client.search_registered_models()}
    assert main(["promote", "--name", "no-such-model"]) == 6
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: registered model 'no-such-model' does not exist") and "\n" not in err
    assert {m.name for m in client.search_registered_models()} == before
    assert main(["promote", "--name", "x", "--policy", "best pgd20_acc"]) == 2
    assert "policy=" in capsys.readouterr().err


@pytest.mark.slow
def test_promote_the_best_trial_of_a_study(served, tiny_folder, capsys):
    import mlflow

    space = served / "s.yaml"
    space.write_text(f"""entry_point: train
fixed: {{dataset: "imagefolder:{tiny_folder}", iterations: 3, batch_size: 16, n_examples: 12, augment: false}}
params:
  lr: {{type: float, low: 0.01, high: 0.2, log: true}}
objectives: [{{metric: clean_acc, direction: maximize}}, {{metric: pgd20_acc, direction: maximize}}]
""")
    storage = f"sqlite:///{served / 'optuna.db'}"
    assert main(["search", "--space", str(space), "--storage", storage, "--trials", "2"]) == 0
    policy = "max (clean_acc + pgd20_acc) / 2"
    assert main(["promote", "--name", "reg-study", "--study", "s", "--storage", storage, "--policy", policy]) == 0
    out = capsys.readouterr().out
    assert "version 1 PROMOTED" in out, out
    client = mlflow.MlflowClient()
    mv = client.get_model_version("reg-study", "1")
    assert mv.tags["rtl.study"] == "s" and mv.tags["promotion.decision"] == "promoted"
    assert client.get_registered_model("reg-study").aliases == {"champion": "1"}
    # promoting the same study again reuses the registered version: nothing is duplicated
    assert main(["promote", "--name", "reg-study", "--study", "s", "--storage", storage, "--policy", policy]) == 0
    assert "already is the champion" in capsys.readouterr().out
    assert len(client.search_model_versions("name='reg-study'")) == 1
    assert main(["promote", "--name", "reg-study", "--study", "nope", "--storage", storage]) == 5
    assert "study 'nope' does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ non-finite scores (issue 28)
NON_FINITE = [
    ("max (1e308*1e308) - (1e308*1e308) + val_clean_acc", {"val_clean_acc": "0.5"}, "nan"),
    ("max val_clean_acc * 1e308 * 10", {"val_clean_acc": "0.5"}, "inf"),
    ("min val_clean_acc - 1e308 * 1e308", {"val_clean_acc": "0.5"}, "-inf"),
    ("max val_clean_acc", {"val_clean_acc": "nan"}, "nan"),
    ("max val_clean_acc + val_pgd10_acc", {"val_clean_acc": "0.5", "val_pgd10_acc": "inf"}, "inf"),
    ("max val_pgd10_acc subject to val_clean_acc * 1e308 * 10 >= 0.5", {"val_clean_acc": "0.5", "val_pgd10_acc": "0.2"},
     "inf"),
]


@pytest.mark.parametrize("policy,metrics,value", NON_FINITE, ids=[p for p, _, _ in NON_FINITE])
def test_a_non_finite_score_never_promotes(workdir, capfd, policy, metrics, value):
    """Through `rtl promote` on a real (sqlite) registry: exit 6, one line naming the policy and the value, the
    champion alias untouched, the promote run FAILED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.create_run(client.create_experiment("sources"))
    (workdir / "weights.txt").write_text("a stand-in for a model")
    client.log_artifact(run.info.run_id, str(workdir / "weights.txt"), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("nf")
    mv = client.create_model_version("nf", f"{run.info.artifact_uri}/model", run.info.run_id)
    for k, v in {**{f"metric.{n}": x for n, x in metrics.items()}, "eval.timestamp": int(time.time() * 1000)}.items():
        client.set_model_version_tag("nf", mv.version, k, str(v))
    capfd.readouterr()
    rc = main(["promote", "--name", "nf", "--version", str(mv.version), "--policy", policy])
    err = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
    assert rc == 6 and len(err) == 1 and err[0].startswith("error: policy ") and value in err[0], (rc, err)
    assert "not a finite number" in err[0] and policy.split()[1][:8] in err[0]
    assert "champion" not in (client.get_registered_model("nf").aliases or {})
    promote_runs = [r for r in all_runs(client)
                    if r.data.tags.get("rtl.strategy") == "promote"]
    assert [r.info.status for r in promote_runs] == ["FAILED"]
