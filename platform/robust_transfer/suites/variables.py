"""Suite variables: `{var}` in a step's parameters → the scale's variable, `{model:step}` → an earlier step's
model by registry alias (suites/plan.py plans the steps with it).

Bounded whatever the file says (issue 28: a 1 KB file of 9 variables each naming the next 10 times reached
2.3 GB, a two-variable cycle was a RecursionError): every variable is expanded once per parameter (memoised),
a cycle of any length is refused naming its variables, and so is a chain deeper than MAX_SUBSTITUTION_DEPTH or
a text longer than MAX_SUBSTITUTED_CHARS — one line, the suite's error (exit 7), within milliseconds.
"""
from __future__ import annotations

import re

from .paper import Required, required_error

_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z0-9_.-]+))?\}")
STEP_KEY_VAR = "{step_key}"


def step_model_name(scale: str, step: str) -> str:
    """The registered model a step's model becomes (and later steps read by alias)."""
    return f"{scale}-{step}"


MAX_SUBSTITUTION_DEPTH = 16       # a variable naming a variable naming ...: deeper than this is a mistake
MAX_SUBSTITUTED_CHARS = 10_000    # one parameter, or one variable, with every {var} replaced


def substitute(value, variables, by_name, scale, upstream, error, alias=lambda step: step.alias) -> str:
    """`value` with `{var}` replaced by the scale's variable (recursively) and `{model:step}` by that step's model
    (`alias(step)`: its registry alias); the steps it names are appended to `upstream`. `error(message)` makes
    the one-line error naming the file, line and parameter."""
    if isinstance(value, bool):
        return "true" if value else "false"
    done: dict[str, tuple[str, list[str]]] = {}   # variable -> (its expansion, the steps its {model:...} name)

    def expand(text: str, stack: tuple[str, ...]) -> tuple[str, list[str]]:
        models: list[str] = []
        size = [len(text)]

        def repl(m):
            var, arg = m.group(1), m.group(2)
            if var == "step_key" and arg is None:
                return STEP_KEY_VAR   # filled in by _plan_step once the key is known
            if var == "model":
                if arg not in by_name:
                    raise error(f"{{model:{arg}}} names no earlier step of this suite")
                if not by_name[arg].registers:
                    raise error(f"{{model:{arg}}}: step {arg!r} does not register a model")
                models.append(arg)
                return f"models:/{step_model_name(scale, arg)}@{alias(by_name[arg])}"
            if arg is not None or var not in variables:
                raise error(f"{{{m.group(0)[1:-1]}}} is not a variable of this scale; defined: {', '.join(sorted(variables))}")
            if isinstance(variables[var], Required):
                raise error(required_error(var, variables[var]))
            if var in stack:
                cycle = " → ".join(f"{{{v}}}" for v in stack[stack.index(var):] + (var,))
                raise error(f"variable {{{var}}} refers to itself: {cycle}; a variable may name other variables, "
                            "never itself")
            if len(stack) >= MAX_SUBSTITUTION_DEPTH:
                raise error(f"variable {{{var}}} is reached through {len(stack)} variables "
                            f"({' → '.join(f'{{{v}}}' for v in stack[:3])} → ...); at most {MAX_SUBSTITUTION_DEPTH} deep")
            if var not in done:
                raw = variables[var]
                done[var] = expand("true" if raw is True else "false" if raw is False else str(raw), stack + (var,))
            models.extend(done[var][1])
            size[0] += len(done[var][0])
            if size[0] > MAX_SUBSTITUTED_CHARS:
                raise error(f"{{{stack[-1] if stack else var}}} expands to more than {MAX_SUBSTITUTED_CHARS} characters "
                            f"(through {{{var}}}); a parameter is a value, not a document")
            return done[var][0]

        return _VAR.sub(repl, text), models

    text, models = expand(str(value), ())
    upstream.extend(models)
    return text
