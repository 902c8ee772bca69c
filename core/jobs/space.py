"""A search space: ``simclr sweep --sample N --space KEY=DIST``, random settings instead of a grid.

Plain Python (no torch); Optuna is imported only inside the functions that need it, so
``core.jobs`` stays quick to import. A space is a dict ``field name -> Optuna distribution``
(``FloatDistribution``, ``IntDistribution``, ``CategoricalDistribution``), in the order the
``--space`` flags were given, so the same space feeds Optuna's samplers: ``draw`` uses
``RandomSampler``; a later proposer (TPE) rebuilds the space from the sweep's saved plan
with ``from_description(describe(space))``.

The kinds, as written on the command line::

    lr=loguniform:1e-4:1e-2       a float, uniform in log space (LOW > 0)
    temperature=uniform:0.05:0.5  a float, uniform
    epochs=int:10:100             an integer in [LOW, HIGH], both included
    width=logint:8:64             an integer, uniform in log space (LOW >= 1)
    batch_size=choice:128,256     one of the values, typed through the config field

Drawn settings become sweep members exactly as a grid's do (``core.jobs.sweep``): seeds
outermost, each setting validated before anything is made, names from ``member_names``
(floats rounded to 4 significant digits in the name only; the config and ``swept`` keep
the exact value).
"""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any, Iterable, get_type_hints

from core.config import ConfigError, PretrainConfig, base_type, coerce, dash, literal_choices
from core.jobs.sweep import Member, field_name, member_names

if TYPE_CHECKING:  # the annotation only; Optuna itself is imported where it is used
    from optuna.distributions import BaseDistribution as Dist

#: the kinds ``--space KEY=KIND:...`` takes, with an example of each for the error messages
KINDS = {
    "uniform": "temperature=uniform:0.05:0.5",
    "loguniform": "lr=loguniform:1e-4:1e-2",
    "int": "epochs=int:10:100",
    "logint": "width=logint:8:64",
    "choice": "batch_size=choice:128,256,512",
}
#: how many draws ``draw`` makes per wanted setting (plus a floor) before it gives up on
#: finding distinct ones; only a choice/int space close to its size ever needs more than one
REDRAWS_PER_SETTING = 20
REDRAWS_FLOOR = 100


def parse_space(specs: list[str], grid: Iterable[str] = ()) -> dict[str, Dist]:
    """``["lr=loguniform:1e-4:1e-2", "batch_size=choice:32,64"]`` -> ``{"lr": FloatDistribution,
    ...}``. ``grid``: the keys given to ``--grid`` (a key may be in one of them, not both).
    Raises ConfigError, one line naming the spec."""
    grid = set(grid)
    space: dict[str, Dist] = {}
    for spec in specs:
        key, sep, rest = spec.partition("=")
        kind, colon, args = rest.partition(":")
        if not sep or not key.strip() or not colon:
            raise ConfigError(f"--space {spec!r}: write KEY=KIND:..., e.g. --space {KINDS['loguniform']} "
                              f"(kinds: {', '.join(KINDS)})")
        name = field_name(key, "--space")
        where = f"--space {spec!r}"
        if name in space:
            raise ConfigError(f"{where}: {dash(name)} is given twice; give each key one --space")
        if name in grid:
            raise ConfigError(f"{where}: {dash(name)} is also given to --grid; give each key to one of --grid or --space")
        kind = kind.strip()
        if kind == "choice":
            items = [v.strip() for v in args.split(",")]
            if not all(items):
                raise ConfigError(f"{where}: an empty choice; write KEY=choice:V1,V2 without spaces or trailing commas")
            space[name] = _distribution(name, kind, None, None, items, where)
            continue
        if kind not in KINDS:
            close = difflib.get_close_matches(kind, KINDS, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{where}: unknown kind {kind!r}{hint}; use one of {', '.join(KINDS)}")
        bounds = args.split(":")
        if len(bounds) != 2:
            raise ConfigError(f"{where}: {kind} takes two bounds LOW:HIGH, got {len(bounds)}; e.g. {KINDS[kind]}")
        low, high = (_number(b, where) for b in bounds)
        space[name] = _distribution(name, kind, low, high, None, where)
    return space


def _number(text: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{where}: the bound {text.strip()!r} is not a finite number")
    return value


def _distribution(name: str, kind: str, low: float | None, high: float | None, choices: list[Any] | None,
                  where: str) -> Dist:
    """One checked distribution for the field ``name``; every refusal names ``where``."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    tp = get_type_hints(PretrainConfig)[name]
    field_type, _ = base_type(tp)
    if kind == "choice":
        if not choices:
            raise ConfigError(f"{where}: an empty choice; list at least one value, e.g. {KINDS['choice']}")
        typed = []
        for value in choices:
            try:
                v = coerce(name, value, tp)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
            allowed = literal_choices(tp)
            if allowed and v not in allowed:
                raise ConfigError(f"{where}: {dash(name)} must be one of {', '.join(allowed)} (got {v!r})")
            if v in typed:  # 0.1 and 1e-1, yes and true
                raise ConfigError(f"{where}: the choice {value!r} is listed twice (as {typed[typed.index(v)]!r})")
            typed.append(v)
        return CategoricalDistribution(typed)
    if field_type not in (int, float):
        raise ConfigError(f"{where}: {dash(name)} is not a number; give its values with choice:A,B")
    log = kind in ("loguniform", "logint")
    if kind in ("uniform", "loguniform") and field_type is int:
        raise ConfigError(f"{where}: {dash(name)} takes integers; use int:LOW:HIGH or logint:LOW:HIGH")
    if kind in ("int", "logint") and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}: {kind} takes integer bounds, got {low:g}:{high:g}")
    if low >= high:
        raise ConfigError(f"{where}: LOW must be below HIGH (got {low:g} >= {high:g})")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs LOW > 0 (got {low:g}); use uniform for a range from 0")
    if kind == "logint" and low < 1:
        raise ConfigError(f"{where}: logint needs LOW >= 1 (got {low:g}); use int for a range from 0")
    if kind in ("int", "logint"):
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def size(space: dict[str, Dist]) -> int | None:
    """How many distinct settings the space holds; None when it holds a float range."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    total = 1
    for dist in space.values():
        if isinstance(dist, CategoricalDistribution):
            total *= len(dist.choices)
        elif isinstance(dist, IntDistribution):
            total *= (dist.high - dist.low) // dist.step + 1
        else:
            return None
    return total


def draw(space: dict[str, Dist], n: int, seed: int | None, base: dict[str, Any], seeds: list[int] | None,
         sweep_name: str) -> list[Member]:
    """``n`` distinct settings drawn by Optuna's ``RandomSampler(seed=seed)``, times ``seeds``
    (seeds outermost, as ``sweep.expand``), every member validated against ``base`` (the
    values every run shares). Each member's ``swept`` holds its seed and its exact drawn
    values. The same arguments give the same members. Raises ConfigError, nothing made."""
    if n < 1:
        raise ConfigError(f"--sample {n}: draw at least 1 setting")
    if seeds is not None and "seed" in space:
        raise ConfigError("give the seeds once: --seeds 0,1,2 or --space seed=..., not both")
    points = size(space)
    if points is not None and points < n:
        raise ConfigError(f"--sample {n}: the --space holds only {points} distinct setting{'s' * (points != 1)}; "
                          f"ask for at most {points}, or widen the space")
    settings = _distinct_draws(space, n, seed)
    members = []
    for s in [None] if seeds is None else seeds:
        for values in settings:
            combo = ({} if s is None else {"seed": s}) | values
            cfg = _validated(sweep_name, base, combo, values)
            members.append(Member("", len(members), {k: getattr(cfg, k) for k in combo}, cfg))
    varying = [k for k, dist in space.items() if size({k: dist}) != 1]
    varying += ["seed"] if seeds is not None and len(seeds) > 1 else []
    names = member_names(sweep_name, [{k: _for_name(v) for k, v in m.swept.items()} for m in members], varying)
    return [Member(name, m.index, m.swept, m.config) for name, m in zip(names, members)]


def _distinct_draws(space: dict[str, Dist], n: int, seed: int | None) -> list[dict[str, Any]]:
    """``n`` settings from an in-memory study (ask-and-tell); a repeat is drawn again."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    settings: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    tries = REDRAWS_PER_SETTING * n + REDRAWS_FLOOR
    for _ in range(tries):
        if len(settings) == n:
            break
        params = study.ask(space).params
        values = {k: params[k] for k in space}
        key = tuple(values.items())
        if key not in seen:
            seen.add(key)
            settings.append(values)
    if len(settings) < n:
        raise ConfigError(f"--sample {n}: {tries} draws gave only {len(settings)} distinct settings; "
                          f"ask for fewer or widen the --space")
    return settings


def _validated(sweep_name: str, base: dict[str, Any], combo: dict[str, Any], drawn: dict[str, Any]) -> PretrainConfig:
    """The member's config, or a ConfigError naming the drawn setting and what to narrow."""
    try:
        return PretrainConfig.from_dict({**base, **combo}).validate()
    except ConfigError as e:
        error = e
    label = ",".join(f"{k}={v}" for k, v in combo.items())
    if str(_error_of(base)) == str(error):
        raise ConfigError(f"sweep {sweep_name}, the base config: {error}") from None
    culprits = [dash(k) for k, v in drawn.items() if str(_error_of({**base, k: v})) == str(error)]
    culprits = culprits or [dash(k) for k in drawn]  # a combination: no one key alone fails
    raise ConfigError(f"sweep {sweep_name}, drawn setting {label}: {error}; "
                      f"narrow --space {', '.join(culprits)} so that every draw is valid") from None


def _error_of(values: dict[str, Any]) -> ConfigError | None:
    try:
        PretrainConfig.from_dict(values).validate()
    except ConfigError as e:
        return e
    return None


def _for_name(value: Any) -> Any:
    """A float rounded to 4 significant digits (``0.001234``), for a member's name only."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def describe(space: dict[str, Dist]) -> dict[str, dict[str, Any]]:
    """The space as JSON: ``{"lr": {"kind": "float", "low": 0.0001, "high": 0.01, "log": true},
    "batch_size": {"kind": "choice", "choices": [32, 64]}}`` (kinds: float, int, choice)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: dict[str, dict[str, Any]] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[name] = {"kind": "choice", "choices": list(dist.choices)}
        else:
            kind = "int" if isinstance(dist, IntDistribution) else "float"
            out[name] = {"kind": kind, "low": dist.low, "high": dist.high, "log": dist.log}
    return out


def from_description(description: dict[str, Any]) -> dict[str, Dist]:
    """``describe``'s form back to the space, checked as ``parse_space`` checks the flags
    (a sweep plan edited by hand or written by another version: ConfigError naming the key)."""
    if not isinstance(description, dict):
        raise ConfigError(f"the sweep's saved space must be a mapping of key -> distribution, got {description!r}")
    space: dict[str, Dist] = {}
    for key, d in description.items():
        where = f"the sweep's saved space, {key}"
        name = field_name(str(key), "--space")
        kind = d.get("kind") if isinstance(d, dict) else None
        try:
            if kind == "choice":
                space[name] = _distribution(name, "choice", None, None, list(d["choices"]), where)
                continue
            if kind not in ("float", "int"):
                raise ConfigError(f"{where}: kind {kind!r} is not float, int or choice")
            if isinstance(d["low"], bool) or not all(isinstance(d[b], (int, float)) for b in ("low", "high")):
                raise ConfigError(f"{where}: low and high must be numbers, got {d['low']!r}, {d['high']!r}")
            log = bool(d.get("log", False))
            cli_kind = {("float", False): "uniform", ("float", True): "loguniform",
                        ("int", False): "int", ("int", True): "logint"}[kind, log]
            space[name] = _distribution(name, cli_kind, d["low"], d["high"], None, where)
        except (KeyError, TypeError):
            raise ConfigError(f"{where}: {d!r} lacks {'choices' if kind == 'choice' else 'low or high'}") from None
    return space
